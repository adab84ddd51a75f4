"""Windows as taps: each window element is one strided slice of the padded input.

A pooling window of size ``k`` (per axis) is ``k`` strided slices ("taps") of the padded input, all
of the output's shape; a reduction over the window is an elementwise fold over the taps, which XLA
fuses into one loop. Code that is differentiated takes its taps from :class:`Taps` (contiguous
slices of a stride-phase view), whose transposes are edge pads and a reshape: JAX's own derivative
of such code is the phase-interleaved, scatter-free backward pass, in forward and reverse mode.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._geometry import WindowGeometry
from jaxpool._layout import Layout


def pad_input(x, layout: Layout, geom: WindowGeometry, fill, axes=None):
    """Pads ``x`` low/high (and by the ceil_mode overhang) on the spatial axes in ``axes`` (default all)."""
    axes = range(geom.ndim) if axes is None else axes
    config = [(0, 0, 0)] * layout.ndim
    for i in axes:
        config[layout.spatial_axes[i]] = (geom.pad_lo[i], geom.pad_hi[i] + geom.overhang[i], 0)
    return lax.pad(x, jnp.asarray(fill, x.dtype), config)


def tap(xp, layout: Layout, geom: WindowGeometry, offsets: dict[int, int]):
    """The strided slice of padded ``xp`` holding window element ``offsets`` ({spatial index: t}).

    Forward-only helper (its transpose is an interior pad, which XLA materialises): code that is
    differentiated uses :class:`Taps`. An axis with one output is sliced with stride 1 — XLA's SPMD
    partitioner mis-slices a strided slice whose stride exceeds its extent on a sharded axis
    (``tests/test_spatial_sharding.py::test_xla_strided_slice_partitioning``).
    """
    start, limit, stride = [0] * layout.ndim, list(xp.shape), [1] * layout.ndim
    for i, t in offsets.items():
        axis = layout.spatial_axes[i]
        start[axis] = t * geom.dilation[i]
        stride[axis] = geom.strides[i] if geom.out_shape[i] > 1 else 1
        limit[axis] = start[axis] + (geom.out_shape[i] - 1) * geom.strides[i] + 1
    return lax.slice(xp, start, limit, stride)


class Taps:
    """Window taps of a padded input as contiguous slices of its stride-phase view.

    Each spatial axis ``i`` in ``axes`` of length ``P`` is padded to ``Q * s`` and reshaped to
    ``(Q, s)`` (``s`` = stride): tap ``t`` is phase ``t * d % s``, rows ``t * d // s`` onward. The
    same values as :func:`tap`, but built from a reshape and plain slices, whose transposes are a
    reshape and edge pads: differentiating code written with these taps gives the phase-interleaved,
    scatter-free backward pass (the cotangents of one phase add up in one fused loop, and the phases
    interleave through the reshape) and works in forward mode, with no custom rule.
    """

    def __init__(self, xp, layout: Layout, geom: WindowGeometry, axes=None, fill=0):
        self.layout, self.geom = layout, geom
        self.axes = tuple(range(geom.ndim)) if axes is None else tuple(axes)
        self.padded_shape = xp.shape
        config = [(0, 0, 0)] * layout.ndim
        shape = list(xp.shape)
        for i in sorted(self.axes, key=lambda i: layout.spatial_axes[i], reverse=True):
            axis, s = layout.spatial_axes[i], self._stride(i)
            rows = -(-xp.shape[axis] // s)
            config[axis] = (0, rows * s - xp.shape[axis], 0)
            shape[axis : axis + 1] = [rows, s]
        xp = lax.pad(xp, jnp.asarray(fill, xp.dtype), config) if any(c != (0, 0, 0) for c in config) else xp
        self.view = xp.reshape(shape)
        # Position of each (row, phase) axis pair in the view.
        self._row_axis = {}
        for i in self.axes:
            axis = layout.spatial_axes[i]
            self._row_axis[i] = axis + sum(1 for j in self.axes if layout.spatial_axes[j] < axis)

    def _stride(self, i: int) -> int:
        return self.geom.strides[i] if self.geom.out_shape[i] > 1 else 1

    def __call__(self, offsets: dict[int, int]):
        start, limit = [0] * self.view.ndim, list(self.view.shape)
        out_shape = list(self.padded_shape)
        for i in self.axes:
            row = self._row_axis[i]
            position = offsets.get(i, 0) * self.geom.dilation[i]
            s = self._stride(i)
            start[row], limit[row] = position // s, position // s + self.geom.out_shape[i]
            start[row + 1], limit[row + 1] = position % s, position % s + 1
            out_shape[self.layout.spatial_axes[i]] = self.geom.out_shape[i]
        return lax.slice(self.view, start, limit).reshape(out_shape)


def tap_inside(layout: Layout, geom: WindowGeometry, offsets: dict[int, int]) -> np.ndarray | None:
    """Static mask of outputs whose tap ``offsets`` lies inside the input; ``None`` when all do."""
    mask = np.ones((1,) * layout.ndim, bool)
    for i, t in offsets.items():
        mask = mask & layout.along(geom.tap_inside(i)[:, t], i)
    return None if mask.all() else mask


def window_taps(geom: WindowGeometry, axes=None) -> Iterable[tuple[int, dict[int, int]]]:
    """Row-major (first axis outermost) enumeration of window elements: ``(flat offset, offsets)``."""
    axes = tuple(range(geom.ndim)) if axes is None else tuple(axes)
    for flat, ts in enumerate(itertools.product(*(range(geom.window[i]) for i in axes))):
        yield flat, dict(zip(axes, ts))


def offset_dtype(window_size: int) -> np.dtype:
    """Smallest integer dtype that holds a within-window offset."""
    if window_size <= 256:
        return np.dtype(np.uint8)
    return np.dtype(np.int16) if window_size <= 32767 else np.dtype(np.int32)


def improves(value, best, mode: str):
    """PyTorch's update rule: strictly better (so ties keep the first), or NaN (a NaN wins)."""
    better = value > best if mode == "max" else value < best
    if jnp.issubdtype(value.dtype, jnp.floating):
        better = better | jnp.isnan(value)
    return better


def select_fold(candidates: Iterable[tuple], mode: str, index_dtype):
    """Folds ``(value, inside_mask, index)`` candidates in scan order to ``(extremum, index of winner)``.

    ``inside_mask`` is a static NumPy mask (``None`` = everywhere) of outputs for which the candidate
    is a real input element. The first real element is taken unconditionally, then a candidate
    replaces the current one when :func:`improves` — PyTorch's CPU rule: the first of tied maxima,
    the last NaN. Invalid candidates are never taken. ``index`` is an int or an array.
    """
    candidates = iter(candidates)
    best, seen, index = next(candidates)
    winner = jnp.broadcast_to(jnp.asarray(index, index_dtype), best.shape)
    for value, inside, index in candidates:
        index = jnp.asarray(index, index_dtype)
        take = improves(value, best, mode)
        if seen is not None:
            take = take | ~seen
        if inside is not None:
            take = take & inside
        if seen is not None:
            seen = None if inside is None or np.all(seen | inside) else seen | inside
        best = jnp.where(take, value, best)
        winner = jnp.where(take, index, winner)
    return best, winner


def pad_axis(x, axis: int, high: int, fill):
    """Pads ``x`` by ``high`` elements of ``fill`` at the end of ``axis``."""
    if high == 0:
        return x
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (0, high, 0)
    return lax.pad(x, jnp.asarray(fill, x.dtype), config)
