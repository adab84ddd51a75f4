"""The float64 NumPy reference of ``python -m jaxpool.compare``, its errors, and the tie / NaN probe.

The reference is independent of every compared implementation. For each spatial axis it lists, per
output position, the input positions of that output's window (windowed ops: ``o * stride + k`` in
the padded input; adaptive ops: PyTorch's bins ``[floor(i * in / out), ceil((i + 1) * in / out))``;
global ops: the whole axis; BlurPool: the filter's taps around every stride-th element, reflected
at the edges), gathers every window's elements in row-major window order with a mask
of the real (unpadded) ones, applies the op's definition from :mod:`jaxpool.compare.windows` and
scatters ``cotangent * dy/dx`` back onto the input.
"""

from __future__ import annotations

import math

import numpy as np

from jaxpool.compare import windows
from jaxpool.compare.config import Config


def _axis_windows(config: Config) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Per spatial axis: (padded-input index ``(out, K)``, real-element mask ``(out, K)``, low padding)."""
    spec, spatial = config.spec, config.shape[1:-1]
    axes = []
    for i, n in enumerate(spatial):
        if spec.kind == "blur":  # BlurPool: (f - 1) // 2 reflected elements low, f // 2 high, sampled every stride
            f, stride = windows.BLUR_SIZE, config.strides[i]
            taps = np.arange(-(-n // stride))[:, None] * stride - (f - 1) // 2 + np.arange(f)
            taps = np.abs(taps)  # reflect at the low edge (the edge element is not repeated)
            idx, valid, lo = np.where(taps >= n, 2 * (n - 1) - taps, taps), np.ones(taps.shape, bool), 0
        elif spec.kind == "global":
            idx, valid, lo = np.arange(n)[None], np.ones((1, n), bool), 0
        elif spec.kind == "adaptive":
            out = config.geometry.out_shape[i]
            starts = np.array([j * n // out for j in range(out)])
            sizes = np.array([-(-(j + 1) * n // out) for j in range(out)]) - starts
            k = np.arange(sizes.max())
            idx, valid, lo = np.minimum(starts[:, None] + k, n - 1), k < sizes[:, None], 0
        else:
            lo = config.pads[i][0]
            out = config.geometry.out_shape[i]
            idx = np.arange(out)[:, None] * config.strides[i] + np.arange(config.window[i])
            valid = (idx >= lo) & (idx < lo + n)
        axes.append((idx, valid, lo))
    return axes


def reference(config: Config, x: np.ndarray, ct: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(y, dx)`` in float64 for input ``x`` and output cotangent ``ct`` (NHWC); None if the op has no reference."""
    spec = config.spec
    if spec.window is None:
        return None
    from jaxpool.compare.ops import weights

    axes = _axis_windows(config)
    n = len(axes)
    pads = ((0, 0), *((lo, max(0, int(idx.max()) + 1 - lo - size)) for (idx, _, lo), size in zip(axes, x.shape[1:-1])), (0, 0))
    xp = np.pad(x.astype(np.float64), pads)
    index, mask = [], np.ones((1,) * (2 * n), bool)
    for a, (idx, valid, _) in enumerate(axes):
        shape = [1] * (2 * n)
        shape[a], shape[n + a] = idx.shape
        index.append(idx.reshape(shape))
        mask = mask & valid.reshape(shape)
    selector = (slice(None), *index, slice(None))
    gathered = np.moveaxis(xp[selector], -1, 1 + n)  # (N, *out, C, *K)
    window_shape = gathered.shape[2 + n :]
    w = gathered.reshape(*gathered.shape[: 2 + n], -1)
    valid = mask.reshape(1, *mask.shape[:n], 1, -1)  # mask: (*out, *K)
    y, dw = spec.window(w, valid, weights(config))
    out = config.out_shape
    dw = np.where(valid, dw, 0.0) * ct.reshape(y.shape)[..., None]
    dxp = np.zeros_like(xp)
    updates = np.moveaxis(dw.reshape(*dw.shape[:-1], *window_shape), 1 + n, -1)
    # NumPy's stubs type ufunc.at's indices as an int array; a tuple of slices and index arrays is valid indexing there.
    np.add.at(dxp, selector, updates)  # pyright: ignore[reportArgumentType]
    inside = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, x.shape))
    return y.reshape(out), dxp[inside]


def max_abs_error(actual: np.ndarray, expected: np.ndarray | None) -> float | None:
    """``max |actual - expected|`` (NaN where both are NaN counts as equal; a shape mismatch is inf; no reference: None)."""
    if expected is None:
        return None
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
    """Classifies the gradient of :func:`jaxpool.compare.config.probe_input` (tie window, then NaN window)."""
    k = probe.window[-1]
    tie, nan_window = dx[0, ..., :k, 0], dx[0, ..., k:, 0]
    return {
        "tie": tie_recipient(tie),
        "nan": nan_recipient(nan_window, math.prod(probe.window) // 2),
        "nan_forward": bool(np.isnan(y.reshape(-1)[-1])),
    }
