"""max_unpool given its pooling window (window_shape / strides / padding / dilation): values,
repeated indices, dropped indices and derivatives against tests/reference.py, and its errors."""

import math
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxpool
from jaxpool import _lowering
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
    data_format, batch_shape = layout
    rng = np.random.default_rng(seed)
    b = math.prod(batch_shape)
    x = random_input(rng, (b, 2, *g["spatial"]))
    _, indices = ref.max_pool(x, g["window"], g["strides"], g["pairs"], g["dilation"], g["ceil_mode"])
    indices = np.asarray(indices).copy()
    if scrambled:
        volume = math.prod(g["spatial"])
        stray = rng.random(indices.shape) < 0.3
        indices[stray] = rng.integers(-2, volume + 2, size=int(stray.sum()))
    y = rng.normal(size=indices.shape).astype(np.float32)  # distinct: the kept one shows
    y[rng.random(y.shape) < 0.1] = -0.0
    y[rng.random(y.shape) < 0.05] = np.nan
    y = np.where(np.isnan(y), 0, y * 100).astype(dtype) if dtype == np.int32 else y
    want, kept = ref.max_unpool_in_windows(
        y, indices, g["spatial"], g["window"], g["strides"], g["pairs"], g["dilation"], g["ceil_mode"]
    )

    def unpool(v, i):
        return jaxpool.max_unpool(
            v,
            i,
            g["spatial"],
            window_shape=g["window"],
            strides=g["strides"],
            padding=g["padding"],
            dilation=g["dilation"],
            data_format=data_format,
        )

    put = lambda a: to_layout(a, data_format, batch_shape)  # noqa: E731
    take = lambda a: from_layout(a, data_format, batch_shape)  # noqa: E731
    fn = jax.jit(unpool)
    got, vjp = jax.vjp(lambda v: fn(v, put(indices)), put(y))
    _assert_same_bits(take(got), want)
    if dtype == np.int32:
        return  # not differentiable
    ct = rng.normal(size=want.shape).astype(np.float32)
    flat_ct = ct.reshape(ct.shape[:2] + (-1,))
    gathered = np.take_along_axis(flat_ct, np.clip(indices, 0, flat_ct.shape[-1] - 1).reshape(y.shape[:2] + (-1,)), 2)
    np.testing.assert_array_equal(take(vjp(put(ct))[0]), np.where(kept, gathered.reshape(y.shape), 0))
    t = rng.normal(size=y.shape).astype(np.float32)
    _, tangent = jax.jvp(lambda v: fn(v, put(indices)), (put(y),), (put(t),))
    want_tangent, _ = ref.max_unpool_in_windows(
        t, indices, g["spatial"], g["window"], g["strides"], g["pairs"], g["dilation"], g["ceil_mode"]
    )
    _assert_same_bits(take(tangent), want_tangent)


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
