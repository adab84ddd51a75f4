"""The table shared by tests/test_linen.py and tests/test_nnx.py: each module, its function, and arguments.

Every case states, independently of jaxpool._modules, which keywords the module and its function share,
which module-only attributes it takes, which function argument each learned parameter feeds, and
whether the op is random. The tests check that the module's output and gradients equal the function's.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpool.adaptive import adaptive_avg_pool, adaptive_max_pool, global_avg_pool, global_max_pool, spatial_pyramid_pool
from jaxpool.avg import avg_pool, lp_pool
from jaxpool.blur import blur_pool, max_blur_pool
from jaxpool.combined import avgmax_pool, global_avgmax_pool
from jaxpool.fractional import fractional_max_pool
from jaxpool.gated import gated_pool, tree_pool
from jaxpool.max import max_pool, min_pool
from jaxpool.median import median_pool
from jaxpool.power import gem_pool
from jaxpool.soft import soft_pool
from jaxpool.stochastic import mixed_pool, stochastic_pool
from jaxpool.unpool import max_unpool

# Tests check semantics, not speed: compiling without LLVM optimisation halves their compile time.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
KEY = jax.random.key(7)
SHAPE = (2, 8, 8, 3)  # channels_last (B, H, W, C)
CHANNELS = SHAPE[-1]
FORMATS = ("channels_last", "channels_first")
# The module set the task names; test_*_module_set checks both flavours export exactly these.
MODULE_NAMES = (
    "MaxPool MinPool AvgPool LpPool MedianPool StochasticPool MixedPool GatedPool TreePool FractionalMaxPool SoftPool GeMPool "
    "BlurPool MaxBlurPool GlobalAvgPool GlobalMaxPool AdaptiveAvgPool AdaptiveMaxPool SpatialPyramidPool MaxUnpool AvgMaxPool "
    "GlobalAvgMaxPool"
).split()


def _x_only(x, data_format):
    return (x,)


def _pooled_with_indices(x, data_format):
    """MaxUnpool's inputs: ``max_pool(x, (2, 2), return_indices=True)``."""
    return max_pool(x, (2, 2), return_indices=True, data_format=data_format)


@dataclasses.dataclass(frozen=True)
class Case:
    module: str
    function: Callable
    kwargs: dict  # shared by the module (attributes) and the function (keywords)
    extra: dict = dataclasses.field(default_factory=dict)  # module-only attributes
    learned: dict = dataclasses.field(default_factory=dict)  # param name -> function argument
    random: bool = False
    inputs: Callable = _x_only
    id: str = ""

    def __str__(self):
        return self.id or self.module

    def module_kwargs(self, data_format, nnx=False):
        kw = dict(self.kwargs, data_format=data_format, **self.extra)
        if nnx and self.extra.get("per_channel"):
            kw["num_features"] = CHANNELS
        return kw

    def expected(self, inputs, data_format, params=None, **random_kwargs):
        """The function's output for the same arguments; ``params`` by the module's param names."""
        weights = {arg: params[name] for name, arg in self.learned.items()} if self.learned else {}
        return self.function(*inputs, **self.kwargs, **weights, data_format=data_format, **random_kwargs)


TREE = {"leaves": "leaf_weights", "gates": "gate_weights"}
CASES = (
    Case("MaxPool", max_pool, dict(window_shape=(2, 2))),
    Case("MaxPool", max_pool, dict(window_shape=(3, 3), strides=(2, 2), padding="SAME", return_indices=True), id="MaxPool-idx"),
    Case("MinPool", min_pool, dict(window_shape=(2, 2), strides=1)),
    Case("AvgPool", avg_pool, dict(window_shape=(3, 3), strides=2, padding=1, count_include_pad=False)),
    Case("LpPool", lp_pool, dict(norm_type=2.0, window_shape=(2, 2))),
    Case("MedianPool", median_pool, dict(window_shape=(3, 3), strides=1, padding="SAME")),
    Case("StochasticPool", stochastic_pool, dict(window_shape=(2, 2)), random=True),
    Case("MixedPool", mixed_pool, dict(window_shape=(2, 2), per="window"), random=True),
    Case("GatedPool", gated_pool, dict(window_shape=(2, 2)), learned={"gate": "gate_weights"}),
    Case(
        "GatedPool",
        gated_pool,
        dict(window_shape=(3, 3), strides=2, padding="SAME"),
        extra=dict(per_channel=True),
        learned={"gate": "gate_weights"},
        id="GatedPool-per-channel",
    ),
    Case("TreePool", tree_pool, dict(window_shape=(2, 2)), learned=TREE),
    Case(
        "TreePool",
        tree_pool,
        dict(window_shape=(2, 2), strides=1),
        extra=dict(depth=3, per_channel=True),
        learned=TREE,
        id="TreePool-3",
    ),
    Case("FractionalMaxPool", fractional_max_pool, dict(output_size=(5, 5)), random=True),
    Case(
        "FractionalMaxPool",
        fractional_max_pool,
        dict(window_shape=(2, 2), output_size=(5, 4), return_indices=True),
        random=True,
        id="FMP-window",
    ),
    Case("SoftPool", soft_pool, dict(window_shape=(2, 2))),
    Case("GeMPool", gem_pool, dict(p=4.0)),
    Case("GeMPool", gem_pool, dict(window_shape=(2, 2)), extra=dict(learn_p=True), learned={"p": "p"}, id="GeMPool-learned"),
    Case("BlurPool", blur_pool, dict(window_shape=(2, 2))),
    Case("MaxBlurPool", max_blur_pool, dict(window_shape=(2, 2), filter_size=2)),
    Case("GlobalAvgPool", global_avg_pool, {}),
    Case("GlobalMaxPool", global_max_pool, dict(keepdims=True)),
    Case("AdaptiveAvgPool", adaptive_avg_pool, dict(output_size=(3, 3))),
    Case("AdaptiveMaxPool", adaptive_max_pool, dict(output_size=(3, 5), return_indices=True)),
    Case("SpatialPyramidPool", spatial_pyramid_pool, dict(levels=(1, 2, 3))),
    Case("MaxUnpool", max_unpool, dict(output_size=(8, 8)), inputs=_pooled_with_indices),
    Case("AvgMaxPool", avgmax_pool, dict(window_shape=(2, 2), combine="cat")),
    Case("GlobalAvgMaxPool", global_avgmax_pool, dict(combine="sum")),
)
RANDOM_CASES = tuple(c for c in CASES if c.random and not c.id)  # one per random module (variants have an id)


def layout_input(data_format, seed=0, shape=SHAPE):
    """Positive, tie-free floats (stochastic pooling wants non-negative inputs) in ``data_format``."""
    x = np.random.default_rng(seed).uniform(0.1, 2.0, shape).astype(np.float32)  # NumPy: no compilation per shape
    return jnp.asarray(x if data_format == "channels_last" else np.moveaxis(x, -1, 1))


def perturbed(params, seed=1, scale=0.3):
    """``params`` plus normal noise, so the comparisons do not rest on the initial values."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), max(len(leaves), 1))
    return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


def primary(out):
    """The pooled values: the first output of ops that also return indices."""
    return out[0] if isinstance(out, tuple) else out


def cotangent_loss(out, seed=3):
    """``sum(y * ct)`` with a fixed random ``ct``: every output element weighs differently."""
    y = primary(out)
    return jnp.sum(y * jax.random.normal(jax.random.key(seed), y.shape, y.dtype))


def assert_trees_close(got, want, rtol=1e-5, atol=1e-6):
    got_leaves, got_tree = jax.tree.flatten(got)
    want_leaves, want_tree = jax.tree.flatten(want)
    assert got_tree == want_tree
    for g, w in zip(got_leaves, want_leaves):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


def assert_finite(tree):
    for leaf in jax.tree.leaves(tree):
        assert np.isfinite(np.asarray(leaf)).all()


def bucket(images, buckets=(8, 12)):
    """SpatialPyramidPool's docstring recipe: resize a (B, H, W, C) batch to the nearest bucket size."""
    size = min(buckets, key=lambda b: abs(b - max(images.shape[1:3])))
    return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "linear")


# Module attributes that are not function keywords (flax/equinox conventions and learned-parameter settings).
MODULE_ONLY = {"per_channel", "depth", "leaf_init", "gate_init", "learn_p", "rng_collection", "num_features", "rngs", "inference"}
NOT_ATTRIBUTES = {"x", "y", "indices", "key"}  # call-time arrays and the key the module draws


def check_attributes(case, module_class, attributes, deterministic_default, defaults=None):
    """``attributes`` (name -> default, ``inspect.Parameter.empty`` when required) are the function's keywords:
    same names, same defaults, except the module-only ones, MaxUnpool's output_size (may come at call time),
    ``deterministic`` (the flavour's Dropout default, or Equinox's ``inference`` flag in its place) and the
    flavour's ``defaults`` (Equinox: channels_first). The docstring points to the function, not copies it."""
    defaults = defaults or {}
    for name, p in inspect.signature(case.function).parameters.items():
        if name not in attributes:
            renamed = name == "deterministic" and "inference" in attributes
            assert renamed or name in NOT_ATTRIBUTES | set(case.learned.values()), name
        elif name == "deterministic":
            assert attributes[name] == deterministic_default
        elif name in defaults:
            assert attributes[name] == defaults[name], name
        else:
            assert attributes[name] == (None if (case.module, name) == ("MaxUnpool", "output_size") else p.default), name
    assert set(attributes) - set(inspect.signature(case.function).parameters) <= MODULE_ONLY
    assert set(case.extra) <= set(attributes)
    assert f":func:`jaxpool.{case.function.__name__}`" in module_class.__doc__
    assert case.function.__doc__.splitlines()[0] not in module_class.__doc__


def check_call_keywords(run):
    """``run(module_name, attributes, *inputs, **call_keywords)``: per-batch arrays and sizes at call time."""
    x = layout_input("channels_last")
    mask = jnp.asarray(np.random.default_rng(0).random((2, 8, 8)) < 0.6)
    want = global_avg_pool(x, mask=mask)
    assert_trees_close(run("GlobalAvgPool", {}, x, mask=mask), want)
    assert_trees_close(run("GlobalAvgPool", dict(mask=mask), x), want)
    y, indices = run("MaxPool", dict(window_shape=(2, 2), return_indices=True), x)
    want = max_unpool(y, indices, (8, 8))
    assert_trees_close(run("MaxUnpool", {}, y, indices, output_size=(8, 8)), want)
    assert_trees_close(run("MaxUnpool", dict(output_size=(9, 9)), y, indices, output_size=(8, 8)), want)  # the call wins
    assert_trees_close(run("MaxUnpool", dict(output_size=(8, 8)), y, indices), want)
    with pytest.raises(TypeError, match="output_size"):
        run("MaxUnpool", {}, y, indices)
    # The generated __call__ is typed: Python itself names the unknown keyword and the missing array.
    with pytest.raises(TypeError, match="MaxPool.__call__.. got an unexpected keyword argument 'mask'"):
        run("MaxPool", dict(window_shape=(2, 2)), x, mask=mask)
    with pytest.raises(TypeError, match="MaxUnpool.__call__.. missing 1 required positional argument: 'indices'"):
        run("MaxUnpool", dict(output_size=(8, 8)), y)


def check_module_set(flavour, base):
    """``flavour`` (jaxpool.linen or jaxpool.nnx) exports exactly the task's modules, named as such."""
    assert sorted(set(flavour.__all__) - {"PoolModule", "RandomPoolModule"}) == sorted(MODULE_NAMES)
    for name in MODULE_NAMES:
        cls = getattr(flavour, name)
        assert cls.__name__ == name and issubclass(cls, base)


def check_against_function(case, data_format, build):
    """The module's output (both layouts) and gradients (channels_last) under jit are the function's.

    ``build(inputs)``, traced, returns ``(params, module, as_dict)``: ``module(params, x)`` runs the module
    on ``x`` and ``inputs[1:]`` (random modules with KEY), ``as_dict`` maps params or their gradients to
    ``{param name: array}``. Params are perturbed first, so nothing rests on their initial values.
    """
    inputs = case.inputs(layout_input(data_format), data_format)
    rest, random = inputs[1:], (dict(key=KEY) if case.random else {})
    expected = lambda p, x: case.expected((x, *rest), data_format, p, **random)  # noqa: E731
    with_grads = data_format == "channels_last"  # one layout is enough for the gradients

    @fast_jit
    def outputs_and_grads(x):
        params, module, as_dict = build(inputs)
        params = perturbed(params)
        pure = as_dict(params)
        got, want = (module(params, x),), (expected(pure, x),)
        if with_grads:
            grad = lambda f, p: jax.grad(lambda p, x: cotangent_loss(f(p, x)), argnums=(0, 1))(p, x)  # noqa: E731
            dp, dx = grad(module, params)
            got, want = got + ((as_dict(dp), dx),), want + (grad(expected, pure),)
        return pure, got, want

    params, got, want = outputs_and_grads(inputs[0])
    assert_trees_close(got, want, rtol=1e-4, atol=1e-5)
    assert set(params) == set(case.learned)
    if with_grads:
        assert_finite(got[1])
        assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(got[1][0]))  # every learned parameter learns
