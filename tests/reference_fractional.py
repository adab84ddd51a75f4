"""Plain-loop NumPy reference for fractional max pooling (Graham 2014), independent of jaxpool.

Canonical layout ``(B, C, *spatial)``; uniforms ``u`` of shape ``(B, C, N)`` in PyTorch's sample order.
Regions along one axis are lists of half-open ``(start, end)`` intervals; an N-d region is their
Cartesian product, scanned in row-major order (first spatial axis outermost):

* PyTorch's windows (``fractional_max_pool2d/3d`` CPU kernel): ``alpha = (in - k) / (out - 1)`` and
  ``start_i = int((i + u) * alpha) - int(u * alpha)`` in float32, the last start ``in - k``; the 2-d
  kernel reads ``u[..., 0]`` for the width and ``u[..., 1]`` for the height, the 3-d kernel in order;
* Graham's pseudo-random boundaries ``a_i = ceil(alpha (i + u)) - ceil(alpha u)``, ``alpha = in / out``,
  in exact rational arithmetic from ``s = u * in`` rounded to float32 (as documented by jaxpool);
  regions ``[a_{i-1}, a_i)`` (disjoint) or ``[a_{i-1}, a_i]`` clipped to the input (overlapping);
* the maximum of a region starts at its first element and is replaced by a strictly greater element
  or a NaN (PyTorch's rule: the first maximum, the last NaN); its gradient goes to that element.
"""

import itertools
import math
from fractions import Fraction

import numpy as np


def torch_sample_axis(n, j):
    """Which of PyTorch's samples drives spatial axis ``j`` of an N-d input."""
    return n - 1 - j if n == 2 else j


def torch_starts(u, size, out, k):
    """PyTorch's window starts for one plane and axis, in float32 like its float32 kernel."""
    if out == 1:
        return [size - k]
    u = np.float32(u)
    alpha = np.float32(size - k) / np.float32(out - 1)
    starts = []
    for i in range(out - 1):
        starts.append(int(np.float32(np.float32(i) + u) * alpha) - int(u * alpha))
    return starts + [size - k]


def torch_intervals(u, size, out, k):
    return [(s, s + k) for s in torch_starts(u, size, out, k)]


def pseudo_random_bounds(u, size, out):
    """Graham's boundaries ``a_0 = 0, ..., a_out = in`` for one plane and axis."""
    s = Fraction(float(np.float32(u) * np.float32(size)))
    c = [math.ceil((i * size + s) / out) for i in range(out + 1)]
    return [ci - c[0] for ci in c]


def intervals_from_bounds(bounds, size, overlapping):
    """Half-open intervals of Graham's regions from boundaries ``a_0..a_out``."""
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out.append((lo, min(hi + 1, size) if overlapping else hi))
    return out


def graham_intervals(u, size, out, overlapping):
    return intervals_from_bounds(pseudo_random_bounds(u, size, out), size, overlapping)


def plane_intervals(u, spatial, out_shape, window=None, overlapping=True):
    """``[b][c][j]`` -> intervals of axis ``j``, from uniforms ``u`` ``(B, C, N)`` (PyTorch's sample order)."""
    n = len(spatial)
    result = []
    for b in range(u.shape[0]):
        row = []
        for c in range(u.shape[1]):
            axes = []
            for j in range(n):
                uj = u[b, c, torch_sample_axis(n, j)]
                if window is None:
                    axes.append(graham_intervals(uj, spatial[j], out_shape[j], overlapping))
                else:
                    axes.append(torch_intervals(uj, spatial[j], out_shape[j], window[j]))
            row.append(axes)
        result.append(row)
    return result


def pool(x, intervals):
    """Region maxima and flat argmax indices: ``(y, index)`` of shape ``(B, C, *out)``."""
    x = np.asarray(x)
    spatial = x.shape[2:]
    out_shape = tuple(len(axis) for axis in intervals[0][0])
    y = np.zeros(x.shape[:2] + out_shape, x.dtype)
    index = np.zeros(x.shape[:2] + out_shape, np.int64)
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        axes = intervals[b][c]
        for o in itertools.product(*(range(m) for m in out_shape)):
            best, best_pos = None, None
            ranges = [range(*axes[j][o[j]]) for j in range(len(spatial))]
            for pos in itertools.product(*ranges):
                v = x[(b, c, *pos)]
                if best is None or v > best or (np.issubdtype(x.dtype, np.floating) and np.isnan(v)):
                    best, best_pos = v, pos
            y[(b, c, *o)] = best
            index[(b, c, *o)] = np.ravel_multi_index(best_pos, spatial)
    return y, index


def pool_grad(x_shape, g, index):
    """Max-id gradient: each ``g`` added at its region's argmax (flat ``index``), float64."""
    dx = np.zeros((x_shape[0], x_shape[1], math.prod(x_shape[2:])))
    g = np.asarray(g, np.float64)
    for b, c in itertools.product(range(x_shape[0]), range(x_shape[1])):
        for o in np.ndindex(index.shape[2:]):
            dx[b, c, index[(b, c, *o)]] += g[(b, c, *o)]
    return dx.reshape(x_shape)
