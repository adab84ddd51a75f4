"""Windows as taps: each window element is one strided slice of the padded input.

A pooling window of size ``k`` (per axis) is ``k`` strided slices ("taps") of the padded input, all
of the output's shape; a reduction over the window is an elementwise fold over the taps, which XLA
fuses into one loop. Code that is differentiated takes its taps from :class:`Taps` (row shifts of
stride-phase pieces), whose transposes are edge pads, a concatenate and a reshape: JAX's own
derivative of such code is the phase-interleaved, scatter-free backward pass, in forward and
reverse mode, and under spatial sharding XLA partitions it into halo exchanges, never a gather.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool import _linear
from jaxpool._geometry import WindowGeometry
from jaxpool._layout import Layout


def pad_input(x, layout: Layout, geom: WindowGeometry, fill, axes=None):
    """Pads ``x`` low/high (and by the ceil_mode overhang) on the spatial axes in ``axes`` (default all)."""
    axes = range(geom.ndim) if axes is None else axes
    config = [(0, 0, 0)] * layout.ndim
    for i in axes:
        config[layout.spatial_axes[i]] = (geom.pad_lo[i], geom.pad_hi[i] + geom.overhang[i], 0)
    return lax.pad(x, jnp.asarray(fill, x.dtype), config)


def strided_slice(x, start, limit, strides):
    """``lax.slice(x, start, limit, strides)`` whose transpose spreads the cotangent by a broadcast
    along a new axis, a select and a reshape per strided axis, instead of JAX's interior pad (a
    :func:`jaxpool._linear.linear` pair; the forward is the same slice): XLA's SPMD partitioner
    gives an interior pad onto a sharded axis per-device buffers of the wrong size, or wrong values
    (``tests/test_spatial_sharding.py::test_xla_interior_pad_partitioning``), which broke the
    gradients of plain-program geometries on spatially sharded inputs (avg 11x3/2 on 16 rows over 4
    devices: the heads of :func:`jaxpool._sliding.blocked`). Forward+backward on one device in one
    process, spread / interior pad: adaptive avg 56 -> 5 on (32, 56, 56, 64) 0.97, avg 19x19/2 pad 9
    on (8, 64, 64, 16) 0.96. The taps of :func:`unpadded_tap` and :class:`Taps` keep ``lax.slice``:
    there the spread measured 1.2-1.3x slower (max 5x5/3 pad 1, 25 taps), and no geometry of a
    4-device sweep (max and avg, windows 3-11, strides 2-4, 16-32 rows) partitioned them wrongly."""
    if all(s == 1 for s in strides):
        return lax.slice(x, start, limit)
    shape = x.shape
    return _linear.linear(lambda v: lax.slice(v, start, limit, strides), lambda ct: _spread_strided(ct, shape, start, strides), x)


def _spread_strided(ct, shape, start, strides):
    """The transpose of :func:`strided_slice`: each element of ``ct`` back at its place in ``shape``, zeros elsewhere."""
    zero = jnp.zeros((), ct.dtype)
    config = []
    for axis, (n, first, s) in enumerate(zip(shape, start, strides)):
        m = ct.shape[axis]
        if s > 1:  # each element s times in a row, kept at the first: m * s rows
            expanded = jnp.expand_dims(ct, axis + 1)
            repeated = jnp.broadcast_to(expanded, expanded.shape[: axis + 1] + (s,) + expanded.shape[axis + 2 :])
            first_of_s = lax.broadcasted_iota(jnp.int32, (1,) * (axis + 1) + (s,) + (1,) * (ct.ndim - axis - 1), axis + 1) == 0
            ct = jnp.where(first_of_s, repeated, zero).reshape(ct.shape[:axis] + (m * s,) + ct.shape[axis + 1 :])
        config.append((first, n - first - ct.shape[axis], 0))  # the high end may drop trailing zeros
    return lax.pad(ct, zero, config)


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


def unpadded_tap(x, layout: Layout, geom: WindowGeometry, offsets: dict[int, int], fill, lo: dict[int, int] | None = None):
    """Tap ``offsets`` as a strided slice of the *unpadded* ``x``, padded with ``fill`` where it
    leaves the input: the same values as :func:`tap` of :func:`pad_input`, without a padded copy of
    the input (which XLA:CPU materialises: 5x5/3 pad 1 forward on (32, 56, 56, 64) 19 -> 2 ms under
    the default allocator). ``lo`` ({spatial index: low padding}, default ``geom``'s) covers the
    axes to slice; others are taken whole. Transposed: interior pads (see :func:`strided_slice`).
    """
    lo = {i: geom.pad_lo[i] for i in range(geom.ndim)} if lo is None else lo
    start, limit, stride, config = [0] * x.ndim, list(x.shape), [1] * x.ndim, [(0, 0, 0)] * x.ndim
    for i, pad_lo in lo.items():
        axis, m = layout.spatial_axes[i], geom.out_shape[i]
        s, n = geom.strides[i] if m > 1 else 1, x.shape[axis]
        first = offsets.get(i, 0) * geom.dilation[i] - pad_lo  # element read by output 0
        before = min(m, max(0, -(first // s)))  # outputs before the input
        inside = max(before, min(m, (n - 1 - first) // s + 1))  # outputs before its end
        start[axis] = first + before * s if inside > before else 0
        limit[axis] = start[axis] + (inside - before - 1) * s + 1 if inside > before else 0
        stride[axis] = s if inside - before > 1 else 1  # one element: see tap()
        config[axis] = (before, m - inside, 0)
    return lax.pad(lax.slice(x, start, limit, stride), jnp.asarray(fill, x.dtype), config)


class Taps:
    """Window taps of an input as row shifts of its stride-phase view: cheap and sharding-friendly
    to transpose.

    Each spatial axis ``i`` in ``axes`` (length ``n``, stride ``s``) is viewed as ``(rows, s)``.
    Tap ``t`` reads element ``o * s + t * d - lo`` for output ``o``: with ``t * d - lo = q * s + p``,
    row ``o + q`` of phase ``p`` — one pad per tap (negative = a slice) with ``fill`` where it
    leaves the input. Differentiating code written with these taps gives JAX's own phase-interleaved,
    scatter-free backward pass (transposes are pads, a reshape and, for even sizes, one concatenate
    per axis), in forward and reverse mode, with no custom rule.

    When every strided axis is a multiple of its stride, the view is split (:func:`jax.lax.split`)
    into phase pieces: an input element then adds up only its own phase's taps in the backward pass
    (``ceil(k / s)`` per axis, not ``k``: 8x8/7 windows 6x faster), and under spatial sharding
    every step is local but the row pads, which XLA's SPMD partitioner turns into halo exchanges.
    Other sizes are padded to a multiple of ``s`` first; they split only when that saves at least 4x
    the terms per element (8x8/7 on 50: 12x faster), else taps also pad the view's phase axis (3x3/2
    on 57: 2x faster than splitting, which XLA:CPU materialises; such sizes do not shard evenly).
    With a stride of 3 or more such unsplit taps are instead strided slices of the unpadded input,
    each padded where it leaves it (transposed: interior pads): no padded copy for XLA:CPU to
    materialise (the regular core of uneven adaptive bins, 2 every 4 for 23 -> 5: adaptive avg
    forward+backward on (32, 23, 23, 64) 3.3 -> 2.65 ms), and no reshape of a length that the
    devices of a sharded axis do not divide.

    ``x`` is the unpadded input (``padded=False``: ``geom``'s low padding and overhang are read as
    ``fill``) or one already padded along ``axes`` (``padded=True``, e.g. blur's reflect padding).

    ``sliced=True`` (the max index's derivative, :func:`jaxpool.max._taps_route`): a ragged view
    that splits takes each phase piece as a strided slice of the unpadded input, padded to the
    view's rows, instead of reshaping a padded copy. XLA's SPMD partitioner gathers the reshape
    of a sharded axis whose shards the stride does not divide, and exchanges halos for the slices
    (adaptive max 16 -> 5 with indices, H-sharded over 4 devices: 2 all-gathers of the input ->
    none; forward+backward on one device unchanged, 0.95x). Sums keep the reshape: the slices'
    transposes (interior pads) made avg 4x4/3 on 16 and 8x8/7 on 50 1.3-1.7x slower.
    """

    def __init__(
        self, x, layout: Layout, geom: WindowGeometry, axes=None, fill: float = 0, padded: bool = False, sliced: bool = False
    ):
        self.layout, self.geom = layout, geom
        self.axes = tuple(range(geom.ndim)) if axes is None else tuple(axes)
        self.fill = jnp.asarray(fill, x.dtype)
        self.lo = {i: 0 if padded else geom.pad_lo[i] for i in self.axes}
        self.rows = {i: -(-x.shape[layout.spatial_axes[i]] // self._stride(i)) for i in self.axes}
        config, view_shape, self._row_axis = [(0, 0, 0)] * layout.ndim, [], {}
        spatial = {layout.spatial_axes[i]: i for i in self.axes}
        for axis, size in enumerate(x.shape):
            if axis in spatial:
                i = spatial[axis]
                config[axis] = (0, self.rows[i] * self._stride(i) - size, 0)
                self._row_axis[i] = len(view_shape)
                view_shape += [self.rows[i], self._stride(i)]
            else:
                view_shape.append(size)
        ragged = any(c != (0, 0, 0) for c in config)
        self.split = splits_phases(ragged, *_terms(geom, self.axes))
        self.strided = ragged and not self.split and max(self._stride(i) for i in self.axes) >= 3
        self.x = x
        self._pieces: dict[tuple[int, ...], jax.Array] = {}
        self.view_shape = view_shape
        self.sliced = sliced and ragged and self.split
        # whether tap_sum() transposes by spread()
        self.framed = self.split and not self.sliced and all(self._stride(i) > 1 for i in self.axes)
        if self.strided or self.sliced:
            return
        if ragged:
            x = lax.pad(x, self.fill, config)
        self.view = x.reshape(view_shape)
        self._pieces[()] = self.view

    def _stride(self, i: int) -> int:
        return view_stride(self.geom, i)

    def _piece(self, phases: tuple[int, ...]):
        """The view restricted to ``phases`` (for the first ``len(phases)`` axes; size-1 phase axes)."""
        if phases not in self._pieces and self.sliced:
            self._pieces[phases] = self._sliced_piece(phases)
        if phases not in self._pieces:
            parent = self._piece(phases[:-1])
            i = self.axes[len(phases) - 1]
            s, axis = self._stride(i), self._row_axis[i] + 1
            if s > SPLIT_PHASES:  # only the phase asked for: a split would be s slices, whatever is used
                self._pieces[phases] = lax.slice_in_dim(parent, phases[-1], phases[-1] + 1, axis=axis)
            else:
                for p, part in enumerate(lax.split(parent, (1,) * s, axis) if s > 1 else [parent]):
                    self._pieces[phases[:-1] + (p,)] = part
        return self._pieces[phases]

    def _sliced_piece(self, phases: tuple[int, ...]):
        """Phase piece ``phases`` as a strided slice of the unpadded input, its rows padded with ``fill``."""
        x = self.x
        start, limit, stride = [0] * x.ndim, list(x.shape), [1] * x.ndim
        config = [(0, 0, 0)] * x.ndim
        for i, p in zip(self.axes, phases):
            axis, s = self.layout.spatial_axes[i], self._stride(i)
            count = len(range(p, x.shape[axis], s))
            start[axis] = p if count else 0
            limit[axis] = start[axis] + (count - 1) * s + 1 if count else 0
            stride[axis] = s if count > 1 else 1  # one element: see tap()
            config[axis] = (0, self.rows[i] - count, 0)
        piece = lax.pad(lax.slice(x, start, limit, stride), self.fill, config)
        shape = list(self.view_shape)
        for i in self.axes:
            shape[self._row_axis[i] + 1] = 1
        return piece.reshape(shape)

    def __call__(self, offsets: dict[int, int]):
        if self.strided:
            return unpadded_tap(self.x, self.layout, self.geom, offsets, self.fill, {i: self.lo[i] for i in self.axes})
        phases, config = [], [(0, 0, 0)] * len(self.view_shape)
        out_shape: list[int | None] = list(self.view_shape)
        for i in self.axes:
            q, p = self._row_shift(i, offsets)
            row, m = self._row_axis[i], self.geom.out_shape[i]
            phases.append(p)
            config[row] = (-q, m - self.rows[i] + q, 0)
            if not self.split:
                config[row + 1] = (-p, p + 1 - self._stride(i), 0)
            out_shape[row : row + 2] = [m, None]
        source = self._piece(tuple(phases)) if self.split else self.view
        return lax.pad(source, self.fill, config).reshape([d for d in out_shape if d is not None])

    def _row_shift(self, i: int, offsets: dict[int, int]) -> tuple[int, int]:
        """``(q, p)``: tap ``offsets`` reads row ``o + q`` of phase ``p`` along axis ``i`` for output ``o``."""
        return tap_row(self.geom, i, offsets.get(i, 0), self.lo[i])


def tap_sum(x, layout: Layout, geom: WindowGeometry):
    """Every window's sum as a sum of :class:`Taps` of ``x`` (zero padding). Where the view splits
    into phase pieces at strides of 2 or more (:attr:`Taps.framed`), a linear map
    (:func:`jaxpool._linear.linear`) evaluated as the taps called and summed (XLA:CPU's fastest
    forward loop) and transposed by :func:`spread` (the cotangent padded once into a frame). Each
    form alone loses in the other direction; forward+backward in one process
    (benchmarks/ab_commit.py), against the called taps transposed by JAX: avg 4x4/2 pad 1 on (32,
    56, 56, 64) 0.74-0.85 (the framed sum both ways 1.56), 3x3/2 pad 1 0.86-1.0, 5x5/3 pad 1 0.53
    (the derivative of :func:`jaxpool.avg._phase_derivative`), 4x4/2 pad 1 on 57 (ragged: split)
    0.36. At stride 1 the calls' own transposes win (avg 3x3/1 pad 1 2.6x slower framed)."""
    offsets = [offs for _, offs in window_taps(geom)]

    def called(v):
        taps = Taps(v, layout, geom)
        return sum(taps(offs) for offs in offsets)

    if not Taps(x, layout, geom).framed:
        return called(x)

    def transposed(ct):
        return spread(ct, layout, geom, x.shape)

    return _linear.linear(called, transposed, x)


def spread(ct, layout: Layout, geom: WindowGeometry, in_shape, offset=None):
    """The transpose of :func:`tap_sum`: each input element's sum of the cotangents ``ct`` of the
    windows that hold it — or, given ``offset`` (a max index route's saved winners, one per window,
    :func:`jaxpool.max._taps_route`), of the windows whose winner it is. Phase ``p`` of an axis's
    stride view, row ``m``, adds ``ct[m - q]`` for each tap ``t d - lo = q s + p`` (where that
    window's ``offset`` is the tap). The cotangent (and ``offset``) is padded once into a frame of
    rows around the output, its shifted copies are sliced from the frame one axis at a time (one
    slice per shift of that axis for each shift combination of the axes before), summed per phase
    in PyTorch's order (windows in row-major order: taps last to first), and the phases
    interleaved (a stack and reshape per axis).

    Sliced per tap, the frame's slices gave XLA's SPMD partitioner one halo exchange each on a
    sharded axis; one axis at a time they are fewer, and XLA merges the nested slices back into
    one per tap, so the one-device program is the same loop (ab_commit.py forward+backward, avg
    3x3/2 pad 1, 4x4/2 pad 1, 5x5/2 pad 2 on (32, 56, 56, 64), 3x3x3/2 pad 1: 0.78-1.09, noise).
    Collective-permutes of forward+backward on 4 devices, H / W sharded, before -> now (flax.linen):
    avg 3x3/2 pad 1 16 / 16 -> 7 / 9 (4), 5x5/2 pad 2 51 / 51 -> 20 / 28 (5), 3x3x3/2 pad 1 46 / 46
    -> 15 / 19 (4; D-sharded 47 -> 15). A pad per shift instead of the frame's slices (4 / 5
    permutes for 3x3/2 pad 1) made XLA:CPU write each padded copy: forward+backward 1.2-3.3x
    slower."""
    axes = geom.pooled_axes
    array_axes = [layout.spatial_axes[i] for i in axes]
    strides = [view_stride(geom, i) for i in axes]
    rows = [-(-in_shape[axis] // s) for axis, s in zip(array_axes, strides)]
    taps = []  # per axis, each tap's (tap, row shift, phase), taps that read the input only
    for i, r in zip(axes, rows):
        shifts = [(t, *tap_row(geom, i, t, geom.pad_lo[i])) for t in range(geom.window[i])]
        taps.append([(t, q, p) for t, q, p in shifts if -geom.out_shape[i] <= q < r])
    row_shifts = [{q for _, q, _ in axis_taps} for axis_taps in taps]
    shifted = _shifted_copies(ct, array_axes, rows, row_shifts)
    winners = None if offset is None else _shifted_copies(offset, array_axes, rows, row_shifts)
    zero = jnp.zeros((), ct.dtype)
    phase_sums = {}
    for combo in reversed(list(itertools.product(*taps))):
        key, phase = tuple(q for _, q, _ in combo), tuple(p for _, _, p in combo)
        term = shifted[key]
        if winners is not None:
            tap = dict(zip(axes, (t for t, _, _ in combo)))  # window_taps' row-major flat offset
            flat = int(np.ravel_multi_index(tuple(tap.get(i, 0) for i in range(geom.ndim)), geom.window))
            term = jnp.where(winners[key] == flat, term, zero)
        phase_sums[phase] = term if phase not in phase_sums else phase_sums[phase] + term
    interleaved = _interleave(phase_sums, next(iter(shifted.values())).shape, array_axes, strides)
    limit = list(interleaved.shape)
    for axis in array_axes:
        limit[axis] = in_shape[axis]
    return lax.slice(interleaved, [0] * ct.ndim, limit)


def _shifted_copies(ct, axes, rows, shifts) -> dict[tuple[int, ...], jax.Array]:
    """``ct`` shifted by every combination of ``shifts[n]`` along array axis ``axes[n]`` (row ``m``
    of the copy keyed ``(q_0, q_1, ...)`` holds ``ct[m - q_n]``, zero outside, ``rows[n]`` rows):
    one pad into a frame, then slices one axis at a time."""
    config = [(0, 0, 0)] * ct.ndim
    for axis, r, qs in zip(axes, rows, shifts):
        config[axis] = (max([0, *qs]), max(0, r - ct.shape[axis] - min(qs, default=0)), 0)
    copies = {(): lax.pad(ct, jnp.zeros((), ct.dtype), config)}
    for axis, r, qs in zip(axes, rows, shifts):
        before = config[axis][0]
        copies = {
            key + (q,): lax.slice_in_dim(copy, before - q, before - q + r, axis=axis)
            for key, copy in copies.items()
            for q in sorted(qs)
        }
    return copies


def _interleave(phase_sums: dict, shape, axes, strides) -> jax.Array:
    """One array from its stride-phase pieces ``phase_sums`` (keyed by the phase along each of
    ``axes``; missing pieces are zeros of ``shape``): along each axis, last first, the pieces are
    stacked after it and merged into it (row ``m`` of phase ``p`` becomes row ``m s + p``)."""
    shape = list(shape)
    for n in reversed(range(len(axes))):
        axis, s = axes[n], strides[n]
        zero = jnp.zeros(shape, next(iter(phase_sums.values())).dtype)
        merged = {}
        for prefix in itertools.product(*(range(t) for t in strides[:n])):
            stacked = jnp.stack([phase_sums.get(prefix + (p,), zero) for p in range(s)], axis + 1)
            merged[prefix] = stacked.reshape(shape[:axis] + [shape[axis] * s] + shape[axis + 1 :])
        phase_sums, shape[axis] = merged, shape[axis] * s
    return phase_sums[()]


def tap_row(geom: WindowGeometry, i: int, tap: int, lo: int) -> tuple[int, int]:
    """``(q, p)``: along axis ``i`` (low padding ``lo``), tap ``tap`` reads row ``o + q`` of phase
    ``p`` of the stride view (:class:`Taps`) for output ``o``."""
    return divmod(tap * geom.dilation[i] - lo, view_stride(geom, i))


def view_stride(geom: WindowGeometry, i: int) -> int:
    """The stride of axis ``i``'s phase view (:class:`Taps`): 1 where it has one output."""
    return geom.strides[i] if geom.out_shape[i] > 1 else 1


def _terms(geom: WindowGeometry, axes) -> tuple[int, int]:
    """Taps per window over ``axes``, and per phase piece (:func:`splits_phases`)."""
    taps = math.prod(geom.window[i] for i in axes)
    return taps, math.prod(-(-geom.window[i] * geom.dilation[i] // view_stride(geom, i)) for i in axes)


def pads_a_copy(layout: Layout, geom: WindowGeometry, shape, axes) -> bool:
    """Whether :class:`Taps` of an unpadded input of ``shape`` over ``axes`` (neither ``sliced``)
    reshapes a padded copy of it: some axis is not a multiple of its stride and the view splits."""
    ragged = any(shape[layout.spatial_axes[i]] % view_stride(geom, i) for i in axes)
    return ragged and splits_phases(ragged, *_terms(geom, axes))


# Phase views of strides up to this many split into all their phase pieces at once (one op, whose
# transpose is one concatenate); larger strides slice out only the pieces used, so that program size
# does not grow with the stride (``"blocks"`` routes read a few head taps of blocks of any length:
# adaptive 2059 -> 7 split 294 pieces per axis). Slicing the 2 head taps of 100 -> 7's 16-tap bins
# every 14 instead of splitting measured 1.16x slower forward+backward, so small strides still split.
SPLIT_PHASES = 32


def splits_phases(ragged: bool, taps: int, per_phase: int) -> bool:
    """Whether :class:`Taps` splits its view into phase pieces: always for sizes that are multiples of
    the stride; for ragged ones only when that saves at least 4x the terms per element."""
    return not ragged or taps >= 4 * per_phase


def tap_inside(
    layout: Layout, geom: WindowGeometry, offsets: dict[int, int], *, padding_inside: bool = False
) -> np.ndarray | None:
    """Static mask of outputs whose tap ``offsets`` lies inside the input and inside their window's
    bins (adaptive bins covered by a window, :func:`jaxpool._geometry.binned_geometry`); ``None``
    when all do. With ``padding_inside`` only the bins count: taps of padding hold the fill value."""
    mask = np.ones((1,) * layout.ndim, bool)
    for i, t in offsets.items():
        mask = mask & layout.along((geom.tap_in_bin(i) if padding_inside else geom.tap_inside(i))[:, t], i)
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


def extremum_fold(candidates: Iterable[tuple], mode: str, fill):
    """The extremum alone of ``(value, mask, ...)`` candidates: ``lax.max`` (``lax.min``) over the
    values, those outside ``mask`` (``None``: everywhere inside) replaced by ``fill`` (the dtype's
    lowest, or highest, so a window with any real element takes its extremum; one without,
    ``fill``). Taps of padding that already hold ``fill`` need no mask (:func:`tap_inside`'s ``padding_inside``).

    Equal to :func:`select_fold`'s extremum — XLA's ``max``/``min`` propagate NaN — except for the
    sign of a zero: where a window's maximum is zero and holds both ``-0.0`` and ``+0.0``, ``max``
    returns ``+0.0`` whichever comes first, PyTorch the first (``min``: ``-0.0``). The winner
    (:func:`select_fold`, :func:`jaxpool._sliding.winner_score`) still follows PyTorch's first.
    XLA:CPU runs this fold 2-3x faster than the select fold, which carries a comparison, a NaN test
    and a select per tap (adaptive 28 -> 11's first pass over (16, 28, 28, 64), 8 masked taps: 0.11
    against 0.32 ms, the select fold over pre-masked taps 0.21 ms)."""
    combine = lax.max if mode == "max" else lax.min
    best = None
    for value, inside, *_ in candidates:
        if inside is not None:
            value = jnp.where(inside, value, jnp.asarray(fill, value.dtype))
        best = value if best is None else combine(best, value)
    return best


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


def first_match(candidates: Iterable[tuple], extremum, index_dtype, nan_candidates: Iterable[tuple]):
    """PyTorch's winner among ``(value, inside_mask, index)`` candidates, given their ``extremum``:
    the first real candidate equal to it (a chain of selects built from the last candidate, so the
    first match is written last; ``-0.0`` and ``+0.0`` alike, as PyTorch's strict comparison keeps
    the first of them) or, where the extremum is NaN, the last NaN. Nothing is carried from tap to
    tap but the index, so XLA:CPU fuses every tap into one loop, the padded ones too (the select
    fold's carried best value made it materialise each padded tap first). ``nan_candidates`` are
    the same candidates built from a second set of taps (:func:`jaxpool._fusion.apart` again): a
    padded tap read by both chains would be written to memory as well."""

    def chain(order, hit):
        winner = jnp.zeros(extremum.shape, index_dtype)
        for value, inside, index in order:
            found = hit(value) if inside is None else hit(value) & inside
            winner = jnp.where(found, jnp.asarray(index, index_dtype), winner)
        return winner

    winner = chain(reversed(list(candidates)), lambda v: v == extremum)
    if jnp.issubdtype(extremum.dtype, jnp.floating):
        winner = jnp.where(jnp.isnan(extremum), chain(nan_candidates, lambda v: v != v), winner)
    return winner


def pad_axis(x, axis: int, high: int, fill):
    """Pads ``x`` by ``high`` elements of ``fill`` at the end of ``axis``."""
    if high == 0:
        return x
    config = [(0, 0, 0)] * x.ndim
    config[axis] = (0, high, 0)
    return lax.pad(x, jnp.asarray(fill, x.dtype), config)
