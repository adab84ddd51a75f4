"""Validate the NumPy oracle (tests/reference.py) against PyTorch 2.13 CPU.

Torch only has symmetric padding <= half the kernel, so torch comparisons use
that; asymmetric padding, N > 3 and lp_pool's ceil_mode are checked by pure
NumPy tests (hand-worked cases, brute force and finite differences).
"""

import itertools

import numpy as np
import pytest

try:
    from tests import reference as ref
except ImportError:  # tests/ itself on sys.path (pytest's rootdir-less "prepend" mode)
    import reference as ref

SEEDS = range(24)
KINDS = ["normal", "ties", "nan", "neginf"]


# ------------------------------------------------------------------ helpers


def _sample_x(rng, shape, kind="normal"):
    """Float64 input: random, integer-valued (many ties), with NaNs or -infs."""
    if kind == "ties":
        return rng.integers(0, 3, shape).astype(np.float64)
    x = rng.standard_normal(shape)
    if kind == "nan":
        x[rng.random(shape) < 0.25] = np.nan
    elif kind == "neginf":
        x[rng.random(shape) < 0.4] = -np.inf
    return x


def _has_empty_window(shape, k, s, p, d, ceil):
    """Whether some window has no in-input tap (torch allows it with dilation)."""
    return any(
        not any(0 <= o * si - pi + j * di < i for j in range(ki))
        for i, ki, si, pi, di in zip(shape[2:], k, s, p, d)
        for o in range(ref.output_size(i, ki, si, pi, pi, di, ceil))
    )


def _sample_pool(rng, n, dilate=True, ceil=None, fit=False, covered=False):
    """A torch-valid (x shape, window, strides, pads, dilation, ceil_mode).

    ``fit``: the unpadded input is at least the window (torch's avg_pool3d requires it).
    ``covered``: every window has an in-input tap.
    """
    while True:
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *rng.integers(1, 8, n).tolist())
        k = tuple(rng.integers(1, 5, n).tolist())
        s = tuple(rng.integers(1, 4, n).tolist())
        d = tuple(rng.integers(1, 3, n).tolist()) if dilate else (1,) * n
        p = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
        c = bool(rng.integers(2)) if ceil is None else ceil
        outs = [ref.output_size(i, ki, si, pi, pi, di, c) for i, ki, si, pi, di in zip(shape[2:], k, s, p, d)]
        if (
            min(outs) >= 1
            and not (fit and min(np.subtract(shape[2:], k)) < 0)
            and not (covered and _has_empty_window(shape, k, s, p, d, c))
        ):
            return shape, k, s, p, d, c


def _pairs(p):
    return tuple((pi, pi) for pi in p)


def _torch_layouts(torch, t):
    """The tensor in contiguous and (2-D/3-D) channels_last memory formats."""
    yield t
    if t.ndim == 4:
        yield t.contiguous(memory_format=torch.channels_last)
    elif t.ndim == 5:
        yield t.contiguous(memory_format=torch.channels_last_3d)


def _assert_indices(idx, tidx, t, y):
    """Compare argmax indices with torch's.

    Torch 2.13 bug: the channels_last_3d max_pool3d kernel reports a wrong index
    (the depth offset of its initial guess is dropped) when no tap beats the
    initial -inf / dtype minimum, so those windows are not compared there.
    Windows with no in-input tap (reference index -1) get an arbitrary, even
    out-of-range, index from torch and are not compared either.
    """
    tidx = tidx.numpy()
    keep = idx >= 0
    if t.ndim == 5 and not t.is_contiguous():
        keep &= y != (np.iinfo(y.dtype).min if np.issubdtype(y.dtype, np.integer) else -np.inf)
    np.testing.assert_array_equal(idx[keep], tidx[keep])


def _assert_same(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def F(torch):
    return torch.nn.functional


# ------------------------------------------------------------- max / min pool


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_max_min_pool_vs_torch(torch, F, seed, kind):
    rng = np.random.default_rng(seed)
    n = seed % 3 + 1
    shape, k, s, p, d, ceil = _sample_pool(rng, n)
    x = _sample_x(rng, shape, kind)
    tmax = getattr(F, f"max_pool{n}d")
    args = (k, s, _pairs(p), d, ceil)
    y, idx = ref.max_pool(x, *args)
    my, midx = ref.min_pool(x, *args)
    for t in _torch_layouts(torch, torch.from_numpy(x)):
        ty, tidx = tmax(t, k, s, p, d, ceil, return_indices=True)
        _assert_same(y, ty)
        _assert_indices(idx, tidx, t, y)
        ty, tidx = tmax(-t, k, s, p, d, ceil, return_indices=True)
        _assert_same(my, -ty)
        _assert_indices(midx, tidx, t, -my)


@pytest.mark.parametrize("kind", ["normal", "ties"])
@pytest.mark.parametrize("seed", SEEDS)
def test_max_min_pool_grad_vs_torch(torch, F, seed, kind):
    rng = np.random.default_rng(100 + seed)
    n = seed % 3 + 1
    shape, k, s, p, d, ceil = _sample_pool(rng, n, covered=True)
    x = _sample_x(rng, shape, kind)
    tmax = getattr(F, f"max_pool{n}d")
    for sign, grad in [(1, ref.max_pool_grad), (-1, ref.min_pool_grad)]:
        t = torch.from_numpy(sign * x).requires_grad_()
        ty = tmax(t, k, s, p, d, ceil)
        g = rng.standard_normal(ty.shape)
        (tdx,) = torch.autograd.grad(ty, t, torch.from_numpy(g))
        _assert_same(grad(x, sign * g, k, s, _pairs(p), d, ceil), sign * tdx.numpy())


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_int_max_pool_vs_torch(torch, F, dtype, n):
    rng = np.random.default_rng(n)
    info = np.iinfo(dtype)
    for _ in range(4):
        shape, k, s, p, d, ceil = _sample_pool(rng, n)
        x = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        x[rng.random(shape) < 0.3] = info.min  # ties at the extreme value
        y, idx = ref.max_pool(x, k, s, _pairs(p), d, ceil)
        assert y.dtype == dtype
        for t in _torch_layouts(torch, torch.from_numpy(x)):
            ty, tidx = getattr(F, f"max_pool{n}d")(t, k, s, p, d, ceil, return_indices=True)
            np.testing.assert_array_equal(y, ty.numpy())
            _assert_indices(idx, tidx, t, y)


def test_nan_and_tie_rule_by_hand(torch, F):
    """Ties -> first tap; several NaNs -> the LAST NaN (torch, every layout)."""
    nan = np.nan
    x = np.array([[[1.0, nan, 3.0, nan, 2.0]]])
    y, idx = ref.max_pool(x, (5,), (1,), ((0, 0),), (1,), False)
    assert np.isnan(y).all() and idx.item() == 3
    _, tidx = F.max_pool1d(torch.from_numpy(x), 5, return_indices=True)
    assert tidx.item() == 3
    x2 = np.array([[[[1.0, nan, nan], [nan, 2.0, nan]]]])
    assert ref.min_pool(x2, (2, 3), (1, 1), ((0, 0),) * 2, (1, 1), False)[1].item() == 5
    for t in _torch_layouts(torch, torch.from_numpy(x2)):
        assert F.max_pool2d(t, (2, 3), return_indices=True)[1].item() == 5
        assert F.adaptive_max_pool2d(t, 1, return_indices=True)[1].item() == 5
    ones = np.ones((1, 1, 2, 2))
    assert ref.max_pool(ones, (2, 2), (1, 1), ((0, 0),) * 2, (1, 1), False)[1].item() == 0
    ninf = np.full((1, 1, 3), -np.inf)
    y, idx = ref.max_pool(ninf, (2,), (1,), ((1, 1),), (1,), False)
    np.testing.assert_array_equal(idx, [[[0, 0, 1, 2]]])
    assert np.isneginf(y).all()


# --------------------------------------------------------------------- unpool


@pytest.mark.parametrize("seed", SEEDS)
def test_max_unpool_vs_torch(torch, F, seed):
    rng = np.random.default_rng(200 + seed)
    n = seed % 3 + 1
    shape, k, s, p, _, _ = _sample_pool(rng, n, dilate=False, ceil=False)
    unpool = getattr(F, f"max_unpool{n}d")
    y, idx = ref.max_pool(_sample_x(rng, shape), k, s, _pairs(p), (1,) * n, False)
    ours = ref.max_unpool(y, idx, shape[2:])
    theirs = unpool(torch.from_numpy(y), torch.from_numpy(idx), k, s, p, output_size=shape[2:])
    _assert_same(ours, theirs)
    # Random distinct indices into a larger volume; kernel chosen so torch accepts the size.
    size = tuple(int(o + rng.integers(0, 4)) for o in y.shape[2:])
    idx = np.stack([rng.permutation(np.prod(size))[: y[0, 0].size] for _ in range(y.shape[0] * y.shape[1])])
    idx = idx.reshape(y.shape)
    kernel = tuple(si - o + 1 for si, o in zip(size, y.shape[2:]))
    theirs = unpool(torch.from_numpy(y), torch.from_numpy(idx), kernel, 1, 0, output_size=size)
    _assert_same(ref.max_unpool(y, idx, size), theirs)


# ------------------------------------------------------------------------ avg


@pytest.mark.parametrize("seed", range(48))
def test_avg_pool_and_grad_vs_torch(torch, F, seed):
    rng = np.random.default_rng(300 + seed)
    n = seed % 3 + 1
    shape, k, s, p, _, ceil = _sample_pool(rng, n, dilate=False, fit=n == 3)
    cip = bool(rng.integers(2))
    div = None if rng.random() < 0.5 else int(rng.integers(1, 6))
    x = _sample_x(rng, shape)
    args = (k, s, _pairs(p), ceil, cip, div)
    t = torch.from_numpy(x).requires_grad_()
    if n == 1:  # avg_pool1d has no divisor_override: run it as 2-D with a unit height
        ty = F.avg_pool2d(t[:, :, None], (1, *k), (1, *s), (0, *p), ceil, cip, div)[:, :, 0]
    else:
        ty = getattr(F, f"avg_pool{n}d")(t, k, s, p, ceil, cip, div)
    _assert_same(ref.avg_pool(x, *args), ty.detach())
    g = rng.standard_normal(ty.shape)
    (tdx,) = torch.autograd.grad(ty, t, torch.from_numpy(g))
    _assert_same(ref.avg_pool_grad(x, g, *args), tdx)


def test_avg_pool1d_native_vs_torch(torch, F):
    rng = np.random.default_rng(7)
    for _ in range(10):
        shape, k, s, p, _, ceil = _sample_pool(rng, 1, dilate=False)
        x = _sample_x(rng, shape)
        for cip in (False, True):
            ty = F.avg_pool1d(torch.from_numpy(x), k, s, p, ceil, cip)
            _assert_same(ref.avg_pool(x, k, s, _pairs(p), ceil, cip), ty)


# ------------------------------------------------------------------------- lp


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0, 1.5])
@pytest.mark.parametrize("seed", range(8))
def test_lp_pool_and_grad_vs_torch(torch, F, seed, power):
    rng = np.random.default_rng(400 + seed)
    n = seed % 3 + 1
    shape, k, s, _, _, _ = _sample_pool(rng, n, dilate=False)
    shape = tuple(max(a, b) for a, b in zip(shape, (1, 1, *k)))  # torch lp_pool: no padding
    x = np.abs(_sample_x(rng, shape)) + 0.1
    if power == 2.0:
        x *= rng.choice([-1.0, 1.0], shape)  # signed input, S stays >= 0
    args = (k, s, ((0, 0),) * n, False)
    t = torch.from_numpy(x).requires_grad_()
    ty = getattr(F, f"lp_pool{n}d")(t, power, *((k[0], s[0]) if n == 1 else (k, s)))
    _assert_same(ref.lp_pool(x, power, *args), ty.detach())
    g = rng.standard_normal(ty.shape)
    (tdx,) = torch.autograd.grad(ty, t, torch.from_numpy(g))
    np.testing.assert_allclose(ref.lp_pool_grad(x, g, power, *args), tdx, rtol=1e-10, atol=1e-12)


def test_lp_pool_ceil_mode_differs_from_torch(torch, F):
    """Torch rescales overhanging windows by k / count; the reference does not."""
    x = np.arange(1.0, 6.0).reshape(1, 1, 5)
    ours = ref.lp_pool(x, 2.0, (2,), (2,), ((0, 0),), True)
    theirs = F.lp_pool1d(torch.from_numpy(x), 2.0, 2, 2, ceil_mode=True).numpy()
    count = np.array([2, 2, 1])
    _assert_same(ours, theirs * (count / 2) ** 0.5)
    _assert_same(ours[..., -1], 5.0)


def test_lp_pool_odd_power_negative_sum(torch, F):
    """sign(S) * |S|**(1/p): a real root where torch's pow of a negative gives NaN."""
    x = np.array([[[-2.0, 1.0]]])
    _assert_same(ref.lp_pool(x, 3.0, (2,), (2,), ((0, 0),), False), -(7.0 ** (1 / 3)))
    assert np.isnan(F.lp_pool1d(torch.from_numpy(x), 3.0, 2, 2).item())


# ------------------------------------------------------------------- adaptive


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(16))
def test_adaptive_pools_vs_torch(torch, F, seed, kind):
    rng = np.random.default_rng(500 + seed)
    n = seed % 3 + 1
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *rng.integers(1, 8, n).tolist())
    out = tuple(rng.integers(1, 10, n).tolist())  # often larger than the input
    x = _sample_x(rng, shape, kind)
    y, idx = ref.adaptive_max_pool(x, out)
    for t in _torch_layouts(torch, torch.from_numpy(x)):
        ty, tidx = getattr(F, f"adaptive_max_pool{n}d")(t, out, return_indices=True)
        _assert_same(y, ty)
        np.testing.assert_array_equal(idx, tidx)
    if kind in ("nan", "neginf"):
        return
    g = rng.standard_normal((*shape[:2], *out))
    for name, fwd, grad in [
        ("max", lambda v: ref.adaptive_max_pool(v, out)[0], ref.adaptive_max_pool_grad),
        ("avg", lambda v: ref.adaptive_avg_pool(v, out), ref.adaptive_avg_pool_grad),
    ]:
        t = torch.from_numpy(x).requires_grad_()
        ty = getattr(F, f"adaptive_{name}_pool{n}d")(t, out)
        _assert_same(fwd(x), ty.detach())
        (tdx,) = torch.autograd.grad(ty, t, torch.from_numpy(g))
        _assert_same(grad(x, g, out), tdx)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_global_and_spp_vs_torch(torch, F, n):
    rng = np.random.default_rng(600 + n)
    x = _sample_x(rng, (2, 3, *rng.integers(1, 7, n).tolist()))
    t = torch.from_numpy(x)
    _assert_same(ref.global_avg_pool(x, n), t.mean(dim=tuple(range(2, 2 + n))))
    _assert_same(ref.global_max_pool(x, n), t.amax(dim=tuple(range(2, 2 + n))))
    levels = (1, 2, 3)
    for method in ("max", "avg"):
        pool = getattr(F, f"adaptive_{method}_pool{n}d")
        ys = [pool(t, (lv,) * n) for lv in levels]
        channel_major = torch.cat([y.flatten(1) for y in ys], 1)
        bin_major = torch.cat([torch.movedim(y, 1, -1).flatten(1) for y in ys], 1)
        _assert_same(ref.spatial_pyramid_pool(x, levels, method), channel_major)
        _assert_same(ref.spatial_pyramid_pool(x, levels, method, channels_last_order=True), bin_major)
        assert channel_major.shape == (2, 3 * sum(lv**n for lv in levels))


# ------------------------------------------------------- pure NumPy (no torch)


@pytest.mark.parametrize(
    "args, expected",
    [
        ((5, 2, 2, 0, 0), 2),
        ((5, 2, 2, 0, 0, 1, True), 3),
        ((4, 2, 3, 0, 0, 1, True), 2),
        ((3, 2, 2, 1, 1), 2),
        ((3, 2, 2, 1, 1, 1, True), 2),  # ceil window would start in hi pad
        ((7, 3, 1, 0, 0, 2), 3),
        ((5, 3, 2, 1, 1, 1, True), 3),
        ((6, 3, 2, 1, 1, 1, True), 4),
        ((6, 3, 2, 0, 2, 1, True), 3),  # ceil window would start in hi pad
        ((1, 1, 1, 0, 0), 1),
    ],
)
def test_output_size_hand_cases(args, expected):
    assert ref.output_size(*args) == expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ((5, 3, 2), (1, 1)),
        ((6, 3, 2), (0, 1)),
        ((5, 1, 2), (0, 0)),
        ((4, 4, 1), (1, 2)),
        ((5, 3, 1, 2), (2, 2)),
        ((1, 5, 1), (2, 2)),
    ],
)
def test_same_padding_hand_cases(args, expected):
    assert ref.same_padding(*args) == expected


def test_same_padding_gives_ceil_output():
    for n, k, s, d in itertools.product(range(1, 12), range(1, 5), range(1, 4), range(1, 3)):
        lo, hi = ref.same_padding(n, k, s, d)
        assert ref.output_size(n, k, s, lo, hi, d) == -(-n // s)


def test_adaptive_bins():
    assert ref.adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]
    assert ref.adaptive_bins(2, 4) == [(0, 1), (0, 1), (1, 2), (1, 2)]
    assert ref.adaptive_bins(6, 3) == [(0, 2), (2, 4), (4, 6)]
    for n, m in itertools.product(range(1, 15), repeat=2):
        bins = ref.adaptive_bins(n, m)
        assert bins[0][0] == 0 and bins[-1][1] == n
        assert all(a < b for a, b in bins)
        assert all(a0 <= a1 <= b0 <= b1 for (a0, b0), (a1, b1) in itertools.pairwise(bins))


def _brute_max(x, k, s, pads, d):
    """Max pool values by padding with -inf and taking plain window maxima."""
    xp = np.pad(x, ((0, 0), (0, 0), *pads), constant_values=-np.inf)
    outs = [ref.output_size(i, ki, si, lo, hi, di) for i, ki, si, (lo, hi), di in zip(x.shape[2:], k, s, pads, d)]
    y = np.empty(x.shape[:2] + tuple(outs))
    for o in np.ndindex(*outs):
        sl = tuple(slice(oi * si, oi * si + di * (ki - 1) + 1, di) for oi, si, ki, di in zip(o, s, k, d))
        y[(..., *o)] = xp[(..., *sl)].reshape(x.shape[:2] + (-1,)).max(-1)
    return y


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_asymmetric_padding_brute_force(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        x = rng.standard_normal((2, 2, *rng.integers(2, 6, n).tolist()))
        k = tuple(rng.integers(1, 4, n).tolist())
        s = tuple(rng.integers(1, 3, n).tolist())
        d = tuple(rng.integers(1, 3, n).tolist())
        pads = tuple((int(rng.integers(0, di * (ki - 1) + 1)), int(rng.integers(0, 3))) for ki, di in zip(k, d))
        if min(ref.output_size(i, ki, si, lo, hi, di) for i, ki, si, (lo, hi), di in zip(x.shape[2:], k, s, pads, d)) < 1:
            continue
        y, idx = ref.max_pool(x, k, s, pads, d, False)
        _assert_same(y, _brute_max(x, k, s, pads, d))
        picked = np.take_along_axis(x.reshape(2, 2, -1), idx.reshape(2, 2, -1), -1).reshape(y.shape)
        _assert_same(np.where(idx >= 0, picked, -np.inf), y)  # -1: window entirely in padding
        if d == (1,) * n:  # count_include_pad avg == mean of the zero-padded window
            xp = np.pad(x, ((0, 0), (0, 0), *pads))
            avg = ref.avg_pool(x, k, s, pads, False, True)
            for o in np.ndindex(*avg.shape[2:]):
                sl = tuple(slice(oi * si, oi * si + ki) for oi, si, ki in zip(o, s, k))
                _assert_same(avg[(..., *o)], xp[(..., *sl)].reshape(2, 2, -1).mean(-1))


def test_int_extremes_and_min_pool():
    x = np.array([[[-128, -128, 127, 127, 0]]], np.int8)
    y, idx = ref.max_pool(x, (2,), (1,), ((1, 1),), (1,), False)
    assert y.dtype == np.int8
    np.testing.assert_array_equal(y, [[[-128, -128, 127, 127, 127, 0]]])
    np.testing.assert_array_equal(idx, [[[0, 0, 2, 2, 3, 4]]])
    y, idx = ref.min_pool(x, (2,), (1,), ((1, 1),), (1,), False)
    np.testing.assert_array_equal(y, [[[-128, -128, -128, 127, 0, 0]]])
    np.testing.assert_array_equal(idx, [[[0, 0, 1, 2, 4, 4]]])
    assert ref.global_max_pool(x, 1).dtype == np.int8


def _numeric_vjp(f, x, g, eps=1e-6):
    dx = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        dx[i] = np.sum(g * (f(x + e) - f(x - e))) / (2 * eps)
    return dx


@pytest.mark.parametrize(
    "fwd, grad, extra",
    [
        (ref.avg_pool, ref.avg_pool_grad, {"count_include_pad": True}),
        (ref.avg_pool, ref.avg_pool_grad, {"count_include_pad": False}),
        (ref.avg_pool, ref.avg_pool_grad, {"divisor_override": 5}),
        (ref.lp_pool, ref.lp_pool_grad, {"p": 1.0}),
        (ref.lp_pool, ref.lp_pool_grad, {"p": 2.0}),
        (ref.lp_pool, ref.lp_pool_grad, {"p": 3.5}),
        (ref.max_pool, ref.max_pool_grad, {"dilation": (1, 2)}),
        (ref.min_pool, ref.min_pool_grad, {"dilation": (1, 2)}),
    ],
)
def test_grads_finite_differences_asymmetric_ceil(fwd, grad, extra):
    """VJPs match central differences with asymmetric padding and ceil overhang."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.0, (1, 2, 5, 4))
    kw = dict(window=(3, 2), strides=(2, 3), padding=((2, 0), (0, 1)), ceil_mode=True, **extra)

    def f(v):
        out = fwd(v, **kw)
        return out[0] if isinstance(out, tuple) else out

    g = rng.standard_normal(f(x).shape)
    np.testing.assert_allclose(grad(x, g, **kw), _numeric_vjp(f, x, g), atol=1e-7)


def test_avg_count_include_pad_ignores_ceil_overhang():
    x = np.ones((1, 1, 6))
    # windows [-1, 2), [1, 4), [3, 6), [5, 8); the last is clipped to the padded extent [-1, 7)
    np.testing.assert_allclose(ref.avg_pool(x, (3,), (2,), ((1, 1),), True, True), [[[2 / 3, 1, 1, 1 / 2]]])
    np.testing.assert_allclose(ref.avg_pool(x, (3,), (2,), ((1, 1),), True, False), [[[1.0, 1, 1, 1]]])
