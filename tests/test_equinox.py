"""jaxpool.equinox: each module equals its function (values and gradients, batched channels_last under jit;
one unbatched channels_first example under vmap, Equinox's convention), learned array fields (initialisers,
``eqx.tree_serialise_leaves`` round trip), eqx.nn.Dropout's ``key`` / ``inference`` rules, and call keywords."""

import inspect

import equinox as eqx
import jax
import numpy as np
import pytest

import jaxpool.equinox as E
from jaxpool.avg import avg_pool
from jaxpool.max import max_pool
from tests.module_cases import (
    CASES,
    CHANNELS,
    KEY,
    RANDOM_CASES,
    assert_trees_close,
    check_against_function,
    check_attributes,
    check_call_keywords,
    check_module_set,
    layout_input,
    perturbed,
)

CHANNELS_FIRST = {"data_format": "channels_first"}  # Equinox's default layout: (C, *spatial)


def _model(case, data_format=None, **kwargs):
    kw = case.module_kwargs(data_format or "channels_first", nnx=True)  # nnx=True: num_features where per_channel
    if data_format is None:
        del kw["data_format"]  # the module's own default
    return getattr(E, case.module)(**kw, key=jax.random.key(0), **kwargs)


def _perturbed(model):
    """The model with noise on its learned arrays (flags and numbers left as they are)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    return eqx.combine(perturbed(params), static)


def _learned(case):
    return lambda model: {name: getattr(model, name) for name in case.learned}


def test_module_set():
    check_module_set(E, eqx.Module)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_attributes_are_the_function_keywords(case):
    cls = getattr(E, case.module)
    parameters = dict(inspect.signature(cls).parameters)
    assert parameters.pop("key").default is None and ("num_features" in parameters) == ("per_channel" in parameters)
    check_attributes(case, cls, {name: p.default for name, p in parameters.items()}, None, CHANNELS_FIRST)
    assert ("inference" in parameters) == case.random
    model = _model(case)
    for name in parameters:
        if name not in case.learned:
            assert getattr(model, name) == case.module_kwargs("channels_first", nnx=True).get(name, parameters[name].default)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_module_equals_function(case):
    """Batched channels_last under jit: values and grads w.r.t. the input and the learned fields."""

    def build(inputs):
        params, static = eqx.partition(_model(case, "channels_last"), eqx.is_inexact_array)
        mode = dict(key=KEY) if case.random else {}
        return params, lambda p, x: eqx.combine(p, static)(x, *inputs[1:], **mode), _learned(case)

    check_against_function(case, "channels_last", build)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_unbatched_examples_under_vmap(case):
    """Equinox's convention: the default module takes one (C, *spatial) example; jax.vmap maps it over a batch,
    and each example equals the function on that example (the same key for each, as the module is given)."""
    inputs = case.inputs(layout_input("channels_first"), "channels_first")
    model = _perturbed(_model(case))
    random = dict(key=KEY) if case.random else {}
    assert model.data_format == "channels_first"

    @eqx.filter_jit
    def run(model, inputs):
        one = lambda *example: model(*example, **random)  # noqa: E731
        want = lambda *example: case.expected(example, "channels_first", _learned(case)(model), **random)  # noqa: E731
        return jax.vmap(one)(*inputs), jax.vmap(want)(*inputs)

    got, want = run(model, inputs)
    assert_trees_close(got, want, rtol=1e-5, atol=1e-6)
    assert jax.tree.leaves(got)[0].shape[0] == inputs[0].shape[0]


# ----------------------------------------------------------------------------------------------
# Learned parameters: array fields created from key=.


def test_learned_fields_and_their_initialisers():
    gated = E.GatedPool((3, 3), per_channel=True, num_features=CHANNELS, key=KEY)
    assert gated.gate.shape == (3, 3, CHANNELS) and not gated.gate.any()
    tree = E.TreePool((2, 2), depth=3, key=KEY)
    assert tree.leaves.shape == (4, 2, 2) and tree.gates.shape == (3, 2, 2) and not tree.gates.any()
    np.testing.assert_allclose(tree.leaves.mean(), 1 / 4, rtol=0.2)  # near the mean filter, all leaves distinct
    assert np.unique(np.asarray(tree.leaves)).size == tree.leaves.size
    assert not np.array_equal(tree.leaves, E.TreePool((2, 2), depth=3, key=jax.random.key(1)).leaves)
    gem = E.GeMPool(p=2.5, learn_p=True, key=KEY)
    assert isinstance(gem.p, jax.Array) and gem.p.shape == () and gem.p == 2.5
    assert E.GeMPool(p=2.5).p == 2.5 and not jax.tree.leaves(eqx.filter(E.GeMPool(p=2.5), eqx.is_array))  # no key needed
    x = layout_input("channels_first")[0]
    grads = eqx.filter_grad(lambda m: m(x).sum())(gem)
    assert np.isfinite(grads.p) and grads.p != 0
    with pytest.raises(TypeError, match="pass key=jax.random.key"):
        E.TreePool((2, 2))
    with pytest.raises(ValueError, match="num_features"):
        E.GatedPool((2, 2), per_channel=True, key=KEY)
    with pytest.raises(ValueError, match="depth"):
        E.TreePool((2, 2), depth=1, key=KEY)


def test_gated_init_is_an_even_mix():
    x = layout_input("channels_first")[0]
    y = E.GatedPool((2, 2), key=KEY)(x)
    want = 0.5 * (max_pool(x, (2, 2), data_format="channels_first") + avg_pool(x, (2, 2), data_format="channels_first"))
    np.testing.assert_allclose(y, want, rtol=1e-6)


def _net(seed):
    keys = jax.random.split(jax.random.key(seed), 3)
    return eqx.nn.Sequential(
        [
            E.GatedPool((2, 2), strides=1, per_channel=True, num_features=CHANNELS, key=keys[0]),
            E.TreePool((2, 2), depth=3, key=keys[1]),
            E.StochasticPool((2, 2), inference=True),
            E.GeMPool(learn_p=True, key=keys[2]),
        ]
    )


def test_serialise_leaves_round_trip(tmp_path):
    x = layout_input("channels_first")[0]
    model = _perturbed(_net(0))
    eqx.tree_serialise_leaves(tmp_path / "model.eqx", model)
    fresh = _net(5)
    assert not np.array_equal(fresh.layers[1].leaves, model.layers[1].leaves)
    restored = eqx.tree_deserialise_leaves(tmp_path / "model.eqx", fresh)
    assert_trees_close(eqx.filter(restored, eqx.is_array), eqx.filter(model, eqx.is_array))
    call = eqx.filter_jit(lambda m, x: m(x, key=KEY))  # Sequential hands the key to every layer
    assert_trees_close(call(restored, x), call(model, x))
    assert call(model, x).shape == (CHANNELS,)


# ----------------------------------------------------------------------------------------------
# Randomness: eqx.nn.Dropout's conventions.


@pytest.mark.parametrize("case", RANDOM_CASES, ids=str)
def test_dropout_key_and_inference_conventions(case):
    x = layout_input("channels_first")[0]
    model = _model(case)
    run = eqx.filter_jit(lambda m, x, **kw: m(x, **kw))
    expected = eqx.filter_jit(lambda x, **kw: case.expected((x,), "channels_first", **kw))
    sample = run(model, x, key=KEY)
    assert_trees_close(sample, expected(x, key=KEY))
    assert_trees_close(run(model, x, key=KEY), sample)
    first = lambda out: jax.tree.leaves(out)[0]  # noqa: E731
    assert not np.array_equal(first(run(model, x, key=jax.random.key(9))), first(sample))
    expectation = expected(x, deterministic=True)
    assert_trees_close(run(model, x, inference=True), expectation)  # no key needed
    frozen = eqx.nn.inference_mode(eqx.nn.Sequential([E.MaxPool((1, 1)), model]))
    assert frozen.layers[1].inference is True
    assert_trees_close(run(frozen, x), expectation)
    assert_trees_close(run(frozen, x, key=KEY), expectation)  # Sequential passes the key; inference ignores it
    assert_trees_close(run(frozen.layers[1], x, key=KEY, inference=False), sample)  # the call wins
    with pytest.raises(ValueError, match="pass key=jax.random.key"):
        model(x)


def test_fractional_samples_need_no_key():
    x = layout_input("channels_first")[0]
    samples = jax.random.uniform(KEY, (CHANNELS, 2))
    got = E.FractionalMaxPool(output_size=(5, 5), samples=samples)(x)
    want = E.FractionalMaxPool.op.fn(x, output_size=(5, 5), samples=samples, data_format="channels_first")
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# Call-time arguments.


def test_call_keywords():
    def run(name, attributes, *inputs, **kw):
        return getattr(E, name)(**attributes, data_format="channels_last")(*inputs, **kw)

    check_call_keywords(run)


def test_static_fields_are_hashable():
    """Lists become tuples, so eqx.filter_jit can hash the configuration (as eqx.nn.MaxPool2d's kernel_size)."""
    model = E.AvgPool([2, 2], strides=[2, 1], padding=[[0, 1], [1, 0]])
    assert model.window_shape == (2, 2) and model.padding == ((0, 1), (1, 0))
    x = layout_input("channels_first")[0]
    want = avg_pool(x, (2, 2), (2, 1), ((0, 1), (1, 0)), data_format="channels_first")
    np.testing.assert_allclose(eqx.filter_jit(lambda m, x: m(x))(model, x), want, rtol=1e-6)
