"""Plain-loop NumPy reference for stochastic pooling (Zeiler & Fergus 2013), independent of jaxpool.

Canonical layout ``(B, C, *spatial)`` and normalised arguments as in :mod:`tests.reference`
(``padding`` as ``(lo, hi)`` pairs, no dilation). A window's taps are enumerated in row-major order
(first spatial axis outermost), padding and ``ceil_mode`` overhang included, so a tap's flat number
is its offset inside the window. Negative inputs count as 0 and padding taps as 0 (never sampled).

* ``p_i = a_i / sum(a)`` (all zero where the window has nothing positive);
* the deterministic (inference) output ``sum(p_i * a_i)``, and its gradient;
* the inverse-CDF sample for a uniform ``u``: the first tap whose running sum exceeds ``u * sum(a)``,
  computed in float32 with one addition per tap in row-major order, so that it resolves rounding
  exactly as a float32 fold does; ``-1`` where nothing is positive. Its gradient sends ``g`` to the
  sampled element.
"""

import itertools
import math

import numpy as np

from tests.reference import output_size


def window_positions(spatial, window, strides, padding, ceil_mode):
    """``{output index: [input position or None for padding, per tap in row-major order]}``."""
    out = [output_size(n, k, s, lo, hi, 1, ceil_mode) for n, k, s, (lo, hi) in zip(spatial, window, strides, padding)]
    windows = {}
    for o in itertools.product(*(range(m) for m in out)):
        taps = []
        for t in itertools.product(*(range(k) for k in window)):
            pos = tuple(oi * s - lo + ti for oi, s, (lo, _), ti in zip(o, strides, padding, t))
            taps.append(pos if all(0 <= p < n for p, n in zip(pos, spatial)) else None)
        windows[o] = taps
    return windows


def window_values(x, window, strides, padding, ceil_mode):
    """``(B, C, *out, K)`` clamped values ``max(a, 0)`` of every tap (0 for padding), in ``x``'s dtype."""
    windows = window_positions(x.shape[2:], window, strides, padding, ceil_mode)
    out = tuple(m + 1 for m in max(windows))  # one past the last output index
    values = np.zeros(x.shape[:2] + out + (math.prod(window),), x.dtype)
    for o, taps in windows.items():
        for flat, pos in enumerate(taps):
            if pos is not None:
                values[(slice(None), slice(None), *o, flat)] = np.maximum(x[(slice(None), slice(None), *pos)], 0)
    return values


def probabilities(x, window, strides, padding, ceil_mode):
    """``p_i = a_i / sum(a)`` per window, ``(B, C, *out, K)`` float64; all zero for empty windows."""
    a = window_values(np.asarray(x, np.float64), window, strides, padding, ceil_mode)
    total = a.sum(axis=-1, keepdims=True)
    return np.divide(a, total, out=np.zeros_like(a), where=total > 0)


def weighted_pool(x, window, strides, padding, ceil_mode):
    """Inference output ``sum(p_i * a_i)`` (probabilistic weighting), float64."""
    a = window_values(np.asarray(x, np.float64), window, strides, padding, ceil_mode)
    return (probabilities(x, window, strides, padding, ceil_mode) * a).sum(axis=-1)


def weighted_pool_grad(x, g, window, strides, padding, ceil_mode):
    """VJP of :func:`weighted_pool`: ``d/da_i sum(a^2)/sum(a) = (2 a_i S - Q) / S^2`` for ``a_i > 0``."""
    x = np.asarray(x, np.float64)
    a = window_values(x, window, strides, padding, ceil_mode)
    s, q = a.sum(axis=-1), (a * a).sum(axis=-1)
    dx = np.zeros(x.shape)
    for o, taps in window_positions(x.shape[2:], window, strides, padding, ceil_mode).items():
        so, qo, go = s[(..., *o)], q[(..., *o)], np.asarray(g, np.float64)[(..., *o)]
        for pos in taps:
            if pos is None:
                continue
            ai = x[(..., *pos)]
            with np.errstate(divide="ignore", invalid="ignore"):
                dx[(..., *pos)] += np.where((ai > 0) & (so > 0), go * (2 * ai * so - qo) / so**2, 0)
    return dx


def inverse_cdf(values, u):
    """Offset sampled by uniform ``u`` from one window's clamped tap values (``-1``: nothing positive)."""
    values = np.asarray(values, np.float32)
    running, cumulative = np.float32(0), []
    for v in values:
        running = np.float32(running + v)
        cumulative.append(running)
    threshold = np.float32(u) * running
    return next((flat for flat, c in enumerate(cumulative) if c > threshold), -1)


def sample(x, u, window, strides, padding, ceil_mode):
    """Training output for uniforms ``u`` (``(B, C, *out)``): ``(y, offset)``; ``y = 0``, ``offset = -1``
    where nothing was sampled."""
    a = window_values(np.asarray(x, np.float32), window, strides, padding, ceil_mode)
    offset = np.full(a.shape[:-1], -1, np.int64)
    for idx in np.ndindex(offset.shape):
        offset[idx] = inverse_cdf(a[idx], u[idx])
    picked = np.take_along_axis(a, np.maximum(offset, 0)[..., None], axis=-1)[..., 0]
    return np.where(offset >= 0, picked, 0), offset


def sample_grad(x, g, offset, window, strides, padding, ceil_mode):
    """VJP of :func:`sample`: ``g`` of each window added at its sampled element."""
    dx = np.zeros(x.shape)
    g = np.asarray(g, np.float64)
    for o, taps in window_positions(x.shape[2:], window, strides, padding, ceil_mode).items():
        for b, c in np.ndindex(x.shape[:2]):
            k = offset[(b, c, *o)]
            if k >= 0:
                dx[(b, c, *taps[k])] += g[(b, c, *o)]
    return dx
