"""Plain-loop NumPy references for GeM, SoftPool, median and blur pooling (test oracles).

Independent of ``jaxpool``; written from the papers' definitions, in float64. Canonical layout
``(B, C, *spatial)``; ``window``/``strides`` are N-tuples, ``padding`` N ``(lo, hi)`` pairs. Windows
come from :mod:`tests.reference` (PyTorch's output sizes, in-input taps only), so padding is
excluded everywhere: each window reduces over its real elements.
"""

import math

import numpy as np

from tests import reference as ref


def _window_reduce(x, window, strides, padding, reduce):
    """``reduce(values)`` over each window; ``values`` is ``(B, C, count)`` of the window's real elements."""
    x = np.asarray(x, np.float64)
    taps = ref._sliding_taps(x.shape[2:], window, strides, padding, (1,) * len(window), False)
    y = np.zeros(ref._out_shape(x, taps))
    for o, window_taps in ref._windows(taps):
        y[(..., *o)] = reduce(np.stack([x[(..., *p)] for p in window_taps], axis=-1))
    return y


def gem_pool(x, p, window, strides, padding, eps=1e-6):
    """``(mean of max(x, eps) ** p over the window's real elements) ** (1 / p)``."""
    return _window_reduce(x, window, strides, padding, lambda v: np.mean(np.maximum(v, eps) ** p, axis=-1) ** (1 / p))


def global_gem_pool(x, p, n, eps=1e-6):
    """GeM over the last ``n`` axes, removed."""
    return np.mean(np.maximum(np.asarray(x, np.float64), eps) ** p, axis=tuple(range(-n, 0))) ** (1 / p)


def _softpool(v):
    weights = np.exp(v - v.max(axis=-1, keepdims=True))
    return (weights * v).sum(axis=-1) / weights.sum(axis=-1)


def soft_pool(x, window, strides, padding):
    """``sum(softmax(v) * v)`` over each window's real elements ``v``."""
    return _window_reduce(x, window, strides, padding, _softpool)


def _lower_median(v):
    """The ``(n - 1) // 2``-th smallest (equals ``np.median`` for odd n); NaN if any element is NaN."""
    lower = np.sort(v, axis=-1)[..., (v.shape[-1] - 1) // 2]
    return np.where(np.isnan(v).any(axis=-1), np.nan, lower)


def median_pool(x, window, strides, padding):
    """Lower median of each window's real elements."""
    return _window_reduce(x, window, strides, padding, _lower_median)


def binomial(size):
    """``[C(size - 1, j)] / 2 ** (size - 1)``."""
    return np.array([math.comb(size - 1, j) for j in range(size)]) / 2.0 ** (size - 1)


def blur_pool(x, filter_size, strides):
    """Zhang 2019: reflect-pad ``(f - 1) // 2`` low, ``f // 2`` high, depthwise binomial filter, subsample."""
    x = np.asarray(x, np.float64)
    pads = [((f - 1) // 2, f // 2) for f in filter_size]
    xp = np.pad(x, [(0, 0), (0, 0)] + pads, mode="reflect")
    kernel = np.ones(())
    for f in filter_size:
        kernel = np.multiply.outer(kernel, binomial(f))
    out_shape = tuple((size - 1) // s + 1 for size, s in zip(x.shape[2:], strides))
    y = np.zeros(x.shape[:2] + out_shape)
    for o in np.ndindex(*out_shape):
        for t in np.ndindex(*filter_size):
            y[(..., *o)] += kernel[t] * xp[(..., *(oi * s + ti for oi, s, ti in zip(o, strides, t)))]
    return y


def max_blur_pool(x, window, filter_size, strides, padding):
    """Dense (stride 1) max pooling, then :func:`blur_pool`."""
    dense = ref.max_pool(np.asarray(x, np.float64), window, (1,) * len(window), padding, (1,) * len(window), False)[0]
    return blur_pool(dense, filter_size, strides)


def numerical_vjp(fn, x, ct, h=1e-6):
    """``ct . d fn / d x`` by central differences, all perturbations evaluated in one batched call.

    ``fn`` maps ``(B, C, *S) -> (B, C, *O)`` independently per batch row (every reference does).
    """
    x = np.asarray(x, np.float64)
    m = x.size
    eye = np.eye(m).reshape((m,) + x.shape) * h
    batch = np.concatenate([x[None] + eye, x[None] - eye]).reshape((2 * m * x.shape[0],) + x.shape[1:])
    y = fn(batch).reshape((2, m) + np.shape(ct))
    return ((y[0] - y[1]) / (2 * h) * ct).reshape(m, -1).sum(axis=1).reshape(x.shape)
