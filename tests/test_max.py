"""max_pool / min_pool against the NumPy reference: values, indices, the max-index gradient,
dtypes, ties and NaN, the XLA path, transforms, compiled HLO and residual memory."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jaxpool
from jaxpool import _lowering
from jaxpool._geometry import window_geometry
from tests import reference as ref
from tests.hlo import barriers, compiled_opcodes
from tests.layouts import from_layout, random_input, to_layout
from tests.lowerings import doubling
from tests.strategies import every_window_touches_input, layouts, pool_geometry

OPS = {"max": (jaxpool.max_pool, ref.max_pool, ref.max_pool_grad), "min": (jaxpool.min_pool, ref.min_pool, ref.min_pool_grad)}


def _call(op, x, g, data_format, **extra):
    return op(
        x,
        g["window"],
        g["strides"],
        g["padding"],
        dilation=g["dilation"],
        ceil_mode=g["ceil_mode"],
        data_format=data_format,
        **extra,
    )


@given(
    g=pool_geometry(),
    layout=layouts,
    kind=st.sampled_from(["ties", "special", "normal"]),
    mode=st.sampled_from(["max", "min"]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_values_and_gradient(g, layout, kind, mode, seed):
    data_format, batch_shape = layout
    op, ref_op, ref_grad = OPS[mode]
    rng = np.random.default_rng(seed)
    x = random_input(rng, (max(1, int(np.prod(batch_shape))), 2) + g["spatial"], kind)
    args = (g["window"], g["strides"], g["pairs"], g["dilation"], g["ceil_mode"])
    want, _ = ref_op(x, *args)
    xj = jnp.asarray(to_layout(x, data_format, batch_shape))
    y, vjp = jax.vjp(lambda v: _call(op, v, g, data_format), xj)
    np.testing.assert_array_equal(from_layout(y, data_format, batch_shape), want.astype(np.float32))
    ct = rng.normal(size=want.shape).astype(np.float32)
    (dx,) = vjp(jnp.asarray(to_layout(ct, data_format, batch_shape)))
    np.testing.assert_allclose(from_layout(dx, data_format, batch_shape), ref_grad(x, ct, *args), rtol=1e-5, atol=1e-5)


@given(g=pool_geometry(), layout=layouts, seed=st.integers(0, 2**16))
def test_indices_match_reference_and_unpool_inverts(g, layout, seed):
    data_format, batch_shape = layout
    x = random_input(np.random.default_rng(seed), (max(1, int(np.prod(batch_shape))), 3) + g["spatial"], "special")
    want, want_idx = ref.max_pool(x, g["window"], g["strides"], g["pairs"], g["dilation"], g["ceil_mode"])
    y, idx = _call(jaxpool.max_pool, jnp.asarray(to_layout(x, data_format, batch_shape)), g, data_format, return_indices=True)
    assert idx.dtype == jnp.int32
    np.testing.assert_array_equal(from_layout(idx, data_format, batch_shape), want_idx)
    restored = jaxpool.max_unpool(y, idx, g["spatial"], data_format=data_format)
    np.testing.assert_array_equal(
        from_layout(restored, data_format, batch_shape), ref.max_unpool(want, want_idx, g["spatial"]).astype(np.float32)
    )


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize(
    "window, strides, padding, size",
    [
        ((9, 9), (2, 2), 4, 14),
        ((5, 5, 3), (1, 2, 1), 0, 8),
        ((65,), (7,), 32, 70),
        # Tiling (stride == window): the one-broadcast backward, with a truncated remainder, padding
        # and a ceil_mode overhang.
        ((9, 9), None, 0, 20),
        ((9, 8), None, (1, 3), 22),
        ((5, 4, 4), None, 0, 11),
    ],
)
def test_large_windows_fold_axis_by_axis(window, strides, padding, size, data_format):
    """Windows over JOINT_FOLD_LIMIT elements take the axis-by-axis fold; same rules apply."""
    assert np.prod(window) > jaxpool.max.JOINT_FOLD_LIMIT
    n = len(window)
    rng = np.random.default_rng(0)
    x = random_input(rng, (2, 2) + (size,) * n, "special")
    pairs = tuple((p, p) for p in (padding if isinstance(padding, tuple) else (padding,) * n))
    call = lambda v, **kw: jaxpool.max_pool(v, window, strides, padding, ceil_mode=True, data_format=data_format, **kw)
    args = (window, window if strides is None else strides, pairs, (1,) * n, True)
    want, want_idx = ref.max_pool(x, *args)
    xj = jnp.asarray(to_layout(x, data_format, (2,)))
    y, idx = call(xj, return_indices=True)
    np.testing.assert_array_equal(from_layout(y, data_format, (2,)), want.astype(np.float32))
    np.testing.assert_array_equal(from_layout(idx, data_format, (2,)), want_idx)
    ct = rng.normal(size=want.shape).astype(np.float32)
    dx = jax.vjp(call, xj)[1](jnp.asarray(to_layout(ct, data_format, (2,))))[0]
    np.testing.assert_allclose(from_layout(dx, data_format, (2,)), ref.max_pool_grad(x, ct, *args), rtol=1e-5, atol=1e-5)


def test_global_max_of_a_large_map_compiles_quickly():
    """A 56x56 global window has 3136 taps: its backward must not emit one array per tap (which took
    XLA:CPU four minutes to compile); the tiling backward is one broadcast."""
    x = jnp.ones((2, 56, 56, 4))
    lowered = jax.jit(jax.grad(lambda v: jaxpool.global_max_pool(v).sum())).lower(x)
    assert lowered.as_text().count("\n") < 2000


def test_global_extremum_window_uses_wide_offsets():
    x = random_input(np.random.default_rng(1), (1, 2, 20, 20), "ties")
    y, idx = jaxpool.max_pool(x, (20, 20), return_indices=True, data_format="channels_first")
    want, want_idx = ref.max_pool(x, (20, 20), (20, 20), ((0, 0), (0, 0)), (1, 1), False)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(y, want)


def test_ties_go_to_first_and_nan_wins_last():
    x = jnp.asarray([1.0, 5.0, 5.0, np.nan, 2.0, np.nan, 0.0, 0.0])[None, :, None]
    y, idx = jaxpool.max_pool(x, (4,), return_indices=True)
    np.testing.assert_array_equal(np.asarray(idx)[0, :, 0], [3, 5])
    assert np.isnan(np.asarray(y)).all()
    y, idx = jaxpool.max_pool(x[:, :3], (3,), return_indices=True)
    assert int(idx[0, 0, 0]) == 1  # first of the tied fives
    g = jax.grad(lambda v: jaxpool.max_pool(v, (4,)).sum())(jnp.asarray([1.0, np.nan, 3.0, np.nan])[None, :, None])
    np.testing.assert_array_equal(np.asarray(g)[0, :, 0], [0, 0, 0, 1])


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize(
    "window, strides, padding",
    [
        ((2, 2), (2, 2), 0),
        ((3, 3), (2, 2), 1),
        ((3, 3), (1, 1), 0),
        ((8, 1), (2, 1), 0),
        ((3, 3), (3, 3), 1),
        ((5, 2), (3, 3), 1),
    ],
)
def test_signed_zeros_tie_to_the_first(mode, window, strides, padding):
    """-0.0 and +0.0 are tied maxima (minima): the index and the gradient go to the first in
    row-major window order, as PyTorch's; the value is a zero (its sign follows XLA's max/min,
    documented in docs/semantics.md)."""
    rng = np.random.default_rng(0)
    x = rng.choice(np.asarray([-0.0, 0.0, -1.0 if mode == "max" else 1.0], np.float32), (2, 3, 9, 9))  # (B, C, H, W)
    pool = functools.partial(jaxpool.max_pool if mode == "max" else jaxpool.min_pool, data_format="channels_first")
    pads = ((padding, padding),) * 2
    want, want_idx = getattr(ref, f"{mode}_pool")(x, window, strides, pads, (1, 1), False)
    np.testing.assert_array_equal(np.asarray(pool(jnp.asarray(x), window, strides, padding)), want)  # -0.0 == +0.0
    if mode == "max":
        index = pool(jnp.asarray(x), window, strides, padding, return_indices=True)[1]
        np.testing.assert_array_equal(np.asarray(index), want_idx)
    ct = rng.standard_normal(want.shape).astype(np.float32)
    g = jax.grad(lambda v: jnp.vdot(pool(v, window, strides, padding), ct))(jnp.asarray(x))
    want_g = getattr(ref, f"{mode}_pool_grad")(x, ct, window, strides, pads, (1, 1), False)  # float64 sums
    np.testing.assert_allclose(np.asarray(g), want_g, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_integers_pool_exactly_with_dtype_limits(dtype, mode):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    x = rng.integers(info.min, info.max, size=(2, 3, 7, 7), endpoint=True).astype(dtype)
    x[0, 0, 0, :] = info.min if mode == "max" else info.max  # windows of only extreme values
    op, ref_op, _ = OPS[mode]
    args = ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), True)
    y = op(x, (3, 3), 2, 1, ceil_mode=True, data_format="channels_first")
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ref_op(x, *args)[0])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_is_exact_and_keeps_dtype(dtype):
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 4)).astype(np.float32)
    xh = jnp.asarray(x, dtype)
    y = jaxpool.max_pool(xh, (3, 3), 2, 1)
    assert y.dtype == dtype
    want = ref.max_pool(np.moveaxis(np.asarray(xh.astype(jnp.float32)), -1, 1), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), False)[
        0
    ]
    np.testing.assert_array_equal(np.moveaxis(np.asarray(y.astype(jnp.float32)), -1, 1), want)
    dx = jax.grad(lambda v: jaxpool.max_pool(v, (3, 3), 2, 1).astype(jnp.float32).sum())(xh)
    assert dx.dtype == dtype


@pytest.mark.parametrize("apart", [False, True])
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize(
    "spatial, window, stride, padding",
    [((8, 8), (3, 3), 2, 1), ((9, 9), (3, 3), 2, 1), ((8, 8), (2, 2), 2, 1), ((6, 8, 8), (3, 3, 3), 2, 1), ((8,), (3,), 1, 1)],
)
def test_half_precision_upcast_either_way_matches_reference(spatial, window, stride, padding, dtype, apart, monkeypatch):
    """Padded phase-view folds of 16-bit floats upcast in a loop of their own on hosts without
    16-bit masked loads (jaxpool._lowering.upcasts_apart), in the fold elsewhere: either way the
    values, the PyTorch winner (ties from rounding to 16 bits) and the routed gradient are the
    NumPy reference's, in the input's dtype."""
    monkeypatch.setattr(_lowering, "UPCASTS_16BIT_APART", apart)
    x = np.round(np.random.default_rng(0).normal(size=(2, 3, *spatial)) * 4) / 4  # ties
    x[(0, 0) + (1,) * len(spatial)] = np.nan
    xh = jnp.asarray(x, dtype)
    wide = np.asarray(xh.astype(jnp.float32))
    args = (window, (stride,) * len(window), ((padding, padding),) * len(window), (1,) * len(window), False)
    pool = lambda v: jaxpool.max_pool(v, window, stride, padding, data_format="channels_first")  # noqa: E731
    y, pullback = jax.vjp(pool, xh)
    assert y.dtype == dtype
    want, _ = ref.max_pool(wide, *args)
    np.testing.assert_array_equal(np.asarray(y.astype(jnp.float32)), want)
    g = np.random.default_rng(1).integers(1, 5, size=want.shape).astype(np.float32)  # sums exact in 16 bits
    (dx,) = pullback(jnp.asarray(g, dtype))
    assert dx.dtype == dtype
    np.testing.assert_array_equal(np.asarray(dx.astype(jnp.float32)), ref.max_pool_grad(wide, g, *args))


def test_host_masks_16bit_loads_reads_the_cpu_flags(monkeypatch, tmp_path):
    """The upcast choice follows the host: x86 with AVX-512BW keeps the fused convert, x86 without
    it (or whose flags cannot be read) writes the upcast, other architectures keep the fusion."""
    real_open = open
    cpuinfo = tmp_path / "cpuinfo"

    def host(machine: str, flags: str | None) -> bool:
        _lowering.host_masks_16bit_loads.cache_clear()
        monkeypatch.setattr(_lowering.platform, "machine", lambda: machine)
        if flags is not None:
            cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")

        def fake_open(path, *args, **kwargs):
            if path != "/proc/cpuinfo":
                return real_open(path, *args, **kwargs)
            if flags is None:
                raise FileNotFoundError(path)
            return real_open(cpuinfo, *args, **kwargs)

        monkeypatch.setattr("builtins.open", fake_open)
        try:
            return _lowering.host_masks_16bit_loads()
        finally:
            monkeypatch.setattr("builtins.open", real_open)
            _lowering.host_masks_16bit_loads.cache_clear()

    assert host("x86_64", "fpu sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl") is True
    assert host("x86_64", "fpu sse2 avx avx2 fma avx512f") is False  # AVX-512 without BW: no 16-bit masks
    assert host("x86_64", "fpu sse2 avx avx2 fma") is False
    assert host("AMD64", None) is False
    assert host("aarch64", None) is True
    assert host("arm64", "fp asimd") is True


def test_xla_backward_same_forward_and_supports_forward_mode():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
    pool = lambda v, b: jaxpool.max_pool(v, (3, 3), 2, 1, backward=b)  # noqa: E731
    np.testing.assert_array_equal(pool(x, "xla"), pool(x, "argmax"))
    # tie-free input: both gradients route to the unique maximum
    np.testing.assert_allclose(jax.grad(lambda v: pool(v, "xla").sum())(x), jax.grad(lambda v: pool(v, "argmax").sum())(x))
    t = jnp.ones_like(x)
    _, tangent = jax.jvp(lambda v: pool(v, "xla"), (x,), (t,))
    np.testing.assert_array_equal(tangent, jnp.ones_like(tangent))
    # forward mode of the default rule: on tie-free input both pick the unique maximum's tangent
    t = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)
    tangents = [jax.jvp(lambda v, b=b: pool(v, b), (x,), (t,))[1] for b in ("argmax", "xla")]
    np.testing.assert_array_equal(*tangents)


@pytest.mark.parametrize(
    "spatial, window, stride, padding",
    [((24, 24), (3, 3), 2, 1), ((23, 23), (3, 3), 2, 0), ((25, 25), (3, 3), 2, 1), ((13, 13), (3, 3), 2, 0), ((24,), (3,), 2, 1)],
)
def test_shared_winners_sum_cotangents_in_pytorchs_order(spatial, window, stride, padding):
    """An element that wins several overlapping windows gets their cotangents summed in PyTorch's
    order — its CPU backward adds each output's gradient at its argmax, outputs in row-major order
    — bit for bit in float32 (the route's transpose, jaxpool._taps.spread, sums the taps last to
    first). Peaks at odd positions win up to four 3x3/2 windows; cotangents span eight decades, so
    another order rounds differently."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, *spatial)).astype(np.float32)
    x[(..., *(slice(1, None, 2) for _ in spatial))] += 10.0
    n = len(spatial)
    _, idx = ref.max_pool(x, window, (stride,) * n, ((padding, padding),) * n, (1,) * n, False)
    g = (rng.normal(size=idx.shape) * 10.0 ** rng.uniform(-4, 4, size=idx.shape)).astype(np.float32)
    expected = np.zeros((2, 3, math.prod(spatial)), np.float32)
    b, c, _ = np.indices(idx.reshape(2, 3, -1).shape)
    np.add.at(expected, (b.ravel(), c.ravel(), idx.reshape(2, 3, -1).ravel()), g.reshape(2, 3, -1).ravel())  # in order
    pool = lambda v: jaxpool.max_pool(v, window, stride, padding, data_format="channels_first")  # noqa: E731
    got = jax.vjp(pool, jnp.asarray(x))[1](jnp.asarray(g))[0]
    np.testing.assert_array_equal(np.asarray(got).reshape(expected.shape), expected)


@pytest.mark.parametrize(
    "window, strides, padding, dilation",
    [((2, 2), None, 0, 1), ((3, 3), 2, 1, 1), ((3, 3), 1, "SAME", 2), ((9, 9), 3, 4, 1), ((9, 9), 1, 4, 2)],
)
def test_backward_has_no_scatter_and_small_residuals(window, strides, padding, dilation):
    x = jnp.ones((2, 17, 17, 4))
    pool = lambda v: jaxpool.max_pool(v, window, strides, padding, dilation=dilation)  # noqa: E731
    ops = compiled_opcodes(jax.grad(lambda v: pool(v).sum()), x)
    assert ops["fusion"] > 0 and ops["scatter"] == 0 and ops["select-and-scatter"] == 0
    xla_grad = jax.grad(lambda v: jaxpool.max_pool(v, window, strides, padding, dilation=dilation, backward="xla").sum())
    if dilation == 1:
        xla_ops = compiled_opcodes(xla_grad, x)
        assert xla_ops["select-and-scatter"] + xla_ops["scatter"] > 0
    else:  # JAX has no reverse-mode rule for dilated reduce_window max; the argmax rule does.
        with pytest.raises(NotImplementedError):
            xla_grad(x)
    _, vjp = jax.vjp(pool, x)
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(vjp) if hasattr(leaf, "dtype")]
    residual = sum(leaf.nbytes for leaf in leaves)
    geom = window_geometry(x.shape[1:3], window, strides, padding, dilation)
    if _lowering.choose(geom) != "separable":  # the max-index rule: small integer offsets only
        # at most one byte per element of each one-axis pass (W first, then H), as 1-byte offsets
        (n, h, _, c), (ho, wo) = x.shape, pool(x).shape[1:3]
        assert residual <= n * c * (h * wo + ho * wo) <= x.nbytes / 2
        assert all(leaf.dtype == jnp.uint8 for leaf in leaves)
    else:  # dilated large windows: the input, as flax.linen's reduce_window
        assert residual <= 1.05 * x.nbytes


def _f32_barriers(fn, *args) -> int:
    """jaxpool._fusion's barriers around an activation, its tangent or its cotangent in the compiled
    HLO (the offsets' barriers are uint8)."""
    return barriers(jax.jit(fn).lower(*args).compile().as_text())


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="counts XLA:CPU's fusion barriers; other backends have none")
@pytest.mark.parametrize("window, separated", [((3, 3), False), ((2, 2), False), ((5, 5), True), ((3, 3, 3), True)])
def test_chained_passes_compute_each_derivative_once(window, separated):
    """A chained max computes the input of every pass after the first once under differentiation,
    with its tangent and cotangent (jaxpool._fusion.differentiated_once; fused, XLA:CPU re-read the
    earlier pass's taps at every tap and wrote the later pass's padded input to memory anyway: 3x3/1
    pad 1 forward+backward 0.70-0.77x with the barrier, 5x5/1 2x). Inference keeps the passes fused
    unless their taps multiply past FUSED_PASS_TAPS (5x5/1, and 3x3x3/1's third pass): 2x2/1 ran
    2.8x slower with a barrier. Counted without the barrier every public op puts on its result
    (jaxpool._fusion.results_once)."""
    x = jnp.ones((2,) + (9,) * len(window) + (3,))
    unbarriered_max_pool = jaxpool.max_pool.__wrapped__  # type: ignore[attr-defined]
    pool = lambda v: unbarriered_max_pool(v, window, 1, "SAME")  # noqa: E731
    backward = _f32_barriers(jax.grad(lambda v: pool(v).sum()), x)
    forward_mode = _f32_barriers(lambda v, t: jax.jvp(pool, (v,), (t,)), x, x)
    inference = _f32_barriers(pool, x)
    assert backward >= 2 and forward_mode >= 2, (backward, forward_mode)  # an activation and its derivative
    assert (inference > 0) == separated, inference


@pytest.mark.parametrize(
    "spatial, window, strides, padding, ceil_mode",
    [
        ((6, 8, 10), (3, 3, 3), (2, 2, 2), 1, False),
        ((5, 8, 6), (3, 3, 3), (2, 2, 2), 0, True),
        ((6, 8, 8), (3, 3, 3), (1, 2, 2), 1, False),
        ((7, 6, 10), (2, 3, 2), (3, 2, 2), ((1, 0), (1, 1), (0, 1)), False),
    ],
)
@pytest.mark.parametrize("kind", ["ties", "special"])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_chain_folds_the_inner_pair_of_axes_at_once(spatial, window, strides, padding, ceil_mode, kind, mode):
    """3-D windows whose two inner axes fold stride-2 phase views (jaxpool._lowering.joint_inner_pass)
    run one 2-D pass over them, then a pass along the outer axis: PyTorch's values, its first winner
    on ties and last NaN, and the gradient to it (the 2-D pass's offsets rank its window row-major)."""
    pads = padding if isinstance(padding, tuple) else ((padding, padding),) * 3
    geom = window_geometry(spatial, window, strides, pads, None, ceil_mode)
    assert _lowering.choose(geom, indices=False) == "chained" and _lowering.joint_inner_pass(geom) == (1, 2)
    op, ref_op, ref_grad = OPS[mode]
    rng = np.random.default_rng(7)
    x = random_input(rng, (2, 3) + spatial, kind)
    args = (window, strides, pads, (1, 1, 1), ceil_mode)
    want, _ = ref_op(x, *args)
    call = lambda v: op(v, window, strides, pads, ceil_mode=ceil_mode, data_format="channels_first")  # noqa: E731
    y, vjp = jax.vjp(call, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), want.astype(np.float32))
    ct = rng.normal(size=want.shape).astype(np.float32)
    np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(ct))[0]), ref_grad(x, ct, *args), rtol=1e-5, atol=1e-5)
    tangent = rng.normal(size=x.shape).astype(np.float32)  # forward mode: <ct, J t> = <J^T ct, t>
    jt = jax.jvp(call, (jnp.asarray(x),), (jnp.asarray(tangent),))[1]
    np.testing.assert_allclose(np.vdot(ct, np.asarray(jt)), np.vdot(ref_grad(x, ct, *args), tangent), rtol=1e-4)


class JitVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree(self):
        x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 10, 10, 3)), jnp.float32)
        fn = lambda v: jaxpool.max_pool(v, (3, 3), 2, 1, ceil_mode=True, return_indices=True)  # noqa: E731
        want = ref.max_pool(np.moveaxis(np.asarray(x), -1, 1), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), True)
        y, idx = self.variant(fn)(x)
        np.testing.assert_array_equal(np.moveaxis(np.asarray(y), -1, 1), want[0])
        np.testing.assert_array_equal(np.moveaxis(np.asarray(idx), -1, 1), want[1])


def test_vmap_matches_batch_axes_and_per_example_grads():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 9, 9, 2)), jnp.float32)
    pool = lambda v: jaxpool.max_pool(v, (3, 3), 2, 1)  # noqa: E731
    np.testing.assert_array_equal(jax.vmap(pool)(x), pool(x))
    per_example = jax.jit(jax.vmap(jax.grad(lambda v: (pool(v) ** 2).sum())))(x)
    np.testing.assert_allclose(per_example, jax.grad(lambda v: (pool(v) ** 2).sum())(x), rtol=1e-6)


def test_reverse_over_reverse():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 6, 1)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)
    pool = lambda v: (jaxpool.max_pool(v, (3, 3), 2, 1) ** 2).sum()  # noqa: E731
    hvp = jax.grad(lambda v: jnp.vdot(jax.grad(pool)(v), w))(x)
    # d/dx of 2*y routed to the argmax: the Hessian is diagonal 2 on the argmax elements.
    counts = jax.grad(lambda v: jaxpool.max_pool(v, (3, 3), 2, 1).sum())(x)
    np.testing.assert_allclose(hvp, 2 * counts * w, rtol=1e-6)


@st.composite
def _strided_long_windows(draw, long_stride: bool):
    """Windows longer than AXIS_TAPS with strides 2..k-1 (jaxpool._lowering "blocks", or "chained"
    blocks passes in 2-D) — with ``long_stride``, ``m s + h`` with strides above CORE_TAPS
    (jaxpool._blocks._chunked_blocks: the blocks reduced in pieces of CUT_TAPS, the edge blocks
    over their part inside the input) —, padding up to half the window, ceil_mode; a second axis
    may be short."""
    n = draw(st.integers(1, 2))
    window, strides, spatial = [], [], []
    for axis in range(n):
        if axis == 0 and long_stride:
            s = draw(st.integers(_lowering.CORE_TAPS + 1, 3 * _lowering.CUT_TAPS + 2))
            k = draw(st.integers(1, 3)) * s + draw(st.integers(0, _lowering.AXIS_TAPS))
            size = draw(st.integers(k, 2 * k + 2 * s))
        else:
            k = draw(st.integers(9, 24)) if axis == 0 else draw(st.integers(1, 12))
            s = draw(st.integers(max(1, -(-k // 8)), max(1, k - 1)))
            size = draw(st.integers(k, 3 * k + 5))
        window.append(k)
        strides.append(s)
        spatial.append(size)
    pad = tuple(draw(st.integers(0, k // 2)) for k in window)
    ceil_mode = draw(st.booleans())
    pairs = tuple((p, p) for p in pad)
    assume(every_window_touches_input(tuple(spatial), tuple(window), tuple(strides), pairs, (1,) * n, ceil_mode))
    assume(_lowering.choose(window_geometry(spatial, window, strides, pairs, ceil_mode=ceil_mode)) != "tiling")  # k = s
    return dict(
        spatial=tuple(spatial), window=tuple(window), strides=tuple(strides), padding=pad, pairs=pairs, ceil_mode=ceil_mode
    )


@pytest.mark.parametrize("long_stride", [False, True])
@given(
    data=st.data(),
    data_format=st.sampled_from(["channels_last", "channels_first"]),
    mode=st.sampled_from(["max", "min"]),
    seed=st.integers(0, 2**16),
)
def test_long_strided_windows_match_reference(long_stride, data, data_format, mode, seed):
    """Blocks of the stride plus a head (jaxpool._blocks): values, indices, gradient and tangents
    against the NumPy reference, with ties, NaN, -inf and padding."""
    g = data.draw(_strided_long_windows(long_stride))
    _check_strided_windows(g, data_format, mode, seed)


@st.composite
def _split_long_windows(draw):
    """Windows with an axis longer than RUN_TAPS (9 to 90) at strides 1-3, or a 1-D one longer
    than JOINT_TAPS: "chained" passes that read it as overlapping runs and blocks of runs
    (jaxpool._geometry.WindowGeometry.block_passes), padding up to half the window, ceil_mode; a
    second axis short or long."""
    n = draw(st.integers(1, 2))
    strides = [draw(st.integers(1, 3)) for _ in range(n)]
    shortest = _lowering.RUN_TAPS + 1 if n == 2 else _lowering.JOINT_TAPS + 1
    window = [draw(st.integers(max(shortest, 9 * strides[0]), 90))]  # over 8 strides: not "blocks"
    if n == 2:
        window.append(draw(st.sampled_from([2, 5, 9, 40])))
    spatial = [k + draw(st.integers(0, 6)) for k in window]
    pad = tuple(draw(st.integers(0, k // 2)) for k in window)
    ceil_mode = draw(st.booleans())
    pairs = tuple((p, p) for p in pad)
    assume(every_window_touches_input(tuple(spatial), tuple(window), tuple(strides), pairs, (1,) * n, ceil_mode))
    geom = window_geometry(spatial, window, strides, pairs, ceil_mode=ceil_mode)
    assert _lowering.choose(geom) == "chained" and _lowering.run_blocks(geom, 0) > 1
    return dict(
        spatial=tuple(spatial), window=tuple(window), strides=tuple(strides), padding=pad, pairs=pairs, ceil_mode=ceil_mode
    )


@settings(max_examples=15)  # each example compiles a long window's program
@given(
    g=_split_long_windows(),
    data_format=st.sampled_from(["channels_last", "channels_first"]),
    mode=st.sampled_from(["max", "min"]),
    seed=st.integers(0, 2**16),
)
def test_long_windows_in_runs_and_blocks_match_reference(g, data_format, mode, seed):
    """Two passes along one axis, runs wholly in padding being the second pass's padding: values,
    indices, gradient and tangents against the NumPy reference, with ties, NaN, -inf and padding."""
    _check_strided_windows(g, data_format, mode, seed)


@st.composite
def _disjoint_or_padded_strided(draw):
    """Windows no longer than their stride on every axis (no two share an element: the one-loop
    derivative of jaxpool.max._disjoint_route, with padding, ragged ends and gaps) or, on at least
    one axis, overlapping windows at strides of 3 and more with padding (their winner a chain of
    equality tests against the extremum, jaxpool._taps.first_match). 1-3 spatial axes, ceil_mode."""
    n = draw(st.integers(1, 3))
    overlap = draw(st.booleans())
    window, strides, spatial = [], [], []
    for axis in range(n):
        s = draw(st.integers(3 if overlap else 2, 5))
        k = draw(st.integers(s + 1, 2 * s)) if overlap and axis == 0 else draw(st.integers(1, s))
        window.append(k)
        strides.append(s)
        spatial.append(draw(st.integers(k, k + 4 * s)))
    pad = tuple(draw(st.integers(1 if overlap and axis == 0 else 0, k // 2)) for axis, k in enumerate(window))
    ceil_mode = draw(st.booleans())
    pairs = tuple((p, p) for p in pad)
    assume(every_window_touches_input(tuple(spatial), tuple(window), tuple(strides), pairs, (1,) * n, ceil_mode))
    return dict(
        spatial=tuple(spatial), window=tuple(window), strides=tuple(strides), padding=pad, pairs=pairs, ceil_mode=ceil_mode
    )


@given(
    g=_disjoint_or_padded_strided(),
    data_format=st.sampled_from(["channels_last", "channels_first"]),
    mode=st.sampled_from(["max", "min"]),
    seed=st.integers(0, 2**16),
)
def test_disjoint_and_padded_strided_windows_match_reference(g, data_format, mode, seed):
    """Values, indices, gradient and tangents against the NumPy reference, with ties, NaN, -inf,
    signed zeros and padding."""
    _check_strided_windows(g, data_format, mode, seed)


def _check_strided_windows(g, data_format, mode, seed):
    op, ref_op, ref_grad = OPS[mode]
    rng = np.random.default_rng(seed)
    x = random_input(rng, (2, 3) + g["spatial"], "special")
    n = len(g["window"])
    args = (g["window"], g["strides"], g["pairs"], (1,) * n, g["ceil_mode"])
    want, want_idx = ref_op(x, *args)
    kwargs = dict(ceil_mode=g["ceil_mode"], data_format=data_format)
    call = lambda v: op(v, g["window"], g["strides"], g["padding"], **kwargs)  # noqa: E731
    ct = rng.normal(size=want.shape).astype(np.float32)
    t = rng.normal(size=x.shape).astype(np.float32)

    @jax.jit
    def everything(v, ct, t):  # one compilation per example
        y, vjp = jax.vjp(call, v)
        index = jaxpool.max_pool(v, g["window"], g["strides"], g["padding"], return_indices=True, **kwargs)[1]
        return y, vjp(ct)[0], jax.jvp(call, (v,), (t,))[1], index

    y, dx, tangent, idx = everything(*(jnp.asarray(to_layout(a, data_format, (2,))) for a in (x, ct, t)))
    np.testing.assert_array_equal(from_layout(y, data_format, (2,)), want.astype(np.float32))
    np.testing.assert_allclose(from_layout(dx, data_format, (2,)), ref_grad(x, ct, *args), rtol=1e-5, atol=1e-5)
    flat = lambda a: a.reshape(a.shape[:2] + (-1,))  # noqa: E731
    routed = np.take_along_axis(flat(t), flat(np.maximum(want_idx, 0)), 2).reshape(want.shape)
    np.testing.assert_array_equal(from_layout(tangent, data_format, (2,)), routed)
    if mode == "max":
        np.testing.assert_array_equal(from_layout(idx, data_format, (2,)), want_idx)


def test_xla_cpu_row_reductions_drop_nan():
    """XLA bug (XLA:CPU, jax 0.10): a vectorised max/min reduction along rows ignores NaN —
    ``lax.reduce_max`` of an (8, 1000) float32 array of ones with one NaN gives 1.0 in that row (a
    1-D or a 2-row array gives NaN). jaxpool's reductions take NaN from the winner's score instead
    (jaxpool._sliding.extremum_and_winner); this test pins the bug and tells when the workaround may go."""
    x = np.ones((8, 1000), np.float32)
    x[0, 3] = np.nan
    row = float(jax.jit(lambda v: jax.lax.reduce_max(v, (1,)))(x)[0])
    if jax.default_backend() != "cpu" or math.isnan(row):
        pytest.skip("this backend propagates NaN through row reductions")
    assert row == 1.0


@pytest.mark.parametrize(
    "name, pool",
    [
        ("global", lambda v: jaxpool.global_max_pool(v, keepdims=True)),
        ("tiling 8x8", lambda v: jaxpool.max_pool(v, (8, 8))),
        ("blocks 10x10/9", lambda v: jaxpool.max_pool(v, (10, 10), 9)),
        ("adaptive 64->5 (uneven)", lambda v: jaxpool.adaptive_max_pool(v, (5, 5))),
        ("min global", lambda v: jaxpool.min_pool(v, (64, 64))),
    ],
)
def test_nan_wins_on_large_maps(name, pool):
    """Large reductions, where XLA:CPU's own reduce drops NaN (test above): a NaN still wins its window."""
    x = np.ones((2, 64, 64, 4), np.float32)
    x[0, 10, 12, 1] = x[1, 63, 0, 3] = np.nan
    y = np.asarray(jax.jit(pool)(jnp.asarray(x)))
    assert np.isnan(y[0, ..., 1]).sum() >= 1 and np.isnan(y[1, ..., 3]).sum() >= 1
    assert np.isnan(y).sum() == np.isnan(y[0, ..., 1]).sum() + np.isnan(y[1, ..., 3]).sum()
    g = np.asarray(jax.jit(jax.grad(lambda v: pool(v).sum()))(jnp.asarray(x)))  # each window's gradient goes to its NaN
    assert g[0, 10, 12, 1] == np.isnan(y[0, ..., 1]).sum() and g[1, 63, 0, 3] == np.isnan(y[1, ..., 3]).sum()


@pytest.mark.parametrize(
    "op",
    [
        lambda v: jaxpool.max_pool(v, (3, 3), 2, 1),
        lambda v: jaxpool.max_pool(v, (5, 5), 1, 2),  # chained passes
        lambda v: jaxpool.min_pool(v, (3, 3), 1, "SAME"),
        lambda v: jaxpool.max_pool(v, (3, 3), 4, 1),  # disjoint windows
        lambda v: jaxpool.max_pool(v, (3, 3), 2, 1, return_indices=True)[1].astype(v.dtype),
        lambda v: jaxpool.max_pool(v.reshape(2, 4, 3, 12, 8), (3, 3, 3), 2, 1),  # joint inner pass
        lambda v: jaxpool.max_pool(v.astype(jnp.bfloat16), (3, 3), 1, 1).astype(v.dtype),
        lambda v: jaxpool.max_pool(v, (9, 9), 1, 4),  # chained passes of 9 taps
        lambda v: jaxpool.max_pool(v, (33, 3), 1, (16, 1)),  # runs, then blocks of runs along H
        doubling(lambda v: jaxpool.max_pool(v, (9, 9), 1, 4)),  # separable: the doubling scheme and its linear pair
    ],
    ids=["3x3/2 p1", "5x5/1 p2", "min SAME", "3x3/4 p1", "indices", "3-D 3x3x3/2 p1", "bf16 3x3/1 p1"]
    + ["9x9/1 p4", "33x3/1 p16", "doubling"],
)
def test_halo_partitioning_leaves_the_one_device_program(op):
    """Max pooling is custom-partitioned for spatially sharded inputs (jaxpool._halo: its extremum
    and offsets, its route's tangent and exact transpose), not on one device."""
    from tests.hlo import assert_one_device_program_is_local

    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 12, 12, 8), dtype=np.float32))
    assert_one_device_program_is_local(op, x)


def test_program_comparison_ignores_backend_tuning():
    """The comparison above reads instructions without their ``backend_config`` (nested JSON that
    XLA:GPU prints on every fusion: launch and autotuned choices), and still tells programs apart."""
    from tests.hlo import _without_backend_config

    fusion = "%f = f32[8]{0} fusion(%p), kind=kLoop, calls=%c"
    tuned = [fusion + ', backend_config={"kind":{"__loop":{"tile":[TILE]}},"q":"0"}'.replace("TILE", t) for t in "12"]
    assert [_without_backend_config(line) for line in tuned] == [fusion, fusion]
    assert _without_backend_config("%a = f32[8]{0} add(%p, %q)") != _without_backend_config("%a = f32[8]{0} maximum(%p, %q)")
