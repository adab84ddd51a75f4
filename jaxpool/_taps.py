"""Windows as taps: each window element is one strided slice of the padded input.

A pooling window of size ``k`` (per axis) is ``k`` strided slices ("taps") of the padded input, all
of the output's shape; a reduction over the window is an elementwise fold over the taps, which XLA
fuses into one loop. The transpose of a tap is ``lax.pad`` with interior padding, so backward passes
built from taps contain no scatter.
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
    """The strided slice of padded ``xp`` holding window element ``offsets`` ({spatial index: t})."""
    start, limit, stride = [0] * layout.ndim, list(xp.shape), [1] * layout.ndim
    for i, t in offsets.items():
        axis = layout.spatial_axes[i]
        start[axis] = t * geom.dilation[i]
        stride[axis] = geom.strides[i]
        limit[axis] = start[axis] + (geom.out_shape[i] - 1) * geom.strides[i] + 1
    return lax.slice(xp, start, limit, stride)


def spread(contribution, layout: Layout, geom: WindowGeometry, axes=None):
    """Transpose of the taps over ``axes``: sums each tap's values back at its padded positions.

    ``contribution(flat, offsets)`` gives the values of one tap (output-shaped). Instead of
    interior-padding every tap (which XLA materialises), positions are split into phases
    ``p = q * stride + r``: phase ``r`` receives exactly the taps with ``t * dilation % stride == r``,
    each shifted by ``t * dilation // stride`` — plain edge pads that fuse — and the phases are
    interleaved by one concatenate and reshape. Returns an array covering at least the padded input
    (crop it with :func:`unpad`).
    """
    axes = tuple(range(geom.ndim)) if axes is None else tuple(axes)
    strides = [geom.strides[i] for i in axes]
    phase_len = [-(-geom.padded_shape[i] // geom.strides[i]) for i in axes]
    taps_by_phase: dict[tuple[int, ...], list] = {}
    for flat, offs in window_taps(geom, axes):
        phase = tuple(offs[i] * geom.dilation[i] % geom.strides[i] for i in axes)
        taps_by_phase.setdefault(phase, []).append((flat, offs))
    phases = {}
    for phase in itertools.product(*(range(s) for s in strides)):
        total = None
        for flat, offs in taps_by_phase.get(phase, ()):
            values = contribution(flat, offs)
            config = [(0, 0, 0)] * layout.ndim
            for i, q in zip(axes, phase_len):
                shift = offs[i] * geom.dilation[i] // geom.strides[i]
                config[layout.spatial_axes[i]] = (shift, q - geom.out_shape[i] - shift, 0)
            shifted = lax.pad(values, jnp.zeros((), values.dtype), config)
            total = shifted if total is None else total + shifted
        phases[phase] = total
    template = next(v for v in phases.values() if v is not None)
    # Interleave: insert a phase axis after each spatial axis, concatenate innermost first, reshape.
    expanded_shape = list(template.shape)
    for i in sorted(axes, key=lambda i: layout.spatial_axes[i], reverse=True):
        expanded_shape.insert(layout.spatial_axes[i] + 1, 1)
    phase_axis = {
        i: layout.spatial_axes[i] + 1 + sum(1 for j in axes if layout.spatial_axes[j] < layout.spatial_axes[i]) for i in axes
    }

    def interleave(prefix: tuple[int, ...]):
        depth = len(prefix)
        if depth == len(axes):
            values = phases[prefix]
            values = jnp.zeros_like(template) if values is None else values
            return values.reshape(expanded_shape)
        parts = [interleave(prefix + (r,)) for r in range(strides[depth])]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=phase_axis[axes[depth]])

    merged = interleave(())
    out_shape = list(template.shape)
    for i, q, s in zip(axes, phase_len, strides):
        out_shape[layout.spatial_axes[i]] = q * s
    return merged.reshape(out_shape)


def spread_tiles(contribution, layout: Layout, geom: WindowGeometry):
    """:func:`spread` for tiling windows (stride == window, no dilation), all taps in one array op.

    ``contribution(flat)`` receives the row-major in-window offset of every element as an int32 array
    shaped like the output with a window axis after each spatial axis (``(..., out_i, k_i, ...)``) and
    returns values of that (broadcast) shape; a reshape lays the tiles back out. Where :func:`spread`
    emits one shifted array per tap (``K`` of them: thousands for a global window, which XLA compiles
    for minutes), this is a single broadcast, whatever the window size.
    """
    inserted = sorted(layout.spatial_axes)
    offset_axes = {}
    for i, axis in enumerate(layout.spatial_axes):
        offset_axes[i] = axis + 1 + inserted.index(axis)
    expanded = [1] * (layout.ndim + geom.ndim)
    flat = np.zeros((1,) * len(expanded), np.int32)
    for i in range(geom.ndim):
        shape = list(expanded)
        shape[offset_axes[i]] = geom.window[i]
        flat = flat * geom.window[i] + np.arange(geom.window[i], dtype=np.int32).reshape(shape)
    values = contribution(flat)
    tiles = list(values.shape)
    for i in sorted(range(geom.ndim), key=lambda i: offset_axes[i], reverse=True):
        a = offset_axes[i]
        tiles[a - 1 : a + 1] = [tiles[a - 1] * tiles[a]]
    values = values.reshape(tiles)
    config = [(0, 0, 0)] * layout.ndim
    for i, axis in enumerate(layout.spatial_axes):
        config[axis] = (0, geom.padded_shape[i] - geom.out_shape[i] * geom.window[i], 0)
    return lax.pad(values, jnp.zeros((), values.dtype), config)


def unpad(xp, layout: Layout, geom: WindowGeometry, axes=None):
    """Crops padding and overhang (and any excess) off the spatial ``axes`` (default all): inverse of
    :func:`pad_input`."""
    axes = range(geom.ndim) if axes is None else axes
    config = [(0, 0, 0)] * layout.ndim
    for i in axes:
        axis = layout.spatial_axes[i]
        config[axis] = (-geom.pad_lo[i], geom.in_shape[i] + geom.pad_lo[i] - xp.shape[axis], 0)
    return lax.pad(xp, jnp.zeros((), xp.dtype), config)


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


def _better(value, best, mode: str):
    """PyTorch's update rule: strictly better (so ties keep the first), or NaN (a NaN wins)."""
    better = value > best if mode == "max" else value < best
    if jnp.issubdtype(value.dtype, jnp.floating):
        better = better | jnp.isnan(value)
    return better


def select_fold(candidates: Iterable[tuple], mode: str, index_dtype):
    """Folds ``(value, inside_mask, index)`` candidates in scan order to ``(extremum, index of winner)``.

    ``inside_mask`` is a static NumPy mask (``None`` = everywhere) of outputs for which the candidate
    is a real input element. The first real element is taken unconditionally, then a candidate
    replaces the current one when :func:`_better` — PyTorch's CPU rule: the first of tied maxima,
    the last NaN. Invalid candidates are never taken. ``index`` is an int or an array.
    """
    seen = None
    best = winner = None
    for value, inside, index in candidates:
        index = jnp.asarray(index, index_dtype)
        if best is None:
            best, winner, seen = value, jnp.broadcast_to(index, value.shape), inside
            continue
        take = _better(value, best, mode)
        if seen is not None:
            take = take | ~seen
        if inside is not None:
            take = take & inside
        if seen is not None:
            seen = None if inside is None or np.all(seen | inside) else seen | inside
        best = jnp.where(take, value, best)
        winner = jnp.where(take, index, winner)
    return best, winner
