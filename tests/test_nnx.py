"""jaxpool.nnx: each module equals its function (values and gradients, both layouts, under jit), learned
``nnx.Param`` (initialisers, split/merge and msgpack round trips), nnx.Dropout's ``rngs`` and
``deterministic`` rules (eval/train/view), and SpatialPyramidPool's fixed length across input sizes."""

import functools
import inspect

import jax
import numpy as np
import pytest
from flax import nnx, serialization

import jaxpool.nnx as N
from jaxpool.adaptive import spatial_pyramid_pool
from tests.module_cases import (
    CASES,
    CHANNELS,
    FORMATS,
    KEY,
    RANDOM_CASES,
    assert_trees_close,
    check_against_function,
    check_attributes,
    check_call_keywords,
    check_module_set,
    fast_jit,
    layout_input,
    perturbed,
)


@functools.partial(fast_jit, static_argnums=0)
def _run(graphdef, state, x):
    model, kw = nnx.merge(graphdef, state)
    return model(x, **kw), nnx.state((model, kw))


def call(model, x, **kw):
    """``model(x, **kw)`` jitted like ``nnx.jit`` (rng streams advance), compiled without LLVM optimisation."""
    graphdef, state = nnx.split((model, kw))
    out, state = _run(graphdef, state, x)
    nnx.update((model, kw), state)
    return out


def _model(case, data_format="channels_last", **kwargs):
    return getattr(N, case.module)(**case.module_kwargs(data_format, nnx=True), **kwargs)


def test_module_set():
    check_module_set(N, nnx.Module)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_attributes_are_the_function_keywords(case):
    cls = getattr(N, case.module)
    parameters = inspect.signature(cls).parameters
    assert parameters["rngs"].default is None and ("num_features" in parameters) == ("per_channel" in parameters)
    check_attributes(case, cls, {name: p.default for name, p in parameters.items()}, False)
    model = _model(case, rngs=nnx.Rngs(0))
    for name in parameters:
        if name not in ("rngs", *case.learned):
            assert getattr(model, name) == case.module_kwargs("channels_last", nnx=True).get(name, parameters[name].default)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_module_equals_function(case, data_format):
    """Construction, then jitted call and grads w.r.t. the input and the learned params, against the function."""

    def build(inputs):
        graphdef, params, other = nnx.split(_model(case, data_format, rngs=nnx.Rngs(0)), nnx.Param, ...)
        mode = dict(rngs=KEY) if case.random else {}
        return params, lambda p, x: nnx.merge(graphdef, p, other)(x, *inputs[1:], **mode), nnx.to_pure_dict

    check_against_function(case, data_format, build)


# ----------------------------------------------------------------------------------------------
# Learned parameters.


def test_learned_parameter_initialisers():
    gated = N.GatedPool((3, 3), per_channel=True, num_features=CHANNELS, rngs=nnx.Rngs(0))
    assert gated.gate.shape == (3, 3, CHANNELS) and not gated.gate[...].any()
    tree = N.TreePool((2, 2), depth=3, rngs=nnx.Rngs(0))
    leaves = tree.leaves[...]
    assert leaves.shape == (4, 2, 2) and tree.gates.shape == (3, 2, 2) and not tree.gates[...].any()
    np.testing.assert_allclose(leaves.mean(), 1 / 4, rtol=0.2)  # near the mean filter, all leaves distinct
    assert np.abs(leaves - 1 / 4).max() < 0.25 and np.unique(np.asarray(leaves)).size == leaves.size
    assert not np.array_equal(leaves, N.TreePool((2, 2), depth=3, rngs=nnx.Rngs(1)).leaves[...])
    gem = N.GeMPool(p=2.5, learn_p=True, rngs=nnx.Rngs(0))
    assert isinstance(gem.p, nnx.Param) and gem.p[...] == 2.5
    assert N.GeMPool(p=2.5).p == 2.5 and not nnx.state(N.GeMPool(p=2.5), nnx.Param)  # a plain number, no rngs needed
    with pytest.raises(TypeError, match="rngs=nnx.Rngs"):
        N.TreePool((2, 2))
    with pytest.raises(ValueError, match="num_features"):
        N.GatedPool((2, 2), per_channel=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="depth"):
        N.TreePool((2, 2), depth=1, rngs=nnx.Rngs(0))


class _Learned(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.Sequential(
            N.GatedPool((2, 2), strides=1, per_channel=True, num_features=CHANNELS, rngs=rngs),
            N.TreePool((2, 2), depth=3, rngs=rngs),
            N.GeMPool(learn_p=True, rngs=rngs),
        )

    def __call__(self, x):
        return self.layers(x)


def test_serialisation_round_trip():
    x = layout_input("channels_last")
    model = _Learned(nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    nnx.update(model, perturbed(state))
    want = call(model, x)
    # split / merge
    graphdef, state = nnx.split(model)
    assert_trees_close(call(nnx.merge(graphdef, state), x), want)
    # msgpack and flax.serialization bytes of the pure-dict state, into a model built from another seed
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    for restored in (
        serialization.msgpack_restore(serialization.msgpack_serialize(pure)),
        serialization.from_bytes(pure, serialization.to_bytes(pure)),
    ):
        fresh = _Learned(nnx.Rngs(5))
        params = nnx.state(fresh, nnx.Param)
        assert not np.array_equal(params["layers"]["layers"][1]["leaves"][...], pure["layers"]["layers"][1]["leaves"])
        nnx.replace_by_pure_dict(params, restored)
        nnx.update(fresh, params)
        assert_trees_close(nnx.to_pure_dict(nnx.state(fresh, nnx.Param)), pure)
        assert_trees_close(call(fresh, x), want)


# ----------------------------------------------------------------------------------------------
# Randomness: flax.nnx.Dropout's conventions.


@pytest.mark.parametrize("case", RANDOM_CASES, ids=str)
def test_dropout_rng_conventions(case):
    x = layout_input("channels_last")
    first = lambda out: jax.tree.leaves(out)[0]  # noqa: E731
    sample = call(_model(case, rngs=nnx.Rngs(dropout=0)), x)
    assert_trees_close(call(_model(case, rngs=nnx.Rngs(dropout=0)), x), sample)  # same seed, same sample
    assert not np.array_equal(first(call(_model(case, rngs=nnx.Rngs(dropout=1)), x)), first(sample))
    model = _model(case, rngs=nnx.Rngs(dropout=0))
    call(model, x)
    assert not np.array_equal(first(call(model, x)), first(sample))  # the stream advances
    expected = fast_jit(lambda x, **kw: case.expected((x,), "channels_last", **kw), static_argnames="deterministic")
    at_call = expected(x, key=nnx.Rngs(dropout=0).dropout())  # a call-time Rngs is drawn from, not forked
    assert_trees_close(call(_model(case), x, rngs=nnx.Rngs(dropout=0)), at_call)
    assert_trees_close(call(_model(case, rngs=nnx.Rngs(dropout=5)), x, rngs=nnx.Rngs(dropout=0)), at_call)  # and wins
    noise = _model(case, rng_collection="noise", rngs=nnx.Rngs(noise=0))
    assert_trees_close(call(noise, x), sample)

    # deterministic: attribute (eval/train/view) or call argument, which wins; then no rngs needed
    expectation = expected(x, deterministic=True)
    model = nnx.Sequential(N.MaxPool((1, 1)), _model(case))
    model.eval()
    assert model.layers[1].deterministic is True
    assert_trees_close(call(model, x), expectation)
    model.train()
    assert model.layers[1].deterministic is False
    assert_trees_close(call(nnx.view(model, deterministic=True), x), expectation)
    assert model.layers[1].deterministic is False
    assert_trees_close(call(_model(case), x, deterministic=True), expectation)
    trained = _model(case, deterministic=True)
    assert_trees_close(call(trained, x, deterministic=False, rngs=nnx.Rngs(dropout=0)), at_call)

    with pytest.raises(ValueError, match="no `rngs`"):
        _model(case)(x)
    with pytest.raises(KeyError, match="noise"):
        _model(case, rng_collection="noise", rngs=nnx.Rngs(dropout=0))
    with pytest.raises(ValueError, match="No `deterministic`"):
        _model(case, deterministic=None)(x)


# ----------------------------------------------------------------------------------------------
# Call-time arguments.


def test_call_keywords():
    check_call_keywords(lambda name, attributes, *inputs, **kw: getattr(N, name)(**attributes)(*inputs, **kw))


def test_spatial_pyramid_pool_any_input_size_under_jit():
    """One head for every input size; jit compiles once per input shape."""
    traces = []

    class Head(nnx.Module):
        def __init__(self, rngs):
            self.gated, self.spp = N.GatedPool((2, 2), strides=1, rngs=rngs), N.SpatialPyramidPool()
            self.linear = nnx.Linear(CHANNELS * 21, 5, rngs=rngs)

        def __call__(self, x):
            traces.append(x.shape)
            return self.linear(self.spp(self.gated(x))), self.spp(x), spatial_pyramid_pool(x)

    head = Head(nnx.Rngs(0))
    for shape in ((2, 9, 9, 3), (2, 13, 11, 3), (2, 13, 11, 3)):
        y, features, want = call(head, layout_input("channels_last", shape=shape))
        assert y.shape == (2, 5) and features.shape == (2, CHANNELS * 21)
        np.testing.assert_allclose(features, want, rtol=1e-6)
    assert traces == [(2, 9, 9, 3), (2, 13, 11, 3)]
