"""PyTorch (CPU) as the oracle: jaxpool's public ops against ``torch.nn.functional``.

Each test draws random torch-valid configurations from a seed: 1-D/2-D/3-D, both data formats,
zero, one or two leading batch axes, strides, symmetric padding (at most half the window, torch's
rule), dilation and ceil_mode, on normal floats, integer-valued floats (many ties), NaNs and -inf.
Torch always sees ``(B, C, *spatial)`` with ``B = prod(batch)``; :class:`Layout` converts. Values,
indices and gradients (a random cotangent through ``jax.vjp`` vs ``torch.autograd.grad``) are
compared. Each case is one ``jax.jit`` of the forward and backward passes (compiling dominates).
"""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpool
from tests.layouts import BATCH_SHAPES, FORMATS, from_layout, to_layout
from tests.strategies import every_window_touches_input

torch = pytest.importorskip("torch")
F = torch.nn.functional

SEEDS = range(24)
KINDS = ("normal", "ties", "nan", "neginf")


class Layout(NamedTuple):
    """Leading batch axes and data format of the jaxpool side; torch sees ``(prod(batch), C, *spatial)``."""

    batch: tuple[int, ...]
    fmt: str

    @classmethod
    def sample(cls, rng):
        return cls(BATCH_SHAPES[rng.integers(len(BATCH_SHAPES))], FORMATS[rng.integers(len(FORMATS))])

    @property
    def size(self):
        return math.prod(self.batch)

    def put(self, a):
        return to_layout(a, self.fmt, self.batch)

    def take(self, a):
        return from_layout(a, self.fmt, self.batch)


class Window(NamedTuple):
    k: tuple[int, ...]
    s: tuple[int, ...]
    p: tuple[int, ...]
    d: tuple[int, ...]
    ceil: bool


def sample_window(rng, spatial, *, dilation=True, padding=True, ceil=True):
    """A random window that torch accepts (padding at most half the window) with no window entirely in
    padding (torch allows those with dilation; they are tested in test_edge_semantics)."""
    n = len(spatial)
    while True:
        k = tuple(int(v) for v in rng.integers(1, 5 if n < 3 else 4, n))  # 3-D: small windows compile fast
        w = Window(
            k,
            tuple(int(v) for v in rng.integers(1, 4, n)),
            tuple(int(rng.integers(0, ki // 2 + 1)) if padding else 0 for ki in k),
            tuple(int(v) for v in rng.integers(1, 3, n)) if dilation else (1,) * n,
            bool(rng.integers(2)) if ceil else False,
        )
        if every_window_touches_input(spatial, w.k, w.s, [(p, p) for p in w.p], w.d, w.ceil):
            return w


def sample_x(rng, shape, kind="normal"):
    """float32 input: normal, integer-valued (ties), with NaNs, or with many -infs."""
    if kind == "ties":
        return rng.integers(0, 3, shape).astype(np.float32)
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "nan":
        x[rng.random(shape) < 0.2] = np.nan
    elif kind == "neginf":
        x[rng.random(shape) < 0.4] = -np.inf
    return x


def sample_input(rng, n, kind="normal", max_size=None, min_size=1):
    """A layout and a torch-layout input ``(B, C, *spatial)``; spatial sizes shrink for 3-D."""
    lay = Layout.sample(rng)
    max_size = max_size or (12 if n < 3 else 6)
    shape = (lay.size, int(rng.integers(1, 4)), *(int(v) for v in rng.integers(min_size, max_size + 1, n)))
    return lay, sample_x(rng, shape, kind)


@functools.partial(jax.jit, static_argnums=(0, 3))
def value_and_vjp(f, x, g, has_aux=False):
    """``f(x)``, the cotangent ``g`` pulled back to ``x`` and, with ``has_aux``, ``f``'s aux output."""
    y, pullback, *aux = jax.vjp(f, x, has_aux=has_aux)
    return y, pullback(g)[0], *aux


def torch_value_and_grad(f, x, rng):
    """Torch's ``f(x)``, a random cotangent ``g`` and the gradient ``g . df/dx``, as NumPy."""
    t = torch.from_numpy(x).requires_grad_()
    y = f(t)
    g = rng.standard_normal(y.shape).astype(np.float32)
    (dx,) = torch.autograd.grad(y, t, torch.from_numpy(g))
    return y.detach().numpy(), g, dx.numpy()


def assert_close(lay, ours, theirs, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(lay.take(ours), theirs, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------- max / min


@pytest.mark.parametrize("seed", SEEDS)
def test_max_pool(seed):
    rng = np.random.default_rng(seed)
    n, kind = seed % 3 + 1, KINDS[seed // 3 % 4]
    lay, x = sample_input(rng, n, kind)
    w = sample_window(rng, x.shape[2:])
    kw = {"strides": w.s, "padding": w.p, "dilation": w.d, "ceil_mode": w.ceil, "data_format": lay.fmt}
    tmax = getattr(F, f"max_pool{n}d")
    ty, g, tdx = torch_value_and_grad(lambda t: tmax(t, w.k, w.s, w.p, w.d, w.ceil), x, rng)
    _, tidx = tmax(torch.from_numpy(x), w.k, w.s, w.p, w.d, w.ceil, return_indices=True)
    y, dx, idx = value_and_vjp(lambda v: jaxpool.max_pool(v, w.k, return_indices=True, **kw), lay.put(x), lay.put(g), True)
    assert idx.dtype == jnp.int32
    np.testing.assert_array_equal(lay.take(y), ty)
    np.testing.assert_array_equal(lay.take(idx), tidx)
    assert_close(lay, dx, tdx)

    # backward="xla": same values; XLA's own gradient differs from torch's only on ties, and JAX
    # has no reverse-mode rule for dilated reduce_window max.
    xla = lambda v: jaxpool.max_pool(v, w.k, backward="xla", **kw)
    if kind == "normal" and w.d == (1,) * n:
        y, dx = value_and_vjp(xla, lay.put(x), lay.put(g))
        assert_close(lay, dx, tdx)
    else:
        y = jax.jit(xla)(lay.put(x))
    np.testing.assert_array_equal(lay.take(y), ty)


def sample_long_window(rng, n):
    """A window with at least one axis of 6-48 taps (2-D: one of 33-48 in a third of the draws,
    the runs and blocks of runs; 1-D 40-90), strides 1-3, padding up to half the window, no
    dilation (the doubling scheme's ground), and an input 0-12 longer than the padded window."""
    k = [int(rng.integers(1, 6)) for _ in range(n)]
    axis = int(rng.integers(n))
    if n == 1:
        k[axis] = int(rng.integers(40, 91))  # over 64 taps: runs and blocks of runs
    else:
        k[axis] = int(rng.integers(33, 49) if rng.random() < 0.33 else rng.integers(6, 20))
    s = tuple(int(v) for v in rng.integers(1, 4, n))
    p = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
    spatial = tuple(max(1, ki - 2 * pi) + int(rng.integers(0, 13)) for ki, pi in zip(k, p))
    return Window(tuple(k), s, p, (1,) * n, bool(rng.random() < 0.3)), spatial


@pytest.mark.parametrize("seed", range(12))
def test_long_max_pool_windows(seed):
    """Long windows without indices — chained tap folds up to 32 taps per axis, runs and blocks of
    runs up to 256 (jaxpool._lowering.chain_axes) — whose values and gradients torch decides (ties,
    NaN and -inf inputs included); the other parity tests draw windows of at most 4."""
    rng = np.random.default_rng(1000 + seed)
    n, kind = seed % 2 + 1, KINDS[seed // 2 % 4]
    w, spatial = sample_long_window(rng, n)
    lay = Layout.sample(rng)
    x = sample_x(rng, (lay.size, int(rng.integers(1, 4)), *spatial), kind)
    pool = jaxpool.min_pool if seed % 3 == 2 else jaxpool.max_pool
    sign = -1.0 if pool is jaxpool.min_pool else 1.0
    tmax = getattr(F, f"max_pool{n}d")
    ty, g, tdx = torch_value_and_grad(lambda t: sign * tmax(sign * t, w.k, w.s, w.p, 1, w.ceil), x, rng)
    kw = {"strides": w.s, "padding": w.p, "ceil_mode": w.ceil, "data_format": lay.fmt}
    y, dx = value_and_vjp(lambda v: pool(v, w.k, **kw), lay.put(x), lay.put(g))
    np.testing.assert_array_equal(lay.take(y), ty)
    assert_close(lay, dx, tdx)


@pytest.mark.parametrize("seed", range(9))
def test_min_pool(seed):
    """min_pool(x) == -max_pool(-x), gradient included (max_pool's code path: fewer cases)."""
    rng = np.random.default_rng(50 + seed)
    n = seed % 3 + 1
    lay, x = sample_input(rng, n, KINDS[seed // 3])
    w = sample_window(rng, x.shape[2:])
    tmax = getattr(F, f"max_pool{n}d")
    ty, g, tdx = torch_value_and_grad(lambda t: -tmax(-t, w.k, w.s, w.p, w.d, w.ceil), x, rng)
    kw = {"strides": w.s, "padding": w.p, "dilation": w.d, "ceil_mode": w.ceil, "data_format": lay.fmt}
    y, dx = value_and_vjp(lambda v: jaxpool.min_pool(v, w.k, **kw), lay.put(x), lay.put(g))
    np.testing.assert_array_equal(lay.take(y), ty)
    assert_close(lay, dx, tdx)


@pytest.mark.parametrize("dtype", [np.int8, np.int32])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_integer_max_pool(n, dtype):
    rng = np.random.default_rng(n)
    info = np.iinfo(dtype)
    lay = Layout.sample(rng)
    x = rng.integers(info.min, info.max, (lay.size, 3, *rng.integers(2, 7, n)), dtype=dtype, endpoint=True)
    x[rng.random(x.shape) < 0.3] = info.min  # ties at the padding value
    w = sample_window(rng, x.shape[2:])
    ty, tidx = getattr(F, f"max_pool{n}d")(torch.from_numpy(x), w.k, w.s, w.p, w.d, w.ceil, return_indices=True)
    kw = {"strides": w.s, "padding": w.p, "dilation": w.d, "ceil_mode": w.ceil, "data_format": lay.fmt}
    y, idx = jax.jit(lambda v: jaxpool.max_pool(v, w.k, return_indices=True, **kw))(lay.put(x))
    assert y.dtype == dtype
    np.testing.assert_array_equal(lay.take(y), ty)
    np.testing.assert_array_equal(lay.take(idx), tidx)


# ---------------------------------------------------------------------------------- avg / lp


def torch_avg_pool(t, w, cip, div):
    if t.ndim == 3:  # avg_pool1d has no divisor_override: run it as 2-D with a unit height
        return F.avg_pool2d(t[:, :, None], (1, *w.k), (1, *w.s), (0, *w.p), w.ceil, cip, div)[:, :, 0]
    return getattr(F, f"avg_pool{t.ndim - 2}d")(t, w.k, w.s, w.p, w.ceil, cip, div)


@pytest.mark.parametrize("seed", SEEDS)
def test_avg_pool(seed):
    rng = np.random.default_rng(100 + seed)
    n = seed % 3 + 1
    lay, x = sample_input(rng, n, KINDS[seed // 3 % 2], min_size=4 if n == 3 else 1)  # avg_pool3d: input >= window
    w = sample_window(rng, x.shape[2:], dilation=False)
    cip, div = bool(rng.integers(2)), (None, 1, 3, 7)[rng.integers(4)]
    ty, g, tdx = torch_value_and_grad(lambda t: torch_avg_pool(t, w, cip, div), x, rng)
    kw = {"ceil_mode": w.ceil, "count_include_pad": cip, "divisor_override": div, "data_format": lay.fmt}
    y, dx = value_and_vjp(lambda v: jaxpool.avg_pool(v, w.k, w.s, w.p, **kw), lay.put(x), lay.put(g))
    assert_close(lay, y, ty)
    assert_close(lay, dx, tdx)


@pytest.mark.parametrize("n", [1, 2])  # torch has no bf16 avg_pool3d
def test_bf16_avg_pool(n):
    rng = np.random.default_rng(n)
    lay, x = sample_input(rng, n, min_size=4)
    w = sample_window(rng, x.shape[2:], dilation=False)
    t = torch.from_numpy(x).to(torch.bfloat16)
    ty = torch_avg_pool(t, w, True, None).float().numpy()
    xb = jnp.asarray(lay.put(t.float().numpy()), jnp.bfloat16)
    y = jaxpool.avg_pool(xb, w.k, w.s, w.p, ceil_mode=w.ceil, data_format=lay.fmt)
    assert y.dtype == jnp.bfloat16
    assert_close(lay, y.astype(jnp.float32), ty, rtol=2**-8, atol=1e-6)  # one bf16 rounding


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("seed", range(8))
def test_lp_pool(seed, p):
    """Non-negative inputs, or signed ones with p = 2, and no ceil_mode: where torch's lp_pool is
    defined the same way (see the lp_pool docstring)."""
    rng = np.random.default_rng(200 + seed)
    n = seed % 3 + 1
    lay, x = sample_input(rng, n, min_size=4)
    x = np.abs(x) + 0.1
    if p == 2:
        x *= rng.choice(np.float32([-1, 1]), x.shape)
    w = sample_window(rng, x.shape[2:], dilation=False, padding=False, ceil=False)
    kernel, stride = (w.k[0], w.s[0]) if n == 1 else (w.k, w.s)
    ty, g, tdx = torch_value_and_grad(lambda t: getattr(F, f"lp_pool{n}d")(t, p, kernel, stride), x, rng)
    y, dx = value_and_vjp(lambda v: jaxpool.lp_pool(v, p, w.k, w.s, data_format=lay.fmt), lay.put(x), lay.put(g))
    assert_close(lay, y, ty)
    assert_close(lay, dx, tdx, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- adaptive


@pytest.mark.parametrize("seed", SEEDS)
def test_adaptive_pools(seed):
    rng = np.random.default_rng(300 + seed)
    n, kind = seed % 3 + 1, KINDS[seed // 3 % 4]
    lay, x = sample_input(rng, n, kind, max_size=8 if n < 3 else 5)
    if seed % 4 == 0:  # bins that tile the input (the max_pool / avg_pool path)
        out = tuple(size // 2 if size % 2 == 0 else size for size in x.shape[2:])
    else:  # uneven bins, often more than the input size
        out = tuple(int(v) for v in rng.integers(1, 11, n))
    tmax, tavg = getattr(F, f"adaptive_max_pool{n}d"), getattr(F, f"adaptive_avg_pool{n}d")
    kw = {"data_format": lay.fmt}
    ty, g, tdx = torch_value_and_grad(lambda t: tmax(t, out), x, rng)
    f = lambda v: jaxpool.adaptive_max_pool(v, out, return_indices=True, **kw)
    y, dx, idx = value_and_vjp(f, lay.put(x), lay.put(g), True)
    np.testing.assert_array_equal(lay.take(y), ty)
    np.testing.assert_array_equal(lay.take(idx), tmax(torch.from_numpy(x), out, return_indices=True)[1])
    assert_close(lay, dx, tdx)
    if kind in ("normal", "ties"):  # non-finite averages: test_adaptive_avg_pool_nonfinite_is_local
        ty, g, tdx = torch_value_and_grad(lambda t: tavg(t, out), x, rng)
        y, dx = value_and_vjp(lambda v: jaxpool.adaptive_avg_pool(v, out, **kw), lay.put(x), lay.put(g))
        assert_close(lay, y, ty)
        assert_close(lay, dx, tdx)


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_adaptive_avg_pool_nonfinite_is_local(bad):
    x = np.float32([[1, bad, 3, 4, 5]])
    np.testing.assert_array_equal(
        jaxpool.adaptive_avg_pool(x, (3,), data_format="channels_first"), F.adaptive_avg_pool1d(torch.from_numpy(x), 3)
    )


@pytest.mark.parametrize("method", ["avg", "max"])
@pytest.mark.parametrize("seed", range(6))
def test_global_and_spatial_pyramid_pools(seed, method):
    """Global pools are adaptive pools to 1; SPP concatenates adaptive pools, flattened channel-major
    (channels_first) or bin-major (channels_last)."""
    rng = np.random.default_rng(400 + seed)
    n = seed % 3 + 1
    lay, x = sample_input(rng, n, KINDS[seed % 2], max_size=7 if n < 3 else 5)
    keepdims = bool(rng.integers(2))
    tpool = getattr(F, f"adaptive_{method}_pool{n}d")
    glob = getattr(jaxpool, f"global_{method}_pool")
    ty, g, tdx = torch_value_and_grad(lambda t: tpool(t, 1), x, rng)
    g = lay.put(g) if keepdims else g.reshape(*lay.batch, -1)
    y, dx = value_and_vjp(lambda v: glob(v, num_spatial_dims=n, keepdims=keepdims, data_format=lay.fmt), lay.put(x), g)
    np.testing.assert_allclose(np.asarray(y).reshape(ty.shape), ty, rtol=1e-5, atol=1e-6)
    assert_close(lay, dx, tdx)

    levels = (1, 2, 3)
    pooled = [tpool(torch.from_numpy(x), lv) for lv in levels]
    flat = [p.flatten(1) if lay.fmt == "channels_first" else p.movedim(1, -1).flatten(1) for p in pooled]
    spp = jax.jit(lambda v: jaxpool.spatial_pyramid_pool(v, levels, method=method, num_spatial_dims=n, data_format=lay.fmt))
    y = spp(lay.put(x))
    assert y.shape == (*lay.batch, x.shape[1] * sum(lv**n for lv in levels))
    np.testing.assert_allclose(np.asarray(y).reshape(x.shape[0], -1), torch.cat(flat, 1), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------- unpool


@pytest.mark.parametrize("seed", range(12))
def test_max_unpool(seed):
    """max_pool -> max_unpool round trip, and unpooling random distinct indices into a larger output.
    Gradients only where indices are distinct: with repeated indices torch's backward (a gather)
    gives every copy the cotangent, jaxpool (the derivative of a scatter-set) only the kept one."""
    rng = np.random.default_rng(500 + seed)
    n = seed % 3 + 1
    lay, x = sample_input(rng, n)
    w = sample_window(rng, x.shape[2:], dilation=False, ceil=False)
    unpool = getattr(F, f"max_unpool{n}d")
    ty, tidx = getattr(F, f"max_pool{n}d")(torch.from_numpy(x), w.k, w.s, w.p, return_indices=True)
    spatial = x.shape[2:]

    @jax.jit
    def round_trip(v):
        y, idx = jaxpool.max_pool(v, w.k, w.s, w.p, return_indices=True, data_format=lay.fmt)
        window = dict(window_shape=w.k, strides=w.s, padding=w.p)  # PyTorch's MaxUnpool arguments
        return jaxpool.max_unpool(y, idx, spatial, data_format=lay.fmt), jaxpool.max_unpool(
            y, idx, spatial, **window, data_format=lay.fmt
        )

    want = unpool(ty, tidx, w.k, w.s, w.p, output_size=spatial)
    for u in round_trip(lay.put(x)):
        np.testing.assert_array_equal(lay.take(u), want)

    size = tuple(o + int(rng.integers(0, 4)) for o in ty.shape[2:])
    rows = [rng.permutation(math.prod(size))[: math.prod(ty.shape[2:])] for _ in range(math.prod(ty.shape[:2]))]
    idx = np.stack(rows).reshape(ty.shape)
    kernel = tuple(si - o + 1 for si, o in zip(size, ty.shape[2:]))  # so that torch accepts `size`
    values = ty.numpy()
    tu, g, tdx = torch_value_and_grad(lambda v: unpool(v, torch.from_numpy(idx), kernel, 1, 0, output_size=size), values, rng)
    u, dy = value_and_vjp(lambda v: jaxpool.max_unpool(v, lay.put(idx), size, data_format=lay.fmt), lay.put(values), lay.put(g))
    np.testing.assert_array_equal(lay.take(u), tu)
    np.testing.assert_array_equal(lay.take(dy), tdx)
