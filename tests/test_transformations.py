"""Every public op under every JAX transformation: jit, vmap (batch and non-batch axes), grad, jvp,
linearize, jacfwd, hessian, checkpoint and scan.

The independent checks: forward and reverse mode must agree by the dot-product test
``<u, J v> == <J^T u, v>`` (jvp against vjp), and jvp must match central finite differences in
float64 on tie-free inputs. Random ops run with a fixed key (their derivative is that of the
sampled/mixed function). Each op is checked in 1-D, 2-D and 3-D where it is N-d.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpool

KEY = jax.random.key(3)


def _unpool(x):
    y, idx = jaxpool.max_pool(x, (2, 2), return_indices=True)
    return jaxpool.max_unpool(y, idx, x.shape[-3:-1])


def _unpool_in_windows(x):
    y, idx = jaxpool.max_pool(x, (3, 3), 2, 1, return_indices=True)
    return jaxpool.max_unpool(y, idx, x.shape[-3:-1], window_shape=(3, 3), strides=2, padding=1)


def _gated(x):
    w = jnp.linspace(-0.5, 0.5, 4, dtype=x.dtype).reshape(2, 2)
    return jaxpool.gated_pool(x, w, (2, 2), 1)


def _tree(x):
    leaves = jnp.linspace(-0.3, 0.4, 8, dtype=x.dtype).reshape(2, 2, 2)
    gates = jnp.linspace(0.2, -0.1, 4, dtype=x.dtype).reshape(1, 2, 2)
    return jaxpool.tree_pool(x, leaves, gates, (2, 2), 1)


# name -> f(x) for x of shape (batch, 8, 8, C) unless the name says otherwise; float outputs only.
OPS = {
    "max_pool 3x3/2 p1": lambda x: jaxpool.max_pool(x, (3, 3), 2, 1),
    "max_pool tiling 8x8 (global)": lambda x: jaxpool.max_pool(x, (8, 8)),
    "max_pool 7x7/1 (chained)": lambda x: jaxpool.max_pool(x, (7, 7), 1, 3),
    "max_pool 3x3 dilation 2": lambda x: jaxpool.max_pool(x, (3, 3), 1, 1, dilation=2),
    "max_pool 1-D 9/1 (separable)": lambda x: jaxpool.max_pool(x.reshape(x.shape[0], 64, -1), (9,), 1, 4),
    "max_pool 8x9/(1,3) (blocked)": lambda x: jaxpool.max_pool(x, (8, 9), (1, 3), 4),
    "avg_pool 1-D 20/3 (blocked)": lambda x: jaxpool.avg_pool(x.reshape(x.shape[0], 64, -1), (20,), 3, ceil_mode=True),
    "max_pool 3x3/2 on 7 (edges)": lambda x: jaxpool.max_pool(x[:, :7, :7], (3, 3), 2),
    "max_pool 5x5/2 p2 (chained phase views)": lambda x: jaxpool.max_pool(x, (5, 5), 2, 2),
    "avg_pool 3x3/2 p1 on 7 (edges)": lambda x: jaxpool.avg_pool(x[:, :7, :7], (3, 3), 2, 1),
    "max_pool 3-D 2x2x2": lambda x: jaxpool.max_pool(x.reshape(x.shape[0], 4, 4, 4, -1), (2, 2, 2), 1),
    "max_pool indices": lambda x: jaxpool.max_pool(x, (2, 2), return_indices=True)[0],
    "min_pool": lambda x: jaxpool.min_pool(x, (3, 3), 1, "SAME"),
    "avg_pool 3x3/2 p1": lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1, count_include_pad=False),
    "avg_pool 9x9/1 (separable)": lambda x: jaxpool.avg_pool(x, (8, 9), 1, 4, ceil_mode=True),
    "avg_pool 3-D": lambda x: jaxpool.avg_pool(x.reshape(x.shape[0], 4, 4, 4, -1), (3, 2, 2), 1),
    "lp_pool": lambda x: jaxpool.lp_pool(jnp.abs(x) + 0.5, 2.0, (2, 2)),
    "gem_pool": lambda x: jaxpool.gem_pool(jnp.abs(x) + 0.5, 3.0, (2, 2)),
    "gem_pool global": lambda x: jaxpool.gem_pool(jnp.abs(x) + 0.5, 2.5),
    "adaptive_avg_pool even": lambda x: jaxpool.adaptive_avg_pool(x, (4, 2)),
    "adaptive_avg_pool uneven": lambda x: jaxpool.adaptive_avg_pool(x, (3, 5)),
    "adaptive_max_pool even": lambda x: jaxpool.adaptive_max_pool(x, (2, 4)),
    "adaptive_max_pool uneven": lambda x: jaxpool.adaptive_max_pool(x, (3, 5)),
    "adaptive_max_pool upsampling": lambda x: jaxpool.adaptive_max_pool(x, (11, 3)),
    # bins no 16-tap window covers: per-axis winner offsets (adaptive._bin_extremum), long and short
    "adaptive_max_pool 1-D 62->4 (long bins)": lambda x: jaxpool.adaptive_max_pool(x.reshape(x.shape[0], 64, -1)[:, :62], (4,)),
    "adaptive_max_pool 1-D 64->40 (short bins)": lambda x: jaxpool.adaptive_max_pool(x.reshape(x.shape[0], 64, -1), (40,)),
    "global_avg_pool": lambda x: jaxpool.global_avg_pool(x),
    "global_max_pool": lambda x: jaxpool.global_max_pool(x),
    "global_max_pool mask": lambda x: jaxpool.global_max_pool(x, mask=(jnp.arange(64).reshape(8, 8) % 3 > 0)),
    "spatial_pyramid_pool max": lambda x: jaxpool.spatial_pyramid_pool(x, (1, 2, 3)),
    "spatial_pyramid_pool avg": lambda x: jaxpool.spatial_pyramid_pool(x, (1, 3), method="avg"),
    "max_unpool": _unpool,
    "max_unpool in windows": _unpool_in_windows,
    "stochastic_pool": lambda x: jaxpool.stochastic_pool(jnp.abs(x), (2, 2), key=KEY),
    "stochastic_pool deterministic": lambda x: jaxpool.stochastic_pool(jnp.abs(x) + 0.1, (3, 3), 2, 1, deterministic=True),
    "mixed_pool": lambda x: jaxpool.mixed_pool(x, (2, 2), key=KEY),
    "mixed_pool deterministic": lambda x: jaxpool.mixed_pool(x, (3, 3), 1, deterministic=True),
    "fractional_max_pool": lambda x: jaxpool.fractional_max_pool(x, (2, 2), output_size=(5, 5), key=KEY),
    "soft_pool": lambda x: jaxpool.soft_pool(x, (2, 2)),
    "median_pool": lambda x: jaxpool.median_pool(x, (3, 3), 1, 1),
    "blur_pool": lambda x: jaxpool.blur_pool(x, (2, 2)),
    "max_blur_pool": lambda x: jaxpool.max_blur_pool(x, (2, 2)),
    "avgmax_pool": lambda x: jaxpool.avgmax_pool(x, (2, 2), combine="cat"),
    "global_avgmax_pool": lambda x: jaxpool.global_avgmax_pool(x),
    "gated_pool": _gated,
    "tree_pool": _tree,
}

COVERED_BY_NAME = {name.split()[0] for name in OPS}


def test_every_public_op_is_in_the_matrix():
    assert set(jaxpool.__all__) <= COVERED_BY_NAME, set(jaxpool.__all__) - COVERED_BY_NAME


def _tie_free(shape, seed=0, dtype=np.float32):
    """A permutation of well-separated values: no ties, so max-type ops are differentiable and FD is valid."""
    n = int(np.prod(shape))
    values = (np.random.default_rng(seed).permutation(n) + 0.5) / n * 4 - 2  # never 0 (abs is not differentiable there)
    return jnp.asarray(values.reshape(shape), dtype)


def _dot(a, b):
    return sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("name", sorted(OPS))
def test_jvp_agrees_with_vjp_and_finite_differences(name):
    op = OPS[name]
    x = _tie_free((2, 8, 8, 3))
    v = jnp.asarray(np.random.default_rng(1).standard_normal(x.shape), jnp.float32)
    y, jv = jax.jvp(op, (x,), (v,))
    u = jnp.asarray(np.random.default_rng(2).standard_normal(y.shape), jnp.float32)
    (vju,) = jax.vjp(op, x)[1](u)
    np.testing.assert_allclose(_dot(u, jv), _dot(vju, v), rtol=2e-4, atol=2e-4)
    # linearize gives the same map
    y_lin, f_lin = jax.linearize(op, x)
    np.testing.assert_allclose(f_lin(v), jv, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y_lin, y)
    # central finite differences in float64 on the tie-free input (steps far below the value gaps)
    with jax.enable_x64():
        x64, v64 = x.astype(jnp.float64), v.astype(jnp.float64)
        eps = 1e-6
        fd = (op(x64 + eps * v64) - op(x64 - eps * v64)) / (2 * eps)
        _, jv64 = jax.jvp(op, (x64,), (v64,))
    np.testing.assert_allclose(jv64, fd, rtol=1e-4, atol=1e-4)


# Ops for the second-order and structural checks: one representative of every derivative rule.
SECOND_ORDER = [
    "max_pool 3x3/2 p1",
    "max_pool tiling 8x8 (global)",
    "max_pool 7x7/1 (chained)",
    "max_pool 8x9/(1,3) (blocked)",
    "max_pool 3x3/2 on 7 (edges)",
    "avg_pool 3x3/2 p1",
    "avg_pool 3x3/2 p1 on 7 (edges)",
    "avg_pool 9x9/1 (separable)",
    "adaptive_max_pool uneven",
    "adaptive_max_pool 1-D 62->4 (long bins)",
    "adaptive_avg_pool uneven",
    "lp_pool",
    "gem_pool",
    "stochastic_pool",
    "stochastic_pool deterministic",
    "blur_pool",
    "soft_pool",
    "gated_pool",
    "spatial_pyramid_pool max",
]


HESSIAN_ALSO = [
    "mixed_pool",
    "fractional_max_pool",
    "median_pool",
    "max_blur_pool",
    "max_unpool",
    "max_unpool in windows",
    "tree_pool",
    "global_max_pool",
]


@pytest.mark.parametrize("name", SECOND_ORDER + HESSIAN_ALSO)
def test_jacfwd_jacrev_hessian(name):
    op = OPS[name]
    x = _tie_free((1, 8, 8, 1))
    np.testing.assert_allclose(jax.jacfwd(op)(x), jax.jacrev(op)(x), rtol=1e-5, atol=1e-6)
    scalar = lambda v: jnp.sum(jnp.sin(op(v)))  # noqa: E731
    h_fwd = jax.hessian(scalar)(x)  # forward over reverse
    h_rev = jax.jacrev(jax.jacrev(scalar))(x)  # reverse over reverse
    np.testing.assert_allclose(h_fwd, h_rev, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_jit_vmap_checkpoint_scan(name):
    op = OPS[name]
    xs = _tie_free((3, 2, 8, 8, 2))
    expected = jnp.stack([op(x) for x in xs])
    np.testing.assert_allclose(jax.jit(jax.vmap(op))(xs), expected, rtol=1e-6, atol=1e-6)
    # vmap over a non-leading axis (the channel axis of the input)
    moved = jnp.moveaxis(xs, 0, -1)  # (2, 8, 8, 2, 3): map over the last axis
    per_channel = jax.vmap(op, in_axes=-1, out_axes=0)(moved)
    np.testing.assert_allclose(per_channel, expected, rtol=1e-6, atol=1e-6)
    loss = lambda v: jnp.sum(op(v) ** 2)  # noqa: E731
    g = jax.grad(loss)(xs[0])
    np.testing.assert_allclose(jax.grad(jax.checkpoint(loss))(xs[0]), g, rtol=1e-6, atol=1e-6)

    def body(carry, x):
        return carry + loss(x), None

    total, _ = jax.lax.scan(body, 0.0, xs)
    np.testing.assert_allclose(total, sum(loss(x) for x in xs), rtol=1e-5)
    grads = jax.grad(lambda v: jax.lax.scan(body, 0.0, v)[0])(xs)
    np.testing.assert_allclose(grads[0], g, rtol=1e-5, atol=1e-6)


def test_integer_inputs_pool_exactly_under_jit():
    x = jnp.arange(2 * 9 * 9 * 2, dtype=jnp.int32).reshape(2, 9, 9, 2) % 17
    y = jax.jit(lambda v: jaxpool.max_pool(v, (9, 9), 1))(x)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y, np.max(np.asarray(x), axis=(1, 2), keepdims=True))
