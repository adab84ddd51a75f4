"""Plain-loop NumPy reference implementations of pooling (the test oracle).

Independent of ``jaxpool``: written from the PyTorch / TF definitions, for
clarity rather than speed. Every function takes ``x`` in canonical layout
``(B, C, *spatial)`` with any number N of spatial dims and fully normalised
arguments: ``window``, ``strides`` and ``dilation`` are length-N tuples of
ints, ``padding`` is a length-N tuple of ``(lo, hi)`` pairs.

Loops run over output positions and window taps; each step is vectorised over
batch and channel. Float results are computed in float64; integer max/min
pooling is exact in the input dtype. ``indices`` are int64, flattened over the
unpadded spatial volume of each (batch, channel), e.g. ``h * W + w`` in 2-D.

Max/min tie and NaN rule (PyTorch CPU): the first in-input tap (row-major scan,
first spatial dim outermost) is the initial best; a later tap replaces it when
``val > best or isnan(val)`` (min: ``val < best or isnan(val)``). So ties go to
the first tap and, when a window holds several NaNs, the LAST NaN's index is
reported. Checked against torch 2.13 CPU max_pool1d/2d/3d and
adaptive_max_pool1d/2d/3d (contiguous and channels_last memory formats alike):
e.g. ``max_pool1d([1, nan, 3, nan, 2], 5)`` -> ``(nan, index 3)``. (Torch's
channels_last_3d max_pool3d mis-reports the index of an all -inf / all
dtype-min window; the contiguous kernel agrees with this rule.)

A window with no in-input tap (only possible with padding larger than
PyTorch allows) gives -inf / +inf (dtype min / max for ints) and index -1
for max / min, and 0 / 0 = nan for avg_pool with count_include_pad=False.
"""

import itertools
import math

import numpy as np

# ---------------------------------------------------------------- arithmetic


def output_size(in_size, k, s, lo, hi, d=1, ceil_mode=False):
    """PyTorch's pooled output length for one spatial dim.

    ``out = floor_or_ceil((in + lo + hi - eff) / s) + 1`` with
    ``eff = d * (k - 1) + 1``; with ceil_mode the last window must start
    inside the input or the left padding, else it is dropped.
    """
    eff = d * (k - 1) + 1
    num = in_size + lo + hi - eff
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= in_size + lo:
        out -= 1
    return out


def same_padding(in_size, k, s, d=1):
    """TF/Flax "SAME" padding ``(lo, hi)``: out = ceil(in / s), extra on hi."""
    eff = d * (k - 1) + 1
    out = -(-in_size // s)
    total = max((out - 1) * s + eff - in_size, 0)
    return total // 2, total - total // 2


def adaptive_bins(in_size, out_size):
    """Adaptive pooling bins ``[(start, end)]``: floor(i*in/out), ceil((i+1)*in/out)."""
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)]


# ------------------------------------------------------------------- helpers


def _sliding_taps(spatial, window, strides, padding, dilation, ceil_mode):
    """Per dim, per output index: the in-input tap positions of that window."""
    taps = []
    for n, k, s, (lo, hi), d in zip(spatial, window, strides, padding, dilation):
        out = output_size(n, k, s, lo, hi, d, ceil_mode)
        taps.append([[o * s - lo + j * d for j in range(k) if 0 <= o * s - lo + j * d < n] for o in range(out)])
    return taps


def _adaptive_taps(spatial, out_spatial):
    """Per dim, per output index: the positions of that adaptive bin."""
    return [[list(range(a, b)) for a, b in adaptive_bins(n, m)] for n, m in zip(spatial, out_spatial)]


def _windows(taps):
    """Yield ``(output position, [tap positions in row-major order])``."""
    for o in itertools.product(*(range(len(t)) for t in taps)):
        yield o, list(itertools.product(*(t[oi] for t, oi in zip(taps, o))))


def _out_shape(x, taps):
    return x.shape[:2] + tuple(len(t) for t in taps)


def _select(x, taps, better):
    """Arg-reduce each window with the PyTorch tie / NaN rule."""
    is_float = not np.issubdtype(x.dtype, np.integer)
    x = x.astype(np.float64) if is_float else x
    spatial = x.shape[2:]
    y = np.empty(_out_shape(x, taps), x.dtype)
    idx = np.full(y.shape, -1, np.int64)
    if is_float:
        empty = -np.inf if better is np.greater else np.inf
    else:
        info = np.iinfo(x.dtype)
        empty = info.min if better is np.greater else info.max
    for o, window in _windows(taps):
        best = np.full(x.shape[:2], empty, x.dtype)
        arg = np.full(x.shape[:2], -1, np.int64)
        for t, pos in enumerate(window):
            val = x[(..., *pos)]
            take = np.ones(best.shape, bool) if t == 0 else better(val, best)
            if is_float:
                take |= np.isnan(val)
            best = np.where(take, val, best)
            arg = np.where(take, np.ravel_multi_index(pos, spatial), arg)
        y[(..., *o)], idx[(..., *o)] = best, arg
    return y, idx


def _scatter_add(shape, g, idx):
    """dx (float64, ``shape``) with each g[o] added at flat index idx[o] (skip -1)."""
    b, c = shape[:2]
    dx = np.zeros((b, c, math.prod(shape[2:])))
    g = np.asarray(g, np.float64).reshape(b, c, -1)
    idx = idx.reshape(b, c, -1)
    bb, cc, _ = np.indices(idx.shape)
    keep = idx >= 0
    np.add.at(dx, (bb[keep], cc[keep], idx[keep]), g[keep])
    return dx.reshape(shape)


# ------------------------------------------------------------------- max/min


def max_pool(x, window, strides, padding, dilation, ceil_mode):
    """Max pooling -> ``(y, indices)``; padding/overhang taps are ignored."""
    taps = _sliding_taps(x.shape[2:], window, strides, padding, dilation, ceil_mode)
    return _select(np.asarray(x), taps, np.greater)


def min_pool(x, window, strides, padding, dilation, ceil_mode):
    """Min pooling -> ``(y, indices)``; mirror image of :func:`max_pool`."""
    taps = _sliding_taps(x.shape[2:], window, strides, padding, dilation, ceil_mode)
    return _select(np.asarray(x), taps, np.less)


def max_pool_grad(x, g, window, strides, padding, dilation, ceil_mode):
    """VJP of :func:`max_pool`: g[o] is routed to the element at indices[o]."""
    _, idx = max_pool(x, window, strides, padding, dilation, ceil_mode)
    return _scatter_add(x.shape, g, idx)


def min_pool_grad(x, g, window, strides, padding, dilation, ceil_mode):
    """VJP of :func:`min_pool`."""
    _, idx = min_pool(x, window, strides, padding, dilation, ceil_mode)
    return _scatter_add(x.shape, g, idx)


def max_unpool(y, indices, output_size):
    """Zeros of spatial shape ``output_size`` with y written at flat ``indices``."""
    b, c = y.shape[:2]
    out = np.zeros((b, c, math.prod(output_size)), y.dtype)
    bb, cc = np.arange(b)[:, None, None], np.arange(c)[None, :, None]
    out[bb, cc, np.asarray(indices).reshape(b, c, -1)] = y.reshape(b, c, -1)
    return out.reshape((b, c, *output_size))


def max_unpool_in_windows(y, indices, output_size, window, strides, padding, dilation, ceil_mode):
    """Max unpooling given the pooling window -> ``(out, kept)``: an index that names no tap of its
    own output's window is dropped; where several name one position, the last output in row-major
    order writes it. ``kept``: whether each output's value was written (its gradient's support)."""
    taps = _sliding_taps(output_size, window, strides, padding, dilation, ceil_mode)
    inside = lambda pos, o: all(p in t[oi] for p, t, oi in zip(pos, taps, o))  # noqa: E731
    return max_unpool_latest(y, indices, output_size, inside)


def max_unpool_latest(y, indices, output_size, inside=lambda pos, o: True):
    """Max unpooling -> ``(out, kept)``: indices out of range (or, by ``inside(position, output)``,
    outside their output's window) are dropped; where several name one position, the last output in
    row-major order of its (batch, channel) plane writes it. ``kept``: whether each output's value
    was written (its gradient's support)."""
    b, c = y.shape[:2]
    pooled = y.shape[2:]
    writer = -np.ones((b, c, math.prod(output_size)), np.int64)
    for bi, ci in itertools.product(range(b), range(c)):
        for flat, o in enumerate(itertools.product(*(range(m) for m in pooled))):
            idx = int(indices[(bi, ci, *o)])
            if not 0 <= idx < math.prod(output_size):
                continue
            if inside(np.unravel_index(idx, output_size), o):
                writer[bi, ci, idx] = flat
    out = np.zeros(writer.shape, y.dtype)
    kept = np.zeros((b, c, math.prod(pooled)), bool)
    for bi, ci in itertools.product(range(b), range(c)):
        for p in np.flatnonzero(writer[bi, ci] >= 0):
            out[bi, ci, p] = y[bi, ci].reshape(-1)[writer[bi, ci, p]]
            kept[bi, ci, writer[bi, ci, p]] = True
    return out.reshape((b, c, *output_size)), kept.reshape(y.shape)


# ----------------------------------------------------------------------- avg


def _avg_windows(spatial, window, strides, padding, ceil_mode, count_include_pad, divisor_override):
    """Tap lists and per-output divisors of avg_pool (PyTorch semantics)."""
    taps = _sliding_taps(spatial, window, strides, padding, (1,) * len(window), ceil_mode)
    div = np.ones([len(t) for t in taps])
    for axis, (n, k, s, (lo, hi), t) in enumerate(zip(spatial, window, strides, padding, taps)):
        if count_include_pad:  # window clipped to the padded extent [-lo, n + hi)
            d = [min(o * s - lo + k, n + hi) - (o * s - lo) for o in range(len(t))]
        else:  # in-input elements only
            d = [len(to) for to in t]
        div = div * np.reshape(d, [-1 if ax == axis else 1 for ax in range(len(taps))])
    if divisor_override is not None:
        div = np.full(div.shape, float(divisor_override))
    return taps, div


def avg_pool(x, window, strides, padding, ceil_mode, count_include_pad=True, divisor_override=None):
    """Average pooling: sum of in-input taps / divisor (PyTorch semantics)."""
    x = np.asarray(x, np.float64)
    taps, div = _avg_windows(x.shape[2:], window, strides, padding, ceil_mode, count_include_pad, divisor_override)
    y = np.zeros(_out_shape(x, taps))
    with np.errstate(invalid="ignore", divide="ignore"):
        for o, window_taps in _windows(taps):
            y[(..., *o)] = sum((x[(..., *p)] for p in window_taps), np.zeros(x.shape[:2])) / div[o]
    return y


def avg_pool_grad(x, g, window, strides, padding, ceil_mode, count_include_pad=True, divisor_override=None):
    """VJP of :func:`avg_pool`: every in-input tap receives g[o] / divisor[o]."""
    g = np.asarray(g, np.float64)
    taps, div = _avg_windows(x.shape[2:], window, strides, padding, ceil_mode, count_include_pad, divisor_override)
    dx = np.zeros(x.shape)
    for o, window_taps in _windows(taps):
        for p in window_taps:
            dx[(..., *p)] += g[(..., *o)] / div[o]
    return dx


# ------------------------------------------------------------------------ lp


def _lp_sums(x, p, window, strides, padding, ceil_mode):
    ones = (1,) * len(window)
    taps = _sliding_taps(x.shape[2:], window, strides, padding, ones, ceil_mode)
    s = np.zeros(_out_shape(x, taps))
    for o, window_taps in _windows(taps):
        s[(..., *o)] = sum((x[(..., *q)] ** p for q in window_taps), np.zeros(x.shape[:2]))
    return s, taps


def lp_pool(x, p, window, strides, padding, ceil_mode):
    """Power-average pooling: ``sign(S) * |S| ** (1/p)``, S = sum of x**p over taps.

    Zero padding contributes 0. Unlike PyTorch, ceil_mode overhang windows use
    the true partial sum (PyTorch rescales it by k / clipped count).
    """
    s, _ = _lp_sums(np.asarray(x, np.float64), p, window, strides, padding, ceil_mode)
    return np.sign(s) * np.abs(s) ** (1.0 / p)


def lp_pool_grad(x, g, p, window, strides, padding, ceil_mode):
    """VJP of :func:`lp_pool`: ``|S| ** (1/p - 1) * x ** (p - 1)``; 0 where S == 0."""
    x = np.asarray(x, np.float64)
    g = np.asarray(g, np.float64)
    s, taps = _lp_sums(x, p, window, strides, padding, ceil_mode)
    with np.errstate(divide="ignore"):
        coef = np.where(s != 0, np.abs(s) ** (1.0 / p - 1.0), 0.0) * g
    dx = np.zeros(x.shape)
    for o, window_taps in _windows(taps):
        for q in window_taps:
            dx[(..., *q)] += coef[(..., *o)] * x[(..., *q)] ** (p - 1)
    return dx


# ------------------------------------------------------------------ adaptive


def adaptive_avg_pool(x, output_size):
    """Adaptive average pooling to spatial shape ``output_size``."""
    x = np.asarray(x, np.float64)
    taps = _adaptive_taps(x.shape[2:], output_size)
    y = np.zeros(_out_shape(x, taps))
    for o, window_taps in _windows(taps):
        y[(..., *o)] = sum(x[(..., *p)] for p in window_taps) / len(window_taps)
    return y


def adaptive_avg_pool_grad(x, g, output_size):
    """VJP of :func:`adaptive_avg_pool`."""
    g = np.asarray(g, np.float64)
    taps = _adaptive_taps(x.shape[2:], output_size)
    dx = np.zeros(x.shape)
    for o, window_taps in _windows(taps):
        for p in window_taps:
            dx[(..., *p)] += g[(..., *o)] / len(window_taps)
    return dx


def adaptive_max_pool(x, output_size):
    """Adaptive max pooling -> ``(y, indices)`` (same tie / NaN rule as max_pool)."""
    return _select(np.asarray(x), _adaptive_taps(x.shape[2:], output_size), np.greater)


def adaptive_max_pool_grad(x, g, output_size):
    """VJP of :func:`adaptive_max_pool`."""
    _, idx = adaptive_max_pool(x, output_size)
    return _scatter_add(x.shape, g, idx)


# -------------------------------------------------------------------- global


def global_avg_pool(x, n):
    """Mean over the last n axes (float64), axes removed."""
    return np.asarray(x, np.float64).mean(axis=tuple(range(-n, 0)))


def global_max_pool(x, n):
    """Max over the last n axes (NaN propagates; ints exact), axes removed."""
    x = np.asarray(x)
    x = x if np.issubdtype(x.dtype, np.integer) else x.astype(np.float64)
    return x.max(axis=tuple(range(-n, 0)))


def spatial_pyramid_pool(x, levels, method, channels_last_order=False):
    """Spatial pyramid pooling -> ``(B, C * sum(l ** N))``.

    Each level l is adaptive ``method`` ("max" or "avg") pooling to ``(l,) * N``
    bins, flattened per example channel-major ``(C, *bins)``, or bin-major
    ``(*bins, C)`` when ``channels_last_order``; levels are concatenated in order.
    """
    pool = {"max": lambda v, s: adaptive_max_pool(v, s)[0], "avg": adaptive_avg_pool}[method]
    n = x.ndim - 2
    parts = []
    for level in levels:
        y = pool(x, (level,) * n)
        if channels_last_order:
            y = np.moveaxis(y, 1, -1)
        parts.append(y.reshape(x.shape[0], -1))
    return np.concatenate(parts, axis=1)


def masked_global_pool(x, mask, n, method):
    """Global avg / max over the last ``n`` axes of ``(B, C, *S)``, only where ``mask`` (``(B, *S)``) is true.

    A row with no true position gives 0. Loops over (batch, channel) rows.
    """
    x = np.asarray(x, np.float64)
    out = np.zeros(x.shape[:2])
    for b in range(x.shape[0]):
        keep = np.asarray(mask[b], bool)
        for c in range(x.shape[1]):
            values = x[b, c][keep]
            if values.size:
                out[b, c] = values.mean() if method == "avg" else _nan_max(values)
    return out


def _nan_max(values):
    return np.nan if np.isnan(values).any() else values.max()
