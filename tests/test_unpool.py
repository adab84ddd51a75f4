"""max_unpool with and without its pooling window (window_shape / strides / padding / dilation):
values, repeated indices, dropped indices and derivatives against tests/reference.py, and its errors."""

import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxpool
from jaxpool import _lowering, _scatter
from tests import reference as ref
from tests.layouts import from_layout, random_input, to_layout
from tests.strategies import layouts, pool_geometry


def _assert_same_bits(got, want):
    """Equal values, NaN where NaN, and the same sign of every zero."""
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@settings(max_examples=60, deadline=None)
@given(
    g=pool_geometry(),
    layout=layouts,
    scrambled=st.booleans(),
    routed=st.booleans(),
    dtype=st.sampled_from([np.float32, np.int32]),
    seed=st.integers(0, 2**16),
)
def test_unpool_in_windows_keeps_the_last_writer_and_drops_strays(g, layout, scrambled, routed, dtype, seed):
    """Indices of a max pool of tied values (overlapping windows repeat them) with distinct values
    to write (signed zeros and NaN among them), some indices scrambled (out of range, or outside
    their window) and passed traced; through the route's transpose and through the scatters
    (jaxpool._lowering.unpools_by_route: integers always take the scatters)."""
    with mock.patch.object(_lowering, "UNPOOL_REPEAT_SHIFTS", 10**9 if routed else -1):
        _check_unpool_in_windows(g, layout, scrambled, dtype, seed)


def _check_unpool_in_windows(g, layout, scrambled, dtype, seed):
    rng = np.random.default_rng(seed)
    y, indices = _pooled_and_indices(g, layout, rng, 0.3 if scrambled else 0.0, dtype)
    window = dict(window_shape=g["window"], strides=g["strides"], padding=g["padding"], dilation=g["dilation"])
    reference = lambda v, i: ref.max_unpool_in_windows(  # noqa: E731
        v, i, g["spatial"], g["window"], g["strides"], g["pairs"], g["dilation"], g["ceil_mode"]
    )
    _check_unpool(g["spatial"], window, layout, y, indices, reference, rng)


@settings(max_examples=40, deadline=None)
@given(
    g=pool_geometry(),
    layout=layouts,
    stray=st.sampled_from([0.0, 0.3, 1.0]),
    flattened=st.booleans(),
    dtype=st.sampled_from([np.float32, np.int32]),
    seed=st.integers(0, 2**16),
)
def test_unpool_without_window_keeps_the_last_writer_and_drops_strays(g, layout, stray, flattened, dtype, seed):
    """Any indices (some or all drawn anywhere in and out of range: repeats across windows), written
    by one scatter into the flattened output or one per (batch, channel) plane
    (jaxpool._scatter._FLAT_LIMIT; several devices take the second). Where indices repeat, the
    reference's last writer in row-major order of each plane: XLA:CPU's scatter (where the tests run)
    writes in that order, and the derivatives follow the same writers on every backend."""
    rng = np.random.default_rng(seed)
    y, indices = _pooled_and_indices(g, layout, rng, stray, dtype)
    reference = lambda v, i: ref.max_unpool_latest(v, i, g["spatial"])  # noqa: E731
    with mock.patch.object(_scatter, "_FLAT_LIMIT", 2**31 - 1 if flattened else -1):
        _check_unpool(g["spatial"], {}, layout, y, indices, reference, rng)


def _pooled_and_indices(g, layout, rng, stray, dtype):
    """A max pool's indices of tied values (overlapping windows repeat them), a share ``stray`` of
    them replaced by any position in ``[-2, volume + 2)``, and distinct values to write (signed
    zeros and NaN among them; as integers, NaN made 0)."""
    b = math.prod(layout[1])
    x = random_input(rng, (b, 2, *g["spatial"]))
    _, indices = ref.max_pool(x, g["window"], g["strides"], g["pairs"], g["dilation"], g["ceil_mode"])
    indices = np.asarray(indices).copy()
    volume = math.prod(g["spatial"])
    strays = rng.random(indices.shape) < stray
    indices[strays] = rng.integers(-2, volume + 2, size=int(strays.sum()))
    y = rng.normal(size=indices.shape).astype(np.float32)  # distinct: the kept one shows
    y[rng.random(y.shape) < 0.1] = -0.0
    y[rng.random(y.shape) < 0.05] = np.nan
    if dtype == np.int32:
        y = np.where(np.isnan(y), 0, y * 100).astype(dtype)
    return y, indices


def _check_unpool(spatial, window, layout, y, indices, reference, rng):
    """max_unpool of ``y`` at ``indices`` (passed traced) against ``reference(y, indices) -> (out,
    kept)``, bit for bit; for floats its vjp (the cotangent gathered for the kept values) and jvp."""
    data_format, batch_shape = layout
    want, kept = reference(y, indices)
    put = lambda a: to_layout(a, data_format, batch_shape)  # noqa: E731
    take = lambda a: from_layout(a, data_format, batch_shape)  # noqa: E731
    fn = jax.jit(lambda v, i: jaxpool.max_unpool(v, i, spatial, data_format=data_format, **window))
    got, vjp = jax.vjp(lambda v: fn(v, put(indices)), put(y))
    _assert_same_bits(take(got), want)
    _assert_same_bits(take(fn(put(y), put(indices))), want)
    if y.dtype == np.int32:
        return  # not differentiable
    ct = rng.normal(size=want.shape).astype(np.float32)
    flat_ct = ct.reshape(ct.shape[:2] + (-1,))
    gathered = np.take_along_axis(flat_ct, np.clip(indices, 0, flat_ct.shape[-1] - 1).reshape(y.shape[:2] + (-1,)), 2)
    np.testing.assert_array_equal(take(vjp(put(ct))[0]), np.where(kept, gathered.reshape(y.shape), 0))
    t = rng.normal(size=y.shape).astype(np.float32)
    value, tangent = jax.jvp(lambda v: fn(v, put(indices)), (put(y),), (put(t),))
    _assert_same_bits(take(value), want)
    _assert_same_bits(take(tangent), reference(t, indices)[0])


def test_unpool_in_windows_matches_torch_round_trip():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, (2, 3, 11, 9)).astype(np.float32)  # ties: overlapping windows repeat indices
    for k, s, p, ceil in [((3, 3), (2, 2), (1, 1), False), ((3, 2), (1, 2), (1, 0), False), ((3, 3), (2, 2), (0, 0), True)]:
        ty, ti = torch.nn.functional.max_pool2d(torch.from_numpy(x), k, s, p, ceil_mode=ceil, return_indices=True)
        want = torch.nn.functional.max_unpool2d(ty, ti, k, s, p, output_size=x.shape[2:])
        got = jaxpool.max_unpool(
            ty.numpy(), ti.numpy(), x.shape[2:], window_shape=k, strides=s, padding=p, data_format="channels_first"
        )
        np.testing.assert_array_equal(np.asarray(got), want.numpy())


def test_unpool_in_windows_equals_the_unbounded_unpool():
    """With a max pool's own indices the window changes nothing (values, gradient: the same kept values)."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.integers(0, 3, (2, 9, 8, 3)), jnp.float32)
    y, idx = jaxpool.max_pool(x, (3, 3), 1, 1, return_indices=True)
    plain = lambda v: jaxpool.max_unpool(v, idx, (9, 8))  # noqa: E731
    windowed = lambda v: jaxpool.max_unpool(v, idx, (9, 8), window_shape=(3, 3), strides=1, padding=1)  # noqa: E731
    ct = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    for f in (plain, windowed):
        np.testing.assert_array_equal(f(y), plain(y))
        np.testing.assert_array_equal(jax.vjp(f, y)[1](ct)[0], jax.vjp(plain, y)[1](ct)[0])


def test_unpool_window_errors():
    y, idx = jaxpool.max_pool(jnp.ones((1, 6, 6, 1)), (3, 3), 2, 1, return_indices=True)
    with pytest.raises(TypeError, match="pass window_shape too"):
        jaxpool.max_unpool(y, idx, (6, 6), strides=2)
    with pytest.raises(ValueError, match=r"pooled spatial shape \(3, 3\) is not what window_shape \(3, 3\), strides 3"):
        jaxpool.max_unpool(y, idx, (6, 6), window_shape=(3, 3), strides=3)
    stray = np.asarray(idx).copy()
    stray[0, 2, 0, 0] = 0  # output (2, 0)'s window covers rows 3-5
    with pytest.raises(ValueError, match=r"indices\[0, 2, 0, 0\] = 0 lies outside its output's window"):
        jaxpool.max_unpool(y, stray, (6, 6), window_shape=(3, 3), strides=2, padding=1)
    with pytest.raises(ValueError, match=r"indices\[0, 2, 0, 0\] = 0 lies outside"):  # a constant under jit too
        jax.jit(lambda v: jaxpool.max_unpool(v, stray, (6, 6), window_shape=(3, 3), strides=2, padding=1))(y)
