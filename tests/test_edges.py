"""Axes that are not a multiple of their stride (jaxpool._lowering "edges": an even body and a thin
edge, jaxpool._edges): values, indices, gradients and tangents against the NumPy reference."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

import jaxpool
from jaxpool import _edges, _lowering
from jaxpool._geometry import window_geometry
from tests import reference as ref
from tests.hlo import barriers
from tests.layouts import from_layout, random_input, to_layout
from tests.strategies import every_window_touches_input


@st.composite
def _ragged_windows(draw, dilated: bool):
    """Small windows over 1-3 spatial axes (sums: 1-2, at most 16 elements) with strides up to 2
    (dilated up to 2); the first axis has stride 2 and an odd size."""
    n = draw(st.integers(1, 3 if dilated else 2))
    window = tuple(draw(st.integers(1, 4)) for _ in range(n))
    strides = (2,) + tuple(draw(st.integers(1, 2)) for _ in range(n - 1))
    dilation = tuple(draw(st.integers(1, 2 if dilated else 1)) for _ in range(n))
    spatial = tuple(draw(st.integers(d * (k - 1) + 1, d * (k - 1) + 10)) for k, d in zip(window, dilation))
    spatial = (spatial[0] | 1,) + spatial[1:]
    pad = tuple(draw(st.integers(0, k // 2)) for k in window)
    ceil_mode = draw(st.booleans())
    pairs = tuple((p, p) for p in pad)
    assume(every_window_touches_input(spatial, window, strides, pairs, dilation, ceil_mode))
    return dict(spatial=spatial, window=window, strides=strides, dilation=dilation, padding=pad, pairs=pairs, ceil_mode=ceil_mode)


def takes_edges(g, reduction: str) -> bool:
    geom = window_geometry(g["spatial"], g["window"], g["strides"], g["padding"], g["dilation"], g["ceil_mode"])
    return _lowering.choose(geom, reduction) == "edges"


def _values_and_derivatives(call, x, out_shape, data_format, rng, extra=None):
    """``(ct, t, [y, dx, tangent, *extra(x)])`` of ``call`` under one jit, back in ``(B, C, *S)``
    layout, for a random cotangent ``ct`` and tangent ``t``."""
    ct = rng.normal(size=out_shape).astype(np.float32)
    t = rng.normal(size=x.shape).astype(np.float32)

    @jax.jit
    def everything(v, ct, t):
        y, vjp = jax.vjp(call, v)
        return (y, vjp(ct)[0], jax.jvp(call, (v,), (t,))[1]) + (() if extra is None else (extra(v),))

    outs = everything(*(jnp.asarray(to_layout(a, data_format, (2,))) for a in (x, ct, t)))
    return ct, t, [from_layout(o, data_format, (2,)) for o in outs]


@given(
    g=_ragged_windows(dilated=True),
    data_format=st.sampled_from(["channels_last", "channels_first"]),
    seed=st.integers(0, 2**16),
)
def test_ragged_max_matches_reference(g, data_format, seed):
    assume(takes_edges(g, "extremum"))
    rng = np.random.default_rng(seed)
    x = random_input(rng, (2, 3) + g["spatial"], "special")
    args = (g["window"], g["strides"], g["pairs"], g["dilation"], g["ceil_mode"])
    want, want_idx = ref.max_pool(x, *args)
    kwargs = dict(dilation=g["dilation"], ceil_mode=g["ceil_mode"], data_format=data_format)
    call = lambda v: jaxpool.max_pool(v, g["window"], g["strides"], g["padding"], **kwargs)  # noqa: E731
    index = lambda v: jaxpool.max_pool(v, g["window"], g["strides"], g["padding"], return_indices=True, **kwargs)[1]  # noqa: E731
    ct, t, (y, dx, tangent, idx) = _values_and_derivatives(call, x, want.shape, data_format, rng, index)
    np.testing.assert_array_equal(y, want.astype(np.float32))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dx, ref.max_pool_grad(x, ct, *args), rtol=1e-5, atol=1e-5)
    flat = lambda a: a.reshape(a.shape[:2] + (-1,))  # noqa: E731
    routed = np.take_along_axis(flat(t), flat(np.maximum(want_idx, 0)), 2).reshape(want.shape)
    np.testing.assert_array_equal(tangent, routed)


@given(
    g=_ragged_windows(dilated=False),
    count_include_pad=st.booleans(),
    data_format=st.sampled_from(["channels_last", "channels_first"]),
    seed=st.integers(0, 2**16),
)
def test_ragged_avg_matches_reference(g, count_include_pad, data_format, seed):
    assume(takes_edges(g, "sum"))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 3) + g["spatial"]).astype(np.float32)
    args = (g["window"], g["strides"], g["pairs"], g["ceil_mode"], count_include_pad)
    want = ref.avg_pool(x, *args)
    kwargs = dict(ceil_mode=g["ceil_mode"], count_include_pad=count_include_pad, data_format=data_format)
    call = lambda v: jaxpool.avg_pool(v, g["window"], g["strides"], g["padding"], **kwargs)  # noqa: E731
    ct, t, (y, dx, tangent) = _values_and_derivatives(call, x, want.shape, data_format, rng)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, ref.avg_pool_grad(x, ct, *args), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tangent, ref.avg_pool(t, *args), rtol=1e-5, atol=1e-5)


def test_parts_cover_every_output_once():
    """Body and edge outputs partition the outputs, and every part's windows are the whole's."""
    for n, k, s, lo, hi in [(57, 3, 2, 1, 1), (55, 3, 2, 0, 0), (9, 4, 3, 2, 2), (13, 2, 2, 0, 0), (8, 3, 3, 1, 1)]:
        geom = window_geometry((n,), (k,), (s,), ((lo, hi),))
        parts = _edges.axis_parts(geom, 0)
        if n % s == 0:
            assert parts is None
            continue
        assert parts is not None
        assert sum(g.out_shape[0] for _, _, g in parts) == geom.out_shape[0]
        whole = geom.tap_positions(0)
        pieces = np.concatenate([g.tap_positions(0) + start for start, _, g in parts])
        np.testing.assert_array_equal(pieces, whole)
        assert parts[0][1] % s == 0  # the body is a multiple of the stride


def test_cotangent_once_is_the_identity_in_every_transformation():
    from jaxpool._fusion import cotangent_once

    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)
    f = lambda v: jnp.sum(jnp.sin(v) * v[::-1])  # noqa: E731
    g = lambda v: f(cotangent_once(v))  # noqa: E731
    for transform in (jax.grad, lambda h: jax.jit(jax.grad(h)), jax.hessian, lambda h: jax.jacfwd(jax.grad(h))):
        np.testing.assert_allclose(transform(g)(x), transform(f)(x), rtol=1e-6)
    np.testing.assert_allclose(jax.jvp(g, (x,), (x,))[1], jax.jvp(f, (x,), (x,))[1], rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(g))(x[:, None]), jax.vmap(jax.grad(f))(x[:, None]), rtol=1e-6)


def test_edge_parts_share_one_derivative_over_the_whole_window():
    """The parts are values only: the gradient and the tangent come from one map over the whole
    geometry (jaxpool.max.route_offsets), not from the parts' slices, whose cotangents were
    computed apart (a barrier on XLA:CPU per part) and padded into the input's gradient."""
    x = jnp.ones((2, 57, 57, 3))
    pool = lambda v: jaxpool.max_pool(v, (3, 3), 2, 1)  # noqa: E731
    count = lambda fn, *a: barriers(jax.jit(fn).lower(*a).compile().as_text(), "f32[2,56,56,3]")  # noqa: E731
    assert count(jax.grad(lambda v: pool(v).sum()), x) == 0
    assert count(lambda v, t: jax.jvp(pool, (v,), (t,)), x, x) == 0
