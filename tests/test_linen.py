"""jaxpool.linen: each module equals its function (values and gradients, both layouts, under jit), learned
parameters (initialisers, serialisation), Dropout's rng and ``deterministic`` rules, nn.tabulate, and
SpatialPyramidPool's fixed length across input sizes."""

import dataclasses
import inspect

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import jaxpool.linen as L
from jaxpool.adaptive import spatial_pyramid_pool
from jaxpool.avg import avg_pool
from jaxpool.fractional import fractional_max_pool
from jaxpool.max import max_pool
from tests.module_cases import (
    CASES,
    FORMATS,
    KEY,
    RANDOM_CASES,
    assert_trees_close,
    bucket,
    check_against_function,
    check_attributes,
    check_call_keywords,
    check_module_set,
    cotangent_loss,
    fast_jit,
    layout_input,
    perturbed,
)


def _model(case, data_format="channels_last"):
    return getattr(L, case.module)(**case.module_kwargs(data_format))


def test_module_set():
    check_module_set(L, nn.Module)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_attributes_are_the_function_keywords(case):
    cls = getattr(L, case.module)
    fields = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in ("parent", "name")}
    check_attributes(case, cls, {k: inspect.Parameter.empty if v is dataclasses.MISSING else v for k, v in fields.items()}, None)


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_module_equals_function(case, data_format):
    """init, then jitted apply and grads w.r.t. the input and the learned params, against the function."""

    def build(inputs):
        model, mode = _model(case, data_format), (dict(deterministic=False, rng=KEY) if case.random else {})
        params = model.init(KEY, *inputs, **mode).get("params", {})
        return params, lambda p, x: model.apply({"params": p}, x, *inputs[1:], **mode), lambda p: p

    check_against_function(case, data_format, build)


# ----------------------------------------------------------------------------------------------
# Learned parameters.


def _init(model, *inputs):
    return fast_jit(model.init)(KEY, *inputs).get("params", {})


def test_gated_init_is_an_even_mix():
    x = layout_input("channels_last")
    for per_channel, shape in ((False, (3, 3)), (True, (3, 3, 3))):
        gate = _init(L.GatedPool((3, 3), strides=1, per_channel=per_channel), x)["gate"]
        assert gate.shape == shape and not gate.any()
    y, want = fast_jit(
        lambda x: (
            L.GatedPool((2, 2)).apply({"params": {"gate": jnp.zeros((2, 2))}}, x),
            max_pool(x, (2, 2)) + avg_pool(x, (2, 2)),
        )
    )(x)
    np.testing.assert_allclose(y, 0.5 * want, rtol=1e-6)


def test_tree_init_breaks_the_leaf_symmetry():
    """Leaves start near the 1/K mean filter but differ: identical leaves would be a saddle point."""
    x = layout_input("channels_last")
    model = L.TreePool((2, 2), depth=3)
    params = _init(model, x)
    leaves = params["leaves"]
    assert leaves.shape == (4, 2, 2) and params["gates"].shape == (3, 2, 2) and not params["gates"].any()
    np.testing.assert_allclose(leaves.mean(), 1 / 4, rtol=0.2)
    assert np.abs(leaves - 1 / 4).max() < 0.25 and np.unique(np.asarray(leaves)).size == leaves.size
    grads = fast_jit(jax.grad(lambda p: cotangent_loss(model.apply({"params": p}, x))))
    # From identical leaves the gates see no difference to learn from (zero gradient) and every leaf
    # receives the same gradient, so they stay identical; the default initialiser's noise avoids that.
    symmetric = grads(dict(params, leaves=jnp.full_like(leaves, 1 / 4)))
    assert not symmetric["gates"].any() and all(np.allclose(g, symmetric["leaves"][0]) for g in symmetric["leaves"])
    assert np.abs(grads(params)["gates"]).min() > 0
    custom = _init(L.TreePool((2, 2), leaf_init=jax.nn.initializers.ones), x)["leaves"]
    np.testing.assert_array_equal(custom, np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="depth"):
        L.TreePool((2, 2), depth=1).init(KEY, x)


def test_gem_p_is_learned_only_on_request():
    x = layout_input("channels_last")
    assert _init(L.GeMPool(p=2.5), x) == {}
    params = _init(L.GeMPool(p=2.5, learn_p=True), x)
    assert params["p"].shape == () and params["p"] == 2.5
    grad = fast_jit(jax.grad(lambda p: L.GeMPool(learn_p=True).apply({"params": p}, x).sum()))(params)["p"]
    assert np.isfinite(grad) and grad != 0


def test_serialisation_round_trip():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = L.GatedPool((2, 2), strides=1, per_channel=True)(x)
            x = L.TreePool((2, 2), depth=3)(x)
            return L.GeMPool(learn_p=True)(x)

    x, model = layout_input("channels_last"), Net()
    variables = {"params": perturbed(_init(model, x))}
    template = fast_jit(model.init)(jax.random.key(5), x)
    restored = serialization.from_bytes(template, serialization.to_bytes(variables))
    assert_trees_close(restored, variables)
    state = serialization.msgpack_restore(serialization.msgpack_serialize(serialization.to_state_dict(variables)))
    restored_msgpack = serialization.from_state_dict(template, state)
    assert_trees_close(restored_msgpack, variables)
    apply = fast_jit(model.apply)
    assert_trees_close(apply(restored_msgpack, x), apply(variables, x))


def test_tabulate():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = L.MaxPool((3, 3), strides=1, padding="SAME")(x)
            x = L.GatedPool((2, 2), per_channel=True)(x)
            x = L.StochasticPool((2, 2))(x, deterministic=not train)
            return L.GeMPool(learn_p=True)(x)

    table = nn.tabulate(Net(), KEY, console_kwargs={"width": 200})(layout_input("channels_last"))
    for word in ("MaxPool", "GatedPool", "StochasticPool", "GeMPool", "gate", "Total Parameters: 13"):
        assert word in table


# ----------------------------------------------------------------------------------------------
# Randomness: flax.linen.Dropout's conventions.


@pytest.mark.parametrize("case", RANDOM_CASES, ids=str)
def test_dropout_rng_conventions(case):
    x = layout_input("channels_last")
    model = _model(case)  # deterministic=None: given at call time
    training, inference = (dataclasses.replace(model, deterministic=d) for d in (False, True))
    noise = dataclasses.replace(training, rng_collection="noise")

    @fast_jit
    def outputs(x, key, other):
        return dict(
            key=model.apply({}, x, deterministic=False, rngs={"dropout": key}),
            again=model.apply({}, x, deterministic=False, rngs={"dropout": key}),
            other=model.apply({}, x, deterministic=False, rngs={"dropout": other}),
            attribute=training.apply({}, x, rngs={"dropout": key}),
            noise=noise.apply({}, x, rngs={"noise": key}),
            call_inference=model.apply({}, x, deterministic=True),  # no rng needed
            attribute_inference=inference.apply({}, x),
            expectation=case.expected((x,), "channels_last", deterministic=True),
        )

    out = outputs(x, KEY, jax.random.key(9))
    for same in ("again", "attribute", "noise"):
        assert_trees_close(out[same], out["key"])
    assert not np.array_equal(jax.tree.leaves(out["other"])[0], jax.tree.leaves(out["key"])[0])
    for name in ("call_inference", "attribute_inference"):
        assert_trees_close(out[name], out["expectation"])
    # flax's own errors: no rng when sampling; deterministic given twice or never.
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        training.apply({}, x)
    with pytest.raises(flax.errors.InvalidRngError, match="noise"):
        noise.apply({}, x, rngs={"dropout": KEY})
    with pytest.raises(ValueError, match="passed to the constructor and at call time"):
        training.apply({}, x, deterministic=True)
    with pytest.raises(ValueError, match="must be passed to the constructor or at call time"):
        model.apply({}, x)


def test_fractional_samples_need_no_rng():
    """FractionalMaxPool given ``samples`` draws no key: it samples without an rng."""
    x = layout_input("channels_last")
    samples = jax.random.uniform(KEY, (2, 3, 2))
    got, want = fast_jit(
        lambda x, s: (
            L.FractionalMaxPool(output_size=(5, 5), samples=s, deterministic=False).apply({}, x),
            fractional_max_pool(x, output_size=(5, 5), samples=s),
        )
    )(x, samples)
    np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------------------------
# Call-time arguments.


def test_call_keywords():
    check_call_keywords(lambda name, attributes, *inputs, **kw: getattr(L, name)(**attributes).apply({}, *inputs, **kw))


def test_spatial_pyramid_pool_any_input_size_under_jit():
    """One classifier head for every input size; bucketing (the docstring's recipe) bounds the compilations."""

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(5)(L.SpatialPyramidPool(levels=(1, 2, 4))(L.GatedPool((2, 2), strides=1)(x)))

    model, traces = Net(), []
    variables = fast_jit(model.init)(KEY, layout_input("channels_last"))

    @fast_jit
    def apply(variables, x):
        traces.append(x.shape)
        return model.apply(variables, x), L.SpatialPyramidPool().apply({}, x), spatial_pyramid_pool(x)

    sizes = ((2, 9, 9, 3), (2, 13, 11, 3), (2, 10, 8, 3))
    for shape in sizes[:2]:
        y, features, want = apply(variables, layout_input("channels_last", shape=shape))
        assert y.shape == (2, 5) and features.shape == (2, 3 * 21)
        np.testing.assert_allclose(features, want, rtol=1e-6)
    assert len(traces) == 2
    for shape in sizes:
        assert apply(variables, bucket(layout_input("channels_last", shape=shape)))[0].shape == (2, 5)
    assert len(traces) == 4  # 9x9 and 10x8 share the bucket 8, 13x11 takes 12: two more compilations, not three
