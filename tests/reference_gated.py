"""Plain-loop float64 NumPy references for gated max-average and tree pooling, independent of jaxpool.

Lee, Gallagher & Tu 2016, "Generalizing pooling functions in convolutional neural networks: mixed,
gated, and tree". Canonical layout ``(B, C, *spatial)`` and normalised arguments as in
:mod:`tests.reference` (``window``/``strides`` N-tuples, ``padding`` N ``(lo, hi)`` pairs, no
dilation). Each window is enumerated tap by tap in row-major order (first spatial axis outermost),
padding and the ``ceil_mode`` overhang included:

* a dot product ``w . x`` sees padding and overhang taps as 0;
* the max is over the in-input taps only (padding is ``-inf``);
* the average divides the in-input sum by the number of taps inside the explicitly padded extent
  ``[-lo, n + hi)`` on every axis (PyTorch's ``count_include_pad=True``; the overhang never counts).

Weights are ``(*window)`` (shared by all channels) or ``(*window, C)`` (per channel), and for trees
stacks of those. ``sigmoid`` is the logistic function.
"""

import itertools
import math

import numpy as np

from tests.reference import output_size


def window_index(spatial, window, strides, padding, ceil_mode):
    """Per output window and tap: ``(flat input index, inside the input, inside the padded extent)``.

    Three ``(*out, K)`` arrays (``K = prod(window)``); the index is 0 where the tap is outside.
    """
    out = [output_size(n, k, s, lo, hi, 1, ceil_mode) for n, k, s, (lo, hi) in zip(spatial, window, strides, padding)]
    k = math.prod(window)
    index = np.zeros(out + [k], np.int64)
    inside = np.zeros(out + [k], bool)
    counted = np.zeros(out + [k], bool)
    for o in itertools.product(*(range(m) for m in out)):
        for t, offs in enumerate(itertools.product(*(range(w) for w in window))):
            pos = [oi * s - lo + ti for oi, s, (lo, _), ti in zip(o, strides, padding, offs)]
            if all(0 <= p < n for p, n in zip(pos, spatial)):
                index[(*o, t)] = np.ravel_multi_index(pos, spatial)
                inside[(*o, t)] = True
            counted[(*o, t)] = all(-lo <= p < n + hi for p, n, (lo, hi) in zip(pos, spatial, padding))
    return index, inside, counted


def window_values(x, window, strides, padding, ceil_mode):
    """``(B, C, *out, K)`` float64 tap values (0 for padding) and the ``(*out, K)`` masks of :func:`window_index`."""
    x = np.asarray(x, np.float64)
    index, inside, counted = window_index(x.shape[2:], window, strides, padding, ceil_mode)
    values = np.zeros(x.shape[:2] + index.shape)
    flat = x.reshape(x.shape[:2] + (-1,))
    for o in np.ndindex(*index.shape):
        if inside[o]:
            values[(slice(None), slice(None), *o)] = flat[..., index[o]]
    return values, inside, counted


def _per_tap(w, n_out):
    """Weights ``(*window)`` -> ``(K,)``; ``(*window, C)`` -> ``(C, 1, ..., 1, K)`` against ``(B, C, *out, K)``."""
    w = np.asarray(w, np.float64)
    if w.ndim == n_out:  # shared
        return w.reshape(-1)
    return np.moveaxis(w.reshape(-1, w.shape[-1]), 0, -1).reshape((w.shape[-1],) + (1,) * n_out + (-1,))


def window_dot(values, w):
    """``sum_t w_t x_t`` per window: ``(B, C, *out)``."""
    return (values * _per_tap(w, values.ndim - 3)).sum(axis=-1)


def sigmoid(z):
    return np.exp(-np.logaddexp(0.0, -z))


def gated_pool(x, gate_weights, window, strides, padding, ceil_mode):
    """``s * max + (1 - s) * avg``, ``s = sigmoid(w . x)``, per window."""
    values, inside, counted = window_values(x, window, strides, padding, ceil_mode)
    mx = np.where(inside, values, -np.inf).max(axis=-1)
    avg = values.sum(axis=-1) / counted.sum(axis=-1)
    s = sigmoid(window_dot(values, gate_weights))
    return s * mx + (1 - s) * avg


def tree_pool(x, leaf_weights, gate_weights, window, strides, padding, ceil_mode):
    """Root of the heap-ordered tree: node ``k < n - 1`` is ``s_k f_{2k+1} + (1 - s_k) f_{2k+2}`` with
    ``s_k = sigmoid(gate_weights[k] . x)``; node ``n - 1 + m`` is leaf filter ``leaf_weights[m] . x``."""
    values, _, _ = window_values(x, window, strides, padding, ceil_mode)
    n = len(leaf_weights)

    def node(k):
        if k >= n - 1:
            return window_dot(values, leaf_weights[k - (n - 1)])
        s = sigmoid(window_dot(values, gate_weights[k]))
        return s * node(2 * k + 1) + (1 - s) * node(2 * k + 2)

    return node(0)
