"""avg_pool / lp_pool against the NumPy reference: values, gradients, divisors, dtypes, HLO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxpool
from jaxpool import _lowering
from jaxpool._geometry import window_geometry
from tests import reference as ref
from tests.hlo import assert_one_device_program_is_local, compiled_opcodes
from tests.layouts import from_layout, random_input, to_layout
from tests.strategies import layouts, pool_geometry


def _vjp_against_reference(fn, x, data_format, batch_shape, want, want_grad_fn, rng, rtol=1e-5):
    xj = jnp.asarray(to_layout(x, data_format, batch_shape))
    y, vjp = jax.vjp(fn, xj)
    np.testing.assert_allclose(from_layout(y, data_format, batch_shape), want, rtol=rtol, atol=1e-5)
    ct = rng.normal(size=want.shape).astype(np.float32)
    (dx,) = vjp(jnp.asarray(to_layout(ct, data_format, batch_shape)))
    np.testing.assert_allclose(from_layout(dx, data_format, batch_shape), want_grad_fn(ct), rtol=rtol, atol=1e-5)


@given(
    g=pool_geometry(dilation=False),
    layout=layouts,
    count_include_pad=st.booleans(),
    divisor=st.sampled_from([None, 1, 5]),
    seed=st.integers(0, 2**16),
)
def test_avg_pool_matches_reference(g, layout, count_include_pad, divisor, seed):
    data_format, batch_shape = layout
    rng = np.random.default_rng(seed)
    x = random_input(rng, (max(1, int(np.prod(batch_shape))), 2) + g["spatial"], "normal")
    args = (g["window"], g["strides"], g["pairs"], g["ceil_mode"], count_include_pad, divisor)
    _vjp_against_reference(
        lambda v: jaxpool.avg_pool(
            v,
            g["window"],
            g["strides"],
            g["padding"],
            ceil_mode=g["ceil_mode"],
            count_include_pad=count_include_pad,
            divisor_override=divisor,
            data_format=data_format,
        ),
        x,
        data_format,
        batch_shape,
        ref.avg_pool(x, *args),
        lambda ct: ref.avg_pool_grad(x, ct, *args),
        rng,
    )


@given(
    g=pool_geometry(dilation=False),
    layout=layouts,
    p=st.sampled_from([1, 2, 3, 1.5]),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_lp_pool_matches_reference(g, layout, p, signed, seed):
    data_format, batch_shape = layout
    rng = np.random.default_rng(seed)
    x = random_input(rng, (max(1, int(np.prod(batch_shape))), 2) + g["spatial"], "normal")
    x = x if signed and p in (1, 3) else np.abs(x) + 0.1  # fractional powers need non-negative inputs
    args = (g["window"], g["strides"], g["pairs"], g["ceil_mode"])
    _vjp_against_reference(
        lambda v: jaxpool.lp_pool(
            v, p, g["window"], g["strides"], g["padding"], ceil_mode=g["ceil_mode"], data_format=data_format
        ),
        x,
        data_format,
        batch_shape,
        ref.lp_pool(x, p, *args),
        lambda ct: ref.lp_pool_grad(x, ct, p, *args),
        rng,
        rtol=1e-4,
    )


def test_lp_pool_zero_window_has_zero_gradient_and_inf_is_max():
    x = jnp.zeros((1, 4, 4, 1)).at[0, 0, 0, 0].set(2.0)
    dx = jax.grad(lambda v: jaxpool.lp_pool(v, 2, (2, 2)).sum())(x)
    assert np.isfinite(np.asarray(dx)).all()
    np.testing.assert_array_equal(jaxpool.lp_pool(x, float("inf"), (2, 2)), jaxpool.max_pool(x, (2, 2)))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("op", ["avg", "lp"])
def test_half_precision_accumulates_in_float32(dtype, op):
    """The result is the float32 answer rounded once: a half-precision running sum is far worse."""
    x = np.random.default_rng(0).uniform(0.5, 1.5, size=(2, 32, 32, 8)).astype(np.float32)
    xh = jnp.asarray(x, dtype)
    canon = np.moveaxis(np.asarray(xh.astype(jnp.float32)), -1, 1).astype(np.float64)
    if op == "avg":
        y = jaxpool.avg_pool(xh, (8, 8), 8)
        want = ref.avg_pool(canon, (8, 8), (8, 8), ((0, 0), (0, 0)), False)
    else:
        y = jaxpool.lp_pool(xh, 2, (8, 8), 8)
        want = ref.lp_pool(canon, 2, (8, 8), (8, 8), ((0, 0), (0, 0)), False)
    assert y.dtype == dtype
    got = np.moveaxis(np.asarray(y.astype(jnp.float32)), -1, 1)
    np.testing.assert_array_equal(got, np.asarray(jnp.asarray(want, jnp.float32).astype(dtype).astype(jnp.float32)))


def test_integer_input_averages_to_float32():
    x = np.arange(2 * 3 * 6 * 6, dtype=np.int32).reshape(2, 3, 6, 6)
    y = jaxpool.avg_pool(x, (3, 3), 2, 1, data_format="channels_first")
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, ref.avg_pool(x.astype(np.float64), (3, 3), (2, 2), ((1, 1), (1, 1)), False), rtol=1e-6)


@pytest.mark.parametrize(
    "spatial, window, strides, padding, ceil_mode",
    [
        ((11, 10), (3, 3), (3, 3), 1, False),
        ((16, 16), (4, 4), (3, 3), 0, False),
        ((13, 17), (3, 5), (3, 4), (1, 2), False),
        ((14, 13), (3, 3), (3, 3), 1, True),
        ((20,), (5,), (3,), 2, False),
        ((7, 8, 9), (2, 2, 2), (3, 3, 3), 1, False),
        ((12, 12), (5, 5), (2, 2), 2, False),  # the joint strided sums below: transposed by spread
        ((8, 10, 12), (3, 3, 3), (2, 2, 2), 1, False),
        ((10, 14), (4, 4), (2, 2), 1, False),
        ((12, 16), (5, 3), (2, 4), (2, 1), False),
        ((10,), (5,), (2,), 2, False),
        ((13, 11), (4, 4), (2, 2), 1, True),  # ragged, split: 16 taps over 4 per phase
    ],
)
def test_strided_tap_sums_in_every_mode(spatial, window, strides, padding, ceil_mode):
    """Sums of windows strided by >= 3 take their value from strided slices of the unpadded input
    and their derivative from phase-view taps (jaxpool.avg._unpadded_tap_sum); strided phase-view
    sums are evaluated as called taps and transposed by jaxpool._taps.spread (the framed sum). The
    NumPy reference decides all: the value, the gradient, and (avg_pool being linear) the
    forward-mode tangent, which must be the reference's average of the tangent."""
    rng = np.random.default_rng(len(spatial) * 100 + sum(window))
    x = random_input(rng, (2, 3) + spatial, "normal")
    t = random_input(rng, x.shape, "normal")
    pairs = tuple((p, p) for p in ((padding,) * len(spatial) if isinstance(padding, int) else padding))
    args = (window, strides, pairs, ceil_mode)
    f = lambda v: jaxpool.avg_pool(v, window, strides, padding, ceil_mode=ceil_mode, data_format="channels_first")
    y, tangent = jax.jvp(f, (jnp.asarray(x),), (jnp.asarray(t),))
    np.testing.assert_allclose(y, ref.avg_pool(x, *args), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tangent, ref.avg_pool(t, *args), rtol=1e-5, atol=1e-6)
    ct = rng.normal(size=y.shape).astype(np.float32)
    (dx,) = jax.vjp(f, jnp.asarray(x))[1](jnp.asarray(ct))
    np.testing.assert_allclose(dx, ref.avg_pool_grad(x, ct, *args), rtol=1e-5, atol=1e-6)
    geom = window_geometry(spatial, window, strides, pairs, None, ceil_mode)
    if _lowering.sums_by_passes(geom):  # inference sums axis by axis: the same values reassociated
        np.testing.assert_allclose(jax.jit(f)(x), y, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(jax.jit(f)(x), y)  # the same taps in the same order, under jit too


@pytest.mark.parametrize("window, strides, padding", [((5, 5), 2, 2), ((3, 3, 3), 2, 1)])
def test_framed_transpose_in_higher_orders_and_vmap(window, strides, padding):
    """The strided sums' own transpose (a jaxpool._linear primitive) through every composition of
    modes: hessian-vector products of sum(avg(x)**2) (forward over reverse, reverse over reverse)
    equal the reference's 2 A^T A v, and vmap over a non-batch axis equals the loop."""
    nd = len(window)
    rng = np.random.default_rng(nd)
    x = random_input(rng, (2, 3) + (8,) * nd, "normal")
    v = random_input(rng, x.shape, "normal")
    pairs = ((padding, padding),) * nd
    args = (window, (strides,) * nd, pairs, False)
    f = lambda u: jaxpool.avg_pool(u, window, strides, padding, data_format="channels_first")  # noqa: E731
    loss = lambda u: jnp.sum(f(u) ** 2)  # noqa: E731
    want = 2 * ref.avg_pool_grad(x, ref.avg_pool(v, *args), *args)
    forward_over_reverse = jax.jvp(jax.grad(loss), (jnp.asarray(x),), (jnp.asarray(v),))[1]
    reverse_over_reverse = jax.grad(lambda u: jnp.vdot(jax.grad(loss)(u), jnp.asarray(v)))(jnp.asarray(x))
    np.testing.assert_allclose(forward_over_reverse, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reverse_over_reverse, want, rtol=1e-5, atol=1e-6)
    batched = jax.vmap(jax.grad(loss), in_axes=1, out_axes=1)(jnp.asarray(x)[:, :, None])
    looped = np.stack([jax.grad(loss)(jnp.asarray(x)[:, c : c + 1]) for c in range(3)], axis=1)
    np.testing.assert_allclose(batched, looped, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("window, strides, padding", [((2, 2), None, 0), ((3, 3), 2, 1), ((3, 3), 1, "SAME")])
def test_avg_backward_is_scatter_free(window, strides, padding):
    x = jnp.ones((2, 16, 16, 4))
    ops = compiled_opcodes(jax.grad(lambda v: jaxpool.avg_pool(v, window, strides, padding).sum()), x)
    assert ops["fusion"] > 0 and ops["scatter"] == 0 and ops["reduce-window"] == 0


def test_vmap_and_jit():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 9, 9, 4)), jnp.float32)
    pool = lambda v: jaxpool.avg_pool(v, (3, 3), 2, 1, count_include_pad=False)  # noqa: E731
    np.testing.assert_allclose(jax.vmap(pool)(x), pool(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(pool)(x), pool(x), rtol=1e-6)


@pytest.mark.parametrize(
    "window, strides, padding",
    [((3, 3), 2, 1), ((5, 5), 1, 2), ((3, 3, 3), 2, 1), ((3, 3), 1, 0), ((5, 5), 3, 1)],  # the last two: drifting windows
)
def test_halo_partitioning_leaves_the_one_device_program(window, strides, padding):
    """Window sums are custom-partitioned for spatially sharded inputs (jaxpool._halo), not on one device."""
    x = jnp.asarray(random_input(np.random.default_rng(3), (2, *[12] * len(window), 8), "normal"))
    assert_one_device_program_is_local(lambda v: jaxpool.avg_pool(v, window, strides, padding), x)
