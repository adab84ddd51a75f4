"""gated_pool and tree_pool (Lee, Gallagher & Tu 2016) against the plain-loop NumPy reference.

Values over hypothesis geometry (1-3 spatial dims, both layouts, 0-2 batch axes, padding, ceil_mode,
strides), shared and per-channel weights, trees of depth 2 and 3; gradients with respect to x and
the weights against autodiff of a jnp re-implementation of the formula (below, gathering the
reference's windows) and against central differences of the float64 reference; the saturated-gate
and identical-leaf special cases; jit / vmap; 16-bit inputs; scatter-free backward; argument errors.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxpool.avg import avg_pool
from jaxpool.gated import gated_pool, tree_pool
from jaxpool.max import max_pool
from tests import reference_gated as rg
from tests.hlo import compiled_opcodes
from tests.layouts import from_layout, to_layout
from tests.reference_more import numerical_vjp
from tests.strategies import layouts, pool_geometry
from tests.validation import bad_argument_test

# Tests check semantics, not speed: compiling without LLVM optimisation halves their compile time.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
geometry = pool_geometry(dilation=False)
C = 2


# ------------------------------------------------------------- the formula in jnp (gradient oracle)


def _jnp_windows(x, masks):
    """``(B, C, *S)`` -> ``(B, C, *out, K)`` tap values, padding 0, gathered at the reference's indices."""
    index, inside, _ = masks
    return jnp.where(inside, x.reshape(x.shape[:2] + (-1,))[..., index], 0)


def _jnp_dot(values, w, n):
    if w.ndim == n:  # shared
        return values @ w.reshape(-1)
    return jnp.einsum("bc...k,kc->bc...", values, w.reshape(-1, w.shape[-1]))


def jnp_gated(x, w, masks, n):
    _, inside, counted = masks
    values = _jnp_windows(x, masks)
    mx = jnp.where(inside, values, -jnp.inf).max(axis=-1)
    avg = values.sum(axis=-1) / counted.sum(axis=-1)
    s = jax.nn.sigmoid(_jnp_dot(values, w, n))
    return s * mx + (1 - s) * avg


def jnp_tree(x, leaves, gates, masks, n):
    values = _jnp_windows(x, masks)
    count = leaves.shape[0]

    def node(k):
        if k >= count - 1:
            return _jnp_dot(values, leaves[k - count + 1], n)
        s = jax.nn.sigmoid(_jnp_dot(values, gates[k], n))
        return s * node(2 * k + 1) + (1 - s) * node(2 * k + 2)

    return node(0)


# ------------------------------------------------------------------------- values and gradients


def _ref_args(g):
    return g["window"], g["strides"], g["pairs"], g["ceil_mode"]


def _check(g, layout, pool, reference, oracle, x, weights, rng):
    """``pool(x_layout, *weights)`` against ``reference`` (float64) in value, and its VJP with respect
    to x and every weight array against the VJP of ``oracle`` (the jnp formula); one compile."""
    data_format, batch_shape = layout
    want = reference(x, *weights)
    ct = rng.normal(size=want.shape).astype(np.float32)
    masks = rg.window_index(g["spatial"], *_ref_args(g))

    @fast_jit
    def run(x, x_layout, weights, ct, ct_layout):
        y, vjp = jax.vjp(pool, x_layout, *weights)
        y_oracle, vjp_oracle = jax.vjp(lambda v, *w: oracle(v, *w, masks), x, *weights)
        return y, vjp(ct_layout), y_oracle, vjp_oracle(ct)

    y, grads, y_oracle, oracle_grads = run(
        x, to_layout(x, data_format, batch_shape), weights, ct, to_layout(ct, data_format, batch_shape)
    )
    np.testing.assert_allclose(y_oracle, want, rtol=1e-5, atol=1e-5)  # the oracle is the formula
    np.testing.assert_allclose(from_layout(y, data_format, batch_shape), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_layout(grads[0], data_format, batch_shape), oracle_grads[0], rtol=1e-4, atol=1e-5)
    for got, expected in zip(grads[1:], oracle_grads[1:]):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _input(g, layout, rng):
    """Tie-free normal floats (so that the max has a gradient everywhere), ``(B, C, *spatial)``."""
    return rng.normal(size=(max(1, math.prod(layout[1])), C) + g["spatial"]).astype(np.float32)


def _weights(rng, leading, window, per_channel, scale=0.5):
    return (rng.normal(size=tuple(leading) + tuple(window) + ((C,) if per_channel else ())) * scale).astype(np.float32)


@settings(max_examples=15)  # each example compiles two VJPs: half the profile's count keeps the file fast
@given(g=geometry, layout=layouts, per_channel=st.booleans(), seed=st.integers(0, 2**16))
def test_gated_pool_matches_reference(g, layout, per_channel, seed):
    rng = np.random.default_rng(seed)
    n = len(g["window"])
    pool = lambda v, w: gated_pool(v, w, g["window"], g["strides"], g["padding"], ceil_mode=g["ceil_mode"], data_format=layout[0])
    reference = lambda v, w: rg.gated_pool(v, w, *_ref_args(g))
    oracle = lambda v, w, masks: jnp_gated(v, w, masks, n)
    _check(g, layout, pool, reference, oracle, _input(g, layout, rng), (_weights(rng, (), g["window"], per_channel),), rng)


@settings(max_examples=15)
@given(g=geometry, layout=layouts, per_channel=st.booleans(), depth=st.sampled_from([2, 3]), seed=st.integers(0, 2**16))
def test_tree_pool_matches_reference(g, layout, per_channel, depth, seed):
    rng = np.random.default_rng(seed)
    n, leaves = len(g["window"]), 2 ** (depth - 1)
    weights = (_weights(rng, (leaves,), g["window"], per_channel), _weights(rng, (leaves - 1,), g["window"], per_channel))
    pool = lambda v, lw, gw: tree_pool(
        v, lw, gw, g["window"], g["strides"], g["padding"], ceil_mode=g["ceil_mode"], data_format=layout[0]
    )
    reference = lambda v, lw, gw: rg.tree_pool(v, lw, gw, *_ref_args(g))
    oracle = lambda v, lw, gw, masks: jnp_tree(v, lw, gw, masks, n)
    _check(g, layout, pool, reference, oracle, _input(g, layout, rng), weights, rng)


def _numerical_weight_grad(fn, w, ct, h=1e-6):
    """``ct . d fn(w) / d w`` by central differences of the float64 reference, one entry at a time."""
    w = np.asarray(w, np.float64)
    grad = np.zeros(w.shape)
    for i in np.ndindex(*w.shape):
        step = np.zeros(w.shape)
        step[i] = h
        grad[i] = ((fn(w + step) - fn(w - step)) / (2 * h) * ct).sum()
    return grad


FD_CASES = {  # name: (spatial, window, strides, padding pairs, ceil_mode, per_channel, depth or None for gated)
    "gated 2d padded ceil per-channel": ((5, 6), (3, 2), (2, 1), ((1, 1), (0, 1)), True, True, None),
    "gated 1d shared": ((9,), (4,), (3,), ((2, 1),), False, False, None),
    "tree depth 2 2d shared": ((6, 5), (2, 3), (2, 2), ((0, 0), (1, 1)), True, False, 2),
    "tree depth 3 3d per-channel": ((4, 3, 4), (2, 2, 2), (2, 1, 2), ((1, 0), (0, 0), (1, 1)), False, True, 3),
}


@pytest.mark.parametrize("case", FD_CASES)
def test_gradients_match_finite_differences_of_the_reference(case):
    """Gradients with respect to x and each weight array against central differences of the float64 reference."""
    spatial, window, strides, pairs, ceil_mode, per_channel, depth = FD_CASES[case]
    rng = np.random.default_rng(len(case))
    x = rng.normal(size=(1, C) + spatial)
    if depth is None:
        weights = [_weights(rng, (), window, per_channel)]
        reference = lambda v, w: rg.gated_pool(v, w, window, strides, pairs, ceil_mode)
        pool = lambda v, w: gated_pool(v, w, window, strides, pairs, ceil_mode=ceil_mode, data_format="channels_first")
    else:
        leaves = 2 ** (depth - 1)
        weights = [_weights(rng, (leaves,), window, per_channel), _weights(rng, (leaves - 1,), window, per_channel)]
        reference = lambda v, lw, gw: rg.tree_pool(v, lw, gw, window, strides, pairs, ceil_mode)
        pool = lambda v, lw, gw: tree_pool(v, lw, gw, window, strides, pairs, ceil_mode=ceil_mode, data_format="channels_first")
    ct = rng.normal(size=reference(x, *weights).shape)
    grads = fast_jit(lambda v, w, c: jax.vjp(pool, v, *w)[1](c))(
        jnp.asarray(x, jnp.float32), weights, jnp.asarray(ct, jnp.float32)
    )
    np.testing.assert_allclose(grads[0], numerical_vjp(lambda v: reference(v, *weights), x, ct), rtol=1e-3, atol=1e-4)
    for i, got in enumerate(grads[1:]):
        others = lambda w, i=i: reference(x, *weights[:i], w, *weights[i + 1 :])
        np.testing.assert_allclose(got, _numerical_weight_grad(others, weights[i], ct), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("op", ["gated", "tree"])
def test_reverse_over_reverse_matches_the_jnp_formula(op):
    """The gradient of a gradient penalty (``|d loss / d x|^2``) with respect to the weights."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1, C, 6, 7)).astype(np.float32)
    window, strides, pairs = (3, 2), (2, 2), ((1, 1), (1, 1))
    masks = rg.window_index(x.shape[2:], window, strides, pairs, False)
    if op == "gated":
        weights = (_weights(rng, (), window, True),)
        pool = lambda v, *w: gated_pool(v, *w, window, strides, pairs, data_format="channels_first")
        oracle = lambda v, *w: jnp_gated(v, *w, masks, 2)
    else:
        weights = (_weights(rng, (4,), window, False), _weights(rng, (3,), window, False))
        pool = lambda v, *w: tree_pool(v, *w, window, strides, pairs, data_format="channels_first")
        oracle = lambda v, *w: jnp_tree(v, *w, masks, 2)

    def penalty_grad(fn):
        input_grad = lambda *w: jax.grad(lambda v: (fn(v, *w) ** 2).sum())(jnp.asarray(x))
        return jax.grad(lambda *w: (input_grad(*w) ** 2).sum(), argnums=tuple(range(len(weights))))(*weights)

    got, want = fast_jit(lambda: (penalty_grad(pool), penalty_grad(oracle)))()
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- special cases

X = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, size=(2, 7, 9, 3)), jnp.float32)
GEOMETRY = dict(window_shape=(3, 3), strides=2, padding=1)
_static = ("window_shape", "strides", "padding", "ceil_mode", "data_format")
jgated, jtree, jmax, javg = (fast_jit(f, static_argnames=_static) for f in (gated_pool, tree_pool, max_pool, avg_pool))


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("gate_shape", [(3, 3), (3, 3, 3)], ids=["shared", "per-channel"])
def test_saturated_gate_gives_max_or_avg_pool(gate_shape, ceil_mode):
    """Positive inputs: a huge positive gate is max_pool exactly, a huge negative one avg_pool, and so
    are the gradients."""
    kw = dict(GEOMETRY, ceil_mode=ceil_mode)

    def value_and_grad(pool):
        return jax.value_and_grad(lambda v: (pool(v) * jnp.arange(1.0, 4.0)).sum())(X), pool(X)

    @fast_jit
    def run(huge):
        return [
            (value_and_grad(lambda v: gated_pool(v, w, **kw)), value_and_grad(lambda v: pool(v, **kw)))
            for w, pool in ((huge, max_pool), (-huge, avg_pool))
        ]

    for ((_, grad), y), ((_, want_grad), want) in run(jnp.full(gate_shape, 1e6)):
        np.testing.assert_array_equal(y, want)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-6)


def test_zero_gate_is_the_mean_of_max_and_avg():
    np.testing.assert_allclose(
        jgated(X, jnp.zeros((3, 3)), **GEOMETRY), 0.5 * (jmax(X, **GEOMETRY) + javg(X, **GEOMETRY)), rtol=1e-6
    )


@pytest.mark.parametrize("depth", [2, 3])
def test_tree_with_identical_leaves_is_that_leaf_filter(depth):
    rng = np.random.default_rng(depth)
    leaf = rng.normal(size=(3, 3)).astype(np.float32)
    gates = rng.normal(size=(2 ** (depth - 1) - 1, 3, 3)).astype(np.float32)
    leaves = np.stack([leaf] * 2 ** (depth - 1))
    y = jtree(X, leaves, gates, **GEOMETRY, ceil_mode=True)
    values, _, _ = rg.window_values(np.moveaxis(X, -1, 1), (3, 3), (2, 2), ((1, 1), (1, 1)), True)
    np.testing.assert_allclose(np.moveaxis(y, -1, 1), rg.window_dot(values, leaf), rtol=1e-5, atol=1e-6)
    # uniform leaves: the window mean with padding counted (no ceil_mode overhang here)
    uniform = np.full((2 ** (depth - 1), 3, 3), 1 / 9, np.float32)
    np.testing.assert_allclose(jtree(X, uniform, gates, **GEOMETRY), javg(X, **GEOMETRY), rtol=1e-6)


def test_per_channel_weights_equal_to_shared_ones_agree():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 3)).astype(np.float32)
    tiled = np.repeat(w[..., None], 3, axis=-1)
    np.testing.assert_allclose(jgated(X, tiled, **GEOMETRY), jgated(X, w, **GEOMETRY), rtol=1e-6)
    leaves, gates = rng.normal(size=(4, 3, 3)).astype(np.float32), rng.normal(size=(3, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(
        jtree(X, np.repeat(leaves[..., None], 3, -1), np.repeat(gates[..., None], 3, -1), **GEOMETRY),
        jtree(X, leaves, gates, **GEOMETRY),
        rtol=1e-5,
    )


def test_per_channel_weights_follow_the_channel_axis_in_either_layout():
    """Weights' trailing C is the channel axis for channels_first too: channel c uses w[..., c]."""
    w = np.random.default_rng(2).normal(size=(3, 3, 3)).astype(np.float32)
    cl = jgated(X, w, **GEOMETRY)
    cf = jgated(jnp.moveaxis(X, -1, 1), w, **GEOMETRY, data_format="channels_first")
    np.testing.assert_allclose(jnp.moveaxis(cf, 1, -1), cl, rtol=1e-6)
    one = jgated(X[..., 1:2], w[..., 1:2], **GEOMETRY)
    np.testing.assert_allclose(one, cl[..., 1:2], rtol=1e-6)


# ------------------------------------------------------------------------------ dtypes, transforms

POOLS = {
    "gated shared": lambda v, w: gated_pool(v, w[0], (4, 4), 2, 1),
    "gated per-channel": lambda v, w: gated_pool(v, jnp.repeat(w[0][..., None], 8, -1), (4, 4), 2, 1),
    "tree depth 3": lambda v, w: tree_pool(v, w[:4], w[4:], (4, 4), 2, 1),
}
W = jnp.asarray(np.random.default_rng(3).normal(size=(7, 4, 4)) * 0.2, jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", POOLS)
def test_half_precision_accumulates_in_float32(name, dtype):
    """Rounded once: within half an ulp of the float32 result on the same input (a 16-window summed in
    bfloat16 would be several ulps off); x's gradient keeps its dtype, the weights' theirs."""
    pool = POOLS[name]
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, size=(2, 16, 16, 8)), dtype)
    y, want, (dx, dw) = fast_jit(
        lambda v: (
            pool(v, W),
            pool(v.astype(jnp.float32), W),
            jax.grad(lambda u, w: pool(u, w).astype(jnp.float32).sum(), (0, 1))(v, W),
        )
    )(x)
    assert y.dtype == dtype and dx.dtype == dtype and dw.dtype == jnp.float32
    np.testing.assert_allclose(y.astype(jnp.float32), want, rtol=float(jnp.finfo(dtype).eps) / 2, atol=0)


@pytest.mark.parametrize("name", POOLS)
def test_vmap_and_per_example_grads_match_batch_axes(name):
    pool = POOLS[name]
    loss = lambda v, w: (pool(v, w) ** 2).sum()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 9, 9, 8)), jnp.float32)
    y, y_vmap, g, g_vmap = fast_jit(
        lambda v: (
            pool(v, W),
            jax.vmap(lambda u: pool(u, W))(v),
            jax.grad(loss)(v, W),
            jax.vmap(lambda u: jax.grad(loss)(u, W))(v),
        )
    )(x)
    np.testing.assert_allclose(y_vmap, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g_vmap, g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", POOLS)
def test_vmap_over_weights_matches_one_call_per_weight(name):
    """An ensemble of weights under vmap, values and the weights' gradients, equals one call each."""
    pool = POOLS[name]
    stack = W[None] * jnp.asarray([1.0, -0.5, 2.0])[:, None, None, None]
    x = X[..., :1].repeat(8, axis=-1)
    value_and_grad = jax.value_and_grad(lambda w: (pool(x, w) ** 2).sum())
    batched, singles = fast_jit(lambda ws: (jax.vmap(value_and_grad)(ws), [value_and_grad(w) for w in ws]))(stack)
    np.testing.assert_allclose(batched[0], jnp.stack([v for v, _ in singles]), rtol=1e-5)
    np.testing.assert_allclose(batched[1], jnp.stack([g for _, g in singles]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", POOLS)
def test_backward_is_scatter_free(name):
    ops = compiled_opcodes(jax.grad(lambda v, w: POOLS[name](v, w).sum(), (0, 1)), jnp.ones((2, 16, 16, 8)), W)
    assert ops["scatter"] == 0 and ops["select-and-scatter"] == 0 and ops["gather"] == 0


# ------------------------------------------------------------------------------------ validation

Z = np.zeros((2, 8, 8, 3), np.float32)
G, LEAVES, GATES = jnp.zeros((3, 3)), jnp.zeros((4, 3, 3)), jnp.zeros((3, 3, 3))
BAD_ARGUMENTS = [
    ("gated int x", lambda x: gated_pool(x.astype(jnp.int32), G, (3, 3)), TypeError, "float dtype"),
    ("gated bool x", lambda x: gated_pool(x > 0, G, (3, 3)), TypeError, "bool"),
    ("gated gate shape", lambda x: gated_pool(x, jnp.zeros((2, 2)), (3, 3)), ValueError, "gate_weights"),
    ("gated gate channels", lambda x: gated_pool(x, jnp.zeros((3, 3, 4)), (3, 3)), ValueError, "gate_weights"),
    ("gated gate scalar", lambda x: gated_pool(x, 1.0, (3, 3)), ValueError, "gate_weights"),
    ("gated gate int", lambda x: gated_pool(x, jnp.zeros((3, 3), jnp.int32), (3, 3)), TypeError, "gate_weights"),
    ("gated window", lambda x: gated_pool(x, G, (0, 3)), ValueError, "window_shape"),
    ("gated window int", lambda x: gated_pool(x, G, 3), TypeError, "window_shape"),
    ("gated strides", lambda x: gated_pool(x, G, (3, 3), (1, 1, 1)), ValueError, "strides"),
    ("gated padding", lambda x: gated_pool(x, G, (3, 3), padding="FULL"), ValueError, "padding"),
    ("gated data_format", lambda x: gated_pool(x, G, (3, 3), data_format="NHWC"), ValueError, "data_format"),
    ("tree int x", lambda x: tree_pool(x.astype(jnp.int8), LEAVES, GATES, (3, 3)), TypeError, "float dtype"),
    ("tree 3 leaves", lambda x: tree_pool(x, jnp.zeros((3, 3, 3)), jnp.zeros((2, 3, 3)), (3, 3)), ValueError, "leaf_weights"),
    ("tree 1 leaf", lambda x: tree_pool(x, jnp.zeros((1, 3, 3)), jnp.zeros((0, 3, 3)), (3, 3)), ValueError, "leaf_weights"),
    ("tree leaf window", lambda x: tree_pool(x, jnp.zeros((2, 2, 2)), jnp.zeros((1, 2, 2)), (3, 3)), ValueError, "leaf_weights"),
    (
        "tree leaf channels",
        lambda x: tree_pool(x, jnp.zeros((2, 3, 3, 5)), jnp.zeros((1, 3, 3, 5)), (3, 3)),
        ValueError,
        "leaf_weights",
    ),
    ("tree leaf scalar", lambda x: tree_pool(x, 0.0, GATES, (3, 3)), ValueError, "leaf_weights"),
    ("tree gate count", lambda x: tree_pool(x, LEAVES, jnp.zeros((2, 3, 3)), (3, 3)), ValueError, "gate_weights"),
    (
        "tree gate per-channel mismatch",
        lambda x: tree_pool(x, jnp.zeros((2, 3, 3, 3)), jnp.zeros((1, 3, 3)), (3, 3)),
        ValueError,
        "gate_weights",
    ),
    ("tree gate int", lambda x: tree_pool(x, LEAVES, GATES.astype(jnp.int32), (3, 3)), TypeError, "gate_weights"),
    (
        "tree window larger",
        lambda x: tree_pool(x, jnp.zeros((2, 9, 9)), jnp.zeros((1, 9, 9)), (9, 9)),
        ValueError,
        "window_shape",
    ),
]

test_bad_arguments_raise_naming_the_argument = bad_argument_test(BAD_ARGUMENTS, Z)
