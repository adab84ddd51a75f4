"""Float64 NumPy definitions of each op over one window's values, with their derivatives.

Every function takes ``w`` (``(..., K)``: a window's elements in row-major window order, padding
entries 0), ``valid`` (``(..., K)`` bool: False on padding) and the op's fixed ``weights`` (or None),
and returns ``(y, dy/dw)`` with shapes ``(...)`` and ``(..., K)``. They follow the papers and
PyTorch's CPU kernels, independently of jaxpool's code: :mod:`jaxpool.compare.numerics` gathers the
windows and scatters ``ct * dy/dw`` back to the input.
"""

from __future__ import annotations

import numpy as np

GEM_P, GEM_EPS, LP_P = 3.0, 1e-6, 2.0
BLUR_SIZE = 3  # BlurPool's filter size (jaxpool's default): [1, 2, 1] / 4 per axis


def binomial(size: int) -> np.ndarray:
    """Row ``size - 1`` of Pascal's triangle, normalised: ``[1, 2, 1] / 4`` for 3 (Zhang 2019's blur filters)."""
    row = np.array([1.0])
    for _ in range(size - 1):
        row = np.convolve(row, [1.0, 1.0])
    return row / row.sum()


def extremum(w, valid, weights=None, *, op="max"):
    """Max (min): a later element replaces the best when strictly better or NaN (PyTorch: first tie, NaN wins)."""
    del weights
    fill = -np.inf if op == "max" else np.inf
    w = np.where(valid, w, fill)
    best, winner = w[..., 0].copy(), np.zeros(w.shape[:-1], np.int64)
    for k in range(1, w.shape[-1]):
        v = w[..., k]
        take = (v > best if op == "max" else v < best) | np.isnan(v)
        best, winner = np.where(take, v, best), np.where(take, k, winner)
    return best, (np.arange(w.shape[-1]) == winner[..., None]).astype(np.float64)


def average(w, valid, weights=None, *, include_pad=True):
    """Sum over the window / its size (``count_include_pad=True``) or / its real elements."""
    del weights
    count = np.float64(w.shape[-1]) if include_pad else valid.sum(-1, keepdims=True)
    grad = np.broadcast_to(np.where(valid, 1.0, 0.0) / count, w.shape)
    return (np.where(valid, w, 0.0) / count).sum(-1), grad


def lp(w, valid, weights=None):
    """``(sum x^2)^(1/2)`` (PyTorch's ``lp_pool`` with ``norm_type=2``); ``dy/dx = x / y``."""
    del weights
    w = np.where(valid, w, 0.0)
    y = (w**LP_P).sum(-1) ** (1 / LP_P)
    with np.errstate(invalid="ignore", divide="ignore"):
        return y, w ** (LP_P - 1) * y[..., None] ** (1 - LP_P)


def median(w, valid, weights=None):
    """The lower median of the real elements (NaN if any); gradient to the element at that rank of a stable sort."""
    del weights
    keyed = np.where(valid, w, np.inf)
    order = np.argsort(keyed, axis=-1, kind="stable")
    nans = np.isnan(keyed).sum(-1)
    rank = np.where(nans > 0, w.shape[-1] - nans, (valid.sum(-1) - 1) // 2)  # NaN sorts last: its first NaN
    pick = np.take_along_axis(order, np.broadcast_to(rank, keyed.shape[:-1])[..., None], -1)[..., 0]
    return np.take_along_axis(keyed, pick[..., None], -1)[..., 0], (np.arange(w.shape[-1]) == pick[..., None]) * 1.0


def soft(w, valid, weights=None):
    """SoftPool (Stergiou et al. 2021): ``sum softmax(x) x``; ``dy/dx_i = softmax_i (1 + x_i - y)``."""
    del weights
    shifted = np.where(valid, w - np.where(valid, w, -np.inf).max(-1, keepdims=True), -np.inf)
    p = np.exp(shifted) / np.exp(shifted).sum(-1, keepdims=True)
    y = (p * np.where(valid, w, 0.0)).sum(-1)
    return y, p * (1 + w - y[..., None])


def gem(w, valid, weights=None):
    """GeM (Radenović et al. 2018): ``mean(max(x, eps)^p)^(1/p)`` over the real elements, p = 3."""
    del weights
    c = np.maximum(w, GEM_EPS)
    n = valid.sum(-1, keepdims=True)
    m = (np.where(valid, c**GEM_P, 0.0) / n).sum(-1)
    y = m ** (1 / GEM_P)
    grad = np.where(valid & (w > GEM_EPS), c ** (GEM_P - 1) * m[..., None] ** (1 / GEM_P - 1) / n, 0.0)
    return y, grad


def avgmax(w, valid, weights=None):
    """``(avg + max) / 2`` (timm's avgmax; also mixed pooling's expectation at ``mix_prob=0.5``)."""
    (ya, ga), (ym, gm) = average(w, valid), extremum(w, valid)
    return (ya + ym) / 2, (ga + gm) / 2


def stochastic_expectation(w, valid, weights=None):
    """Stochastic pooling at inference (Zeiler & Fergus 2013): ``sum a^2 / sum a`` (0 for an all-zero window)."""
    del weights
    a = np.where(valid, w, 0.0)
    s1, s2 = a.sum(-1), (a * a).sum(-1)
    safe = np.where(s1 > 0, s1, 1.0)
    grad = (2 * a * safe[..., None] - s2[..., None]) / safe[..., None] ** 2
    return np.where(s1 > 0, s2 / safe, 0.0), np.where(s1[..., None] > 0, grad, 0.0)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def gated(w, valid, weights):
    """Gated pooling (Lee et al. 2016): ``s max + (1 - s) avg``, ``s = sigmoid(g . x)`` (padding as 0)."""
    g = weights.reshape(-1)
    (ya, ga), (ym, gm) = average(w, valid), extremum(w, valid)
    s = _sigmoid((np.where(valid, w, 0.0) * g).sum(-1))[..., None]
    y = s[..., 0] * ym + (1 - s[..., 0]) * ya
    return y, s * gm + (1 - s) * ga + s * (1 - s) * (ym - ya)[..., None] * g


def tree(w, valid, weights):
    """Depth-2 tree pooling (Lee et al. 2016): ``s (l0 . x) + (1 - s) (l1 . x)``, ``s = sigmoid(g . x)``."""
    leaves, gate = weights[:2].reshape(2, -1), weights[2].reshape(-1)
    x = np.where(valid, w, 0.0)
    f0, f1 = (x * leaves[0]).sum(-1), (x * leaves[1]).sum(-1)
    s = _sigmoid((x * gate).sum(-1))
    grad = s[..., None] * leaves[0] + (1 - s[..., None]) * leaves[1] + (s * (1 - s) * (f0 - f1))[..., None] * gate
    return s * f0 + (1 - s) * f1, np.where(valid, grad, 0.0)


def linear(w, valid, weights):
    """A fixed linear filter over the window (BlurPool's binomial blur): ``sum_k weights_k x_k``."""
    del valid  # reflect padding: every tap is a real element
    k = weights.reshape(-1)
    return (w * k).sum(-1), np.broadcast_to(k, w.shape)
