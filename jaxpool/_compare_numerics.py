"""The float64 NumPy reference of ``python -m jaxpool.compare``, its errors, and the tie / NaN probe.

The reference is independent of every compared implementation: pad (``-inf`` / ``+inf`` / 0), then
visit the window's taps in row-major order, each tap a strided view of the whole padded array.
Max/min follow PyTorch's CPU rule: a later tap replaces the best one when it is strictly better or
NaN, so ties go to the first element and a NaN wins (the last NaN if several). Average divides the
window sum by the window size (``count_include_pad=True``). The gradient sends each cotangent to the
winner (max/min) or spreads it evenly (avg).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from jaxpool._compare_config import Config

_FILL = {"max": -np.inf, "min": np.inf, "avg": 0.0}


def _tap_views(config: Config):
    """Index tuples selecting, for each window tap in row-major order, its element of every window."""
    out = config.out_shape[1:-1]
    for offsets in itertools.product(*map(range, config.window)):
        spatial = tuple(slice(o, o + s * (n - 1) + 1, s) for o, s, n in zip(offsets, config.strides, out))
        yield (slice(None), *spatial, slice(None))


def _extremum(taps: list[np.ndarray], op: str) -> tuple[np.ndarray, np.ndarray]:
    """The extremum and the index of its tap per output: strictly better or NaN replaces (PyTorch's rule)."""
    best, winner = taps[0].copy(), np.zeros(taps[0].shape, np.int64)
    for k, v in enumerate(taps[1:], start=1):
        take = (v > best if op == "max" else v < best) | np.isnan(v)
        best, winner = np.where(take, v, best), np.where(take, k, winner)
    return best, winner


def reference(config: Config, x: np.ndarray, ct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(y, dx)`` in float64 for input ``x`` and output cotangent ``ct`` (NHWC float64 arrays)."""
    pads = ((0, 0), *config.pads, (0, 0))
    xp = np.pad(x.astype(np.float64), pads, constant_values=_FILL[config.op])
    views = list(_tap_views(config))
    taps = [xp[v] for v in views]
    dxp = np.zeros_like(xp)
    if config.op == "avg":
        size = math.prod(config.window)
        y = sum(taps) / size
        weights = [np.broadcast_to(ct / size, y.shape)] * len(taps)
    else:
        y, winner = _extremum(taps, config.op)
        weights = [np.where(winner == k, ct, 0.0) for k in range(len(taps))]
    for view, w in zip(views, weights):
        dxp[view] += w
    inside = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, x.shape))
    return y, dxp[inside]


def max_abs_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max |actual - expected|`` (NaN where both are NaN counts as equal; a shape mismatch is inf)."""
    if actual.shape != expected.shape:
        return float("inf")
    diff = np.where(np.isnan(actual) & np.isnan(expected), 0.0, np.abs(actual - expected))
    return float(np.where(np.isnan(diff), np.inf, diff).max()) if diff.size else 0.0


def _recipients(window_grad: np.ndarray) -> np.ndarray | None:
    """Flat row-major positions with a non-zero gradient, or None if some gradient is not finite."""
    flat = window_grad.reshape(-1)
    return np.flatnonzero(flat) if np.isfinite(flat).all() else None


def _split_label(positions: np.ndarray, flat: np.ndarray) -> str:
    """Several recipients: ``split`` if they share the cotangent, ``duplicated`` if each got more."""
    return "split" if abs(flat[positions].sum() - 1.0) < 1e-2 else "duplicated"


def tie_recipient(window_grad: np.ndarray) -> str:
    """Who got the gradient of a window of equal values: first, last, #k (flat position), split, none, non-finite."""
    positions = _recipients(window_grad)
    if positions is None:
        return "non-finite"
    if len(positions) != 1:
        return "none" if len(positions) == 0 else _split_label(positions, window_grad.reshape(-1))
    last = window_grad.size - 1
    return {0: "first", last: "last"}.get(int(positions[0]), f"#{positions[0]}")


def nan_recipient(window_grad: np.ndarray, nan_position: int) -> str:
    """Who got the gradient of the probe's NaN window: nan, best (the best non-NaN, first), #k, split, none, non-finite."""
    positions = _recipients(window_grad)
    if positions is None:
        return "non-finite"
    if len(positions) != 1:
        return "none" if len(positions) == 0 else _split_label(positions, window_grad.reshape(-1))
    return {nan_position: "nan", 0: "best"}.get(int(positions[0]), f"#{positions[0]}")


def probe_recipients(probe: Config, y: np.ndarray, dx: np.ndarray) -> dict:
    """Classifies the gradient of :func:`jaxpool._compare_config.probe_input` (tie window, then NaN window)."""
    k = probe.window[-1]
    tie, nan_window = dx[0, ..., :k, 0], dx[0, ..., k:, 0]
    return {
        "tie": tie_recipient(tie),
        "nan": nan_recipient(nan_window, math.prod(probe.window) // 2),
        "nan_forward": bool(np.isnan(y.reshape(-1)[-1])),
    }
