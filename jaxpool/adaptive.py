"""Adaptive, global and spatial pyramid pooling: a fixed output size for any input size.

Adaptive bins are PyTorch's: bin ``i`` of ``out`` over ``n`` inputs spans
``[floor(i*n/out), ceil((i+1)*n/out))`` — bins may overlap, and ``out > n`` repeats inputs. When
the bins are an ordinary pool on every axis (:func:`jaxpool._geometry.adaptive_as_pool`: evenly
dividing sizes, a tiling pool, but also 50 -> 7, windows of 8 every 7) they go to
:func:`jaxpool.max_pool` / :func:`jaxpool.avg_pool` and their lowerings; maxima also when the
windows need padding (14 -> 5, 20 -> 7: 4 every 3 padded by 1 — forward+backward in one process
0.83x and 0.53x, 90 -> 13 0.99x; padding never wins a max; the padded averages measured
1.13-1.28x slower than the bins below and keep them). Otherwise, axis by axis
(``q, r = divmod(size, out)``): long bins (``r <= q``, ``r <= 16``) are a regular strided core plus
at most ``2r - 1`` masked edge taps (:func:`_core_and_fringes`: linear work for any bin length);
short bins have one of at most two lengths, every stride-1 window of each length is reduced by
doubling (:func:`jaxpool._sliding.doubling`) and each bin's start is picked by a
broadcast-reshape-slice (:func:`jaxpool._sliding.pick`); bins of one or two elements, and the
sums of bins of at most four on inputs with several spatial axes (:func:`_picks_sums`), pick each
of their elements instead. Bins that a window of a few taps covers
(:data:`_BIN_TAPS` for maxima, :data:`_BINNED_SUM_TAPS` for sums) may instead be one strided pool
per axis with the taps outside each bin masked (:func:`_binned`, :func:`_max_by_axis`) — or, for
maxima whose bins alternate between two regular pools (28 -> 11: 3 every 5 from 0, 4 every 5 from
2), those two pools interleaved (:func:`_phases`). With
fewer bins than inputs, the derivative is :func:`_spread` — each position takes the cotangent of
the (at most two) bins holding it, or for maxima of the bins it wins — whatever the lowering of the
values. No gather, no scatter, HLO size at most logarithmic in the sizes; a NaN stays in its bins.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal, cast, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool import _chunks, _lowering, _sliding, _symbolic, _taps
from jaxpool._fusion import apart, computed_once, cotangent_once, materialize, results_once
from jaxpool._geometry import adaptive_as_pool, adaptive_bins, adaptive_output_shape, binned_geometry, int_tuple, window_geometry
from jaxpool._layout import Layout, accumulation_dtype, as_pool_input, layout_of, result_dtype
from jaxpool._validate import check_addressable, check_bool, check_choice, check_num_spatial_dims
from jaxpool.avg import avg_pool, window_sum
from jaxpool.max import _extremum_pool, _fill_value, _upcast16, chain_passes, flat_indices, takes_over


def _resolve(x, output_size, data_format):
    if not isinstance(output_size, Sequence) or isinstance(output_size, str):
        raise TypeError(
            f"output_size must be a tuple with one size (or None) per spatial dimension, e.g. (7, 7); got {output_size!r}"
        )
    if len(output_size) == 0:
        raise ValueError("output_size must name at least one spatial dimension, got ()")
    x = as_pool_input(x)
    layout = layout_of(x, len(output_size), data_format, "output_size")
    in_shape = layout.spatial_shape(x.shape)
    if _symbolic.is_symbolic(in_shape):
        raise _symbolic.unsupported("adaptive pooling (also spatial_pyramid_pool)", "its bins depend on them")
    out_shape = adaptive_output_shape(in_shape, output_size)
    check_addressable(layout.with_spatial(x.shape, out_shape), "output_size", output_size)
    return x, layout, in_shape, out_shape, adaptive_as_pool(in_shape, out_shape)


# Above this many repeated elements per row, :func:`jaxpool._sliding.pick` would cost more than a
# gather (sizes with a huge ``out / gcd(in, out)``, e.g. 100000 -> 99999): gather instead.
_PICK_LIMIT = 2**24


def _pickable(size: int, out: int) -> bool:
    """Whether picks between ``size`` and ``out`` rows, either way, stay within :data:`_PICK_LIMIT`
    repeated elements (``lcm(size, out)``)."""
    return math.lcm(size, out) <= _PICK_LIMIT


# Bins of ``q, r = divmod(size, out)`` with at most this many ``r`` go core + fringe (:func:`_core_and_fringes`).
_FRINGE_LIMIT = 16


def _core_and_fringes(
    values: tuple, combine, fills, layout: Layout, i: int, size: int, out: int, idempotent: bool, core_reduce=None
) -> tuple:
    """Uneven bins as one regular strided pool plus at most ``2 r - 1`` masked taps, ``q, r = divmod(size, out)``.

    Bin ``b`` starts at ``b q + c_b`` (``c_b = floor(b r / out) < r``) and ends by ``(b + 1) q + r``,
    so it is the regular core ``[b q + r - 1, (b + 1) q)`` (windows of ``q - r + 1`` every ``q``:
    :func:`jaxpool._sliding.along_axis` — a tiling reduce when ``r = 1`` —; a fold of strided
    slices of the input up to :data:`jaxpool._lowering.CORE_TAPS` taps; beyond, a reshape of the
    input reduced by ``core_reduce(cores, axis, cores_again)`` — the cores and the same cores of
    :func:`jaxpool._fusion.apart` of the input, for a second loop: :func:`_first_max` — or else a
    pairwise tree: linear work for any bin length), the left fringe ``b q + t`` for ``c_b <= t < r - 1``
    and the right fringe ``(b + 1) q + t`` below the bin's end: strided slices with static masks,
    combined in input order.
    """
    axis, (q, r) = layout.spatial_axes[i], divmod(size, out)
    starts, ends = adaptive_bins(size, out)
    bins = np.arange(out)

    def taps(start: int) -> tuple:  # the element at b q + start of every bin b
        return _sliding.strided(values, axis, out, q, start)

    shape = layout.spatial_shape(values[0].shape)
    window = tuple(q - r + 1 if j == i else 1 for j in range(len(shape)))
    strides = tuple(q if j == i else 1 for j in range(len(shape)))
    if _folds_cores(size, out):  # no slice of the input to copy
        result = taps(r - 1)
        for t in range(r, q):
            result = combine(result, taps(t))
    elif not _long_cores(size, out):
        core_shape = tuple(out * q - r + 1 if j == i else n for j, n in enumerate(shape))
        geom = window_geometry(core_shape, window, strides)
        core = tuple(lax.slice_in_dim(v, r - 1, out * q, axis=axis) for v in values)
        result = _sliding.along_axis(core, combine, layout, geom, i, fills=fills, idempotent=idempotent)
    else:  # the last q - r + 1 elements of every block of q: a reshape of the input, never padded

        def cores_of(source: tuple) -> tuple:
            cut = (_sliding.split_axis(lax.slice_in_dim(v, 0, out * q, axis=axis), axis, out, q) for v in source)
            return tuple(lax.slice_in_dim(v, r - 1, q, axis=axis + 1) for v in cut)

        cores = cores_of(values)
        if core_reduce:  # and the cores again, from apart(values), for a second loop over them
            result = core_reduce(cores, axis + 1, cores_of(tuple(apart(v) for v in values)))
        else:
            result = _sliding.tree(cores, combine, fills, axis + 1)

    def masked(mask: np.ndarray, combined: tuple, current: tuple) -> tuple:
        if mask.all():
            return combined
        where = layout.along(mask, i)
        return tuple(jnp.where(where, c, a) for c, a in zip(combined, current))

    for t in range(r):  # right fringe, later elements: (b + 1) q + t < end
        result = masked((bins + 1) * q + t < ends, combine(result, taps(q + t)), result)
    for t in reversed(range(r - 1)):  # left fringe, earlier elements: b q + t >= start
        result = masked(bins * q + t >= starts, combine(taps(t), result), result)
    return result


def _fringed(size: int, out: int) -> bool:
    """Whether :func:`_bins_along` reduces an axis as :func:`_core_and_fringes`."""
    q, r = divmod(size, out)
    return 1 <= r <= min(q, _FRINGE_LIMIT)


def _folds_cores(size: int, out: int) -> bool:
    """Whether :func:`_core_and_fringes` reduces each bin's core as a fold of strided slices of the
    input (cores of more than :data:`jaxpool._lowering.AXIS_TAPS`, at most
    :data:`jaxpool._lowering.CORE_TAPS` elements)."""
    q, r = divmod(size, out)
    return _fringed(size, out) and _lowering.AXIS_TAPS < q - r + 1 <= _lowering.CORE_TAPS


def _short_cores(size: int, out: int) -> bool:
    """Whether :func:`_core_and_fringes` bins have cores of at most
    :data:`jaxpool._lowering.CORE_TAPS` elements, so that a fold over their taps is bounded
    (:func:`_fringe_maxima`)."""
    q, r = divmod(size, out)
    return _fringed(size, out) and q - r + 1 <= _lowering.CORE_TAPS


def _long_cores(size: int, out: int) -> bool:
    """Whether :func:`_core_and_fringes` reduces each bin's core as a reshape of the input (cores
    longer than :data:`jaxpool._lowering.AXIS_TAPS`, ``r >= 2``) rather than strided windows."""
    q, r = divmod(size, out)
    return _fringed(size, out) and q - r + 1 > _lowering.CORE_TAPS and r > 1


# Short bins of at most this many elements are their elements picked and combined (:func:`_bins_along`).
_PICKED_BIN_LENGTH = 4


def _picks_sums(layout: Layout, size: int, out: int) -> bool:
    """Whether adaptive sums along an axis pick every element of each bin (:func:`_bins_along`)
    instead of summing every stride-1 window of each bin length and picking its start: short bins
    (at most :data:`_PICKED_BIN_LENGTH`) of inputs with more than one spatial axis, no wider than
    the pick limit. The windows are input-sized arrays XLA:CPU writes; the picks fuse into one
    output-sized loop. Forward+backward in one process (benchmarks/ab_commit.py), picks / windows:
    64 -> 40 on (16, 64, 64, 32) 0.55, 13 -> 5 on (64, 13, 13, 256) 0.70, 50 -> 30 on (32, 50, 50,
    64) 0.92, 3-D 20 -> 7 and 13 -> 5 0.55; 1-D 2000 -> 700 1.49 (kept as windows), bins of 5-8
    (44 -> 9, 31 -> 8, 90 -> 13) 4-18x slower (XLA:CPU materialised the repeated rows)."""
    if out >= size or layout.n_spatial == 1:
        return False
    starts, ends = adaptive_bins(size, out)
    return (
        (ends - starts).max() <= _PICKED_BIN_LENGTH
        and not _fringed(size, out)
        and not _binned(size, out)
        and _pickable(size, out)
    )


# Uneven bins whose covering window (:func:`jaxpool._geometry.binned_geometry`) has at most this
# many taps may be :func:`_binned`.
_BIN_TAPS = 16


def _covered(size: int, out: int, taps: int = _BIN_TAPS) -> bool:
    """Whether an axis has uneven bins, fewer than its inputs, that a window of at most ``taps``
    taps covers (:func:`jaxpool._geometry.binned_geometry`)."""
    q, r = divmod(size, out)
    return out < size and r > 0 and q + r <= taps


def _bins_along(
    values: tuple, combine, fills, layout: Layout, i: int, size: int, out: int, idempotent=False, core_reduce=None, picked=2
) -> tuple:
    """Reduces PyTorch's adaptive bins along spatial axis ``i`` of ``values`` (a tuple of arrays):
    :func:`_core_and_fringes` when ``size % out`` is small, else every stride-1 window of each bin
    length by doubling and each bin's start picked. Bins of at most ``picked`` elements (sums:
    :func:`_picks_sums`; maxima: one or two elements) pick each of their elements
    (:func:`_bin_rows`) and combine them: no input-sized stride-1 window to compute and keep
    for its pick. For maxima of longer bins that measured slower (adaptive max 50 -> 30 on (32,
    50, 50, 64), bins of 2-3: 15.5 against 8.7 ms per call, profile_fusions.py; so did the short
    window then the next element, 13 -> 5, 90 -> 13: 1.04-1.5x)."""
    if _fringed(size, out):
        return _core_and_fringes(values, combine, fills, layout, i, size, out, idempotent, core_reduce)
    axis = layout.spatial_axes[i]
    starts, ends = adaptive_bins(size, out)
    lengths = ends - starts
    if lengths.max() <= picked:  # each element of every bin picked and combined in
        result = _bin_rows(values, fills, axis, size, out, starts)
        for j in range(1, int(lengths.max())):
            element = _bin_rows(values, fills, axis, size, out, starts, shift=j)
            longer = layout.along(lengths > j, i)
            result = tuple(jnp.where(longer, c, r) for c, r in zip(combine(result, element), result))
        return result
    result: tuple = ()
    for length in sorted(set(lengths.tolist())):
        windows = _sliding.doubling(values, combine, axis, length, 1, size - length + 1, idempotent=idempotent)
        picked = _bin_rows(windows, fills, axis, size, out, starts)
        if not result:
            result = picked
        else:
            chosen = layout.along(lengths == length, i)
            result = tuple(jnp.where(chosen, p, r) for p, r in zip(picked, result))
    return result


def _bin_rows(rows: tuple, fills: tuple, axis: int, size: int, out: int, starts: np.ndarray, shift: int = 0) -> tuple:
    """Row ``starts[b] + shift`` of each of ``rows`` for every bin ``b`` (rows that no start reaches
    may be missing at the end; bins shorter than ``shift + 1`` get any value): a pick
    (:func:`jaxpool._sliding.pick`, the rows padded to ``size``), or a gather past :data:`_PICK_LIMIT`."""
    if not _pickable(size, out):
        return tuple(jnp.take(r, np.minimum(starts + shift, r.shape[axis] - 1), axis=axis) for r in rows)
    padded = tuple(_taps.pad_axis(r, axis, size - r.shape[axis], f) for r, f in zip(rows, fills))
    return tuple(_sliding.pick(r, axis, size, out, shift) for r in padded)


@results_once
def adaptive_avg_pool(x: jax.Array, output_size: Sequence[int | None], *, data_format: str = "channels_last") -> jax.Array:
    """Average over PyTorch's adaptive bins so that the spatial output is ``output_size``.

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)``; N = ``len(output_size)``.
      output_size: N positive sizes; ``None`` keeps that input size. May exceed the input size.
      data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
      ``(*batch, *output_size, C)`` (or channels_first), float dtype as :func:`jaxpool.avg_pool`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # (batch, H, W, C), channels_last
      >>> jaxpool.adaptive_avg_pool(x, (2, 2))[0, ..., 0]
      Array([[ 2.5,  4.5],
             [10.5, 12.5]], dtype=float32)
      >>> jaxpool.adaptive_avg_pool(x, (3, None)).shape  # None keeps that axis
      (1, 3, 4, 1)
    """
    x, layout, in_shape, out_shape, window = _resolve(x, output_size, data_format)
    if window is not None and not any(lo or hi for lo, hi in window[2]):  # padded pools measured slower
        return avg_pool(x, *window[:2], data_format=data_format)
    acc = accumulation_dtype(x.dtype)
    y = x.astype(acc)
    reduced = [i for i in reversed(range(layout.n_spatial)) if in_shape[i] != out_shape[i]]
    for i in reduced:
        size, out = in_shape[i], out_shape[i]
        y = cast(jax.Array, (_bin_sums if _spreads(size, out) else _sums_value)(y, layout, i, size, out))
        starts, ends = adaptive_bins(size, out)
        y = y / layout.along((ends - starts).astype(acc), i)
        if i != reduced[-1] and (_picks_sums(layout, size, out) or _binned(size, out)):
            # fused into the next axis's picks, XLA:CPU would materialise repeated rows; into its
            # masked taps, recompute this axis's taps for each of them
            y = computed_once(y)
    return y.astype(result_dtype(x.dtype))


def _spreads(size: int, out: int) -> bool:
    """Whether the derivative of adaptive bins along an axis is :func:`_spread`: fewer bins than
    inputs (each input in at most two bins), and a pick no longer than :data:`_PICK_LIMIT`."""
    return out < size and _pickable(size, out)


def _bin_cover(size: int, out: int):
    """For every position ``p`` of an axis of ``size`` cut into ``out < size`` adaptive bins: its
    first bin ``floor(p out / size)``, its last bin (the first or the next: bins overlap by at most
    one position), and its offsets from the starts of both."""
    position = np.arange(size)
    first = position * out // size
    last = -(-(position + 1) * out // size) - 1
    starts, _ = adaptive_bins(size, out)
    return first, last, position - starts[first], position - starts[last]


def _spread(g, layout: Layout, i: int, size: int, out: int, offset=None):
    """The transpose of summing adaptive bins along spatial axis ``i``: every position gets the sum
    of ``g`` over the bins that hold it — or, given each bin's winner ``offset`` (from its start),
    over the bins it wins (the max-index rule).

    Two picks (:func:`jaxpool._sliding.pick`): the first bin of every position, and the last one
    (the same pick on the reversed axis: PyTorch's bins are symmetric), selected where it differs.
    O(1) program size for any number of bins, no gather, no scatter; XLA fuses it into one loop.
    Few long bins along an axis followed by under 64 bytes (narrow channels) are one segment per
    bin instead (:func:`_spread_segments`; the picks find each position's bin by a division):
    forward+backward in one process, adaptive max 1-D 100000 -> 7 on (4, 100000, 4) 0.57x, adaptive
    avg 0.58-0.85x; where more follows the axis the picks measured as fast or faster (segments:
    2-D 62 -> 4 on 64 channels 1.17x max, 1.55x avg; (32, 4096, 64) -> 7 0.97x).
    As the tangent map of adaptive sums (its transpose, :func:`jax.linear_transpose`) it replaced
    the ``(size, out)`` membership contraction and JAX's derivative of the sums, forward+backward
    in one process (benchmarks/ab_commit.py), new / before: adaptive avg 20 -> 7 on (32, 20, 20,
    64) 0.33, 13 -> 5 on (64, 13, 13, 256) 0.36, 40 -> 6 0.58, 100 -> 7 0.51, 64 -> 40 on (16,
    64, 64, 32) 0.06 (66 -> 3.7 ms), 62 -> 4 0.15; adaptive max 90 -> 13 0.13, 64 -> 40 0.08."""
    axis = layout.spatial_axes[i]
    if _segmented(size, out, math.prod(g.shape[axis + 1 :]) * g.dtype.itemsize):
        return _spread_segments(g, axis, size, out, offset)
    first, last, from_first, from_last = _bin_cover(size, out)
    zero = jnp.zeros((), g.dtype)
    result = _sliding.pick(g, axis, out, size)
    if offset is not None:
        won = _sliding.pick(offset, axis, out, size).astype(jnp.int32) == layout.along(from_first.astype(np.int32), i)
        result = jnp.where(won, result, zero)
    if (last == first).all():
        return result
    flipped = lambda a: lax.rev(_sliding.pick(lax.rev(a, (axis,)), axis, out, size), (axis,))  # noqa: E731
    second = layout.along(last != first, i)
    if offset is not None:
        second = second & (flipped(offset).astype(jnp.int32) == layout.along(from_last.astype(np.int32), i))
    return result + jnp.where(second, flipped(g), zero)


# Axes of at most this many adaptive bins, each at least _SEGMENT_LENGTH long, spread by segments.
_SEGMENT_BINS = 16
_SEGMENT_LENGTH = 8


def _segmented(size: int, out: int, trailing_bytes: int) -> bool:
    """Whether :func:`_spread` writes the axis as :func:`_spread_segments`: few long bins along an
    axis followed by narrow channels."""
    narrow = trailing_bytes < _sliding.PACKED_LANE_BYTES
    return narrow and out <= _SEGMENT_BINS and size >= _SEGMENT_LENGTH * out


def _spread_segments(g, axis: int, size: int, out: int, offset=None):
    """:func:`_spread` as one segment per bin, concatenated along ``axis``: the positions whose
    first bin is ``b`` take ``g``'s row ``b`` (given ``offset``, only the bin's winner), and the
    position it shares with bin ``b + 1`` (bins overlap by at most one) also row ``b + 1`` (its
    winner only when at offset 0). Where :func:`_sliding.pick` finds every position's bin by a
    division, each segment is a broadcast of one row: one fused loop, no division, no
    per-position constants; ``out`` segments."""
    first, last, _, _ = _bin_cover(size, out)
    starts, _ = adaptive_bins(size, out)
    zero = jnp.zeros((), g.dtype)

    def row(a, b):
        return lax.index_in_dim(a, b, axis, keepdims=True)

    def won(b, at):  # the rows of bin b's winner, where it is at ``at`` (from the bin's start)
        value = row(g, b)
        return value if offset is None else jnp.where(row(offset, b).astype(jnp.int32) == at, value, zero)

    segments = []
    for b in range(out):
        lo, hi = int(np.searchsorted(first, b)), int(np.searchsorted(first, b, side="right"))
        shape = list(g.shape)
        shape[axis] = hi - lo
        shape = tuple(shape)
        iota_shape = tuple(n if a == axis else 1 for a, n in enumerate(shape))
        at = lax.broadcasted_iota(jnp.int32, iota_shape, axis) + (lo - int(starts[b]))
        segment = jnp.broadcast_to(won(b, at), shape)
        if last[hi - 1] != b:  # the last position is also the next bin's first
            shared = lax.broadcasted_iota(jnp.int32, iota_shape, axis) == hi - lo - 1
            segment = segment + jnp.where(shared, won(b + 1, 0), zero)
        segments.append(segment)
    return lax.concatenate(segments, axis)


def _spread_transposed(t, layout: Layout, i: int, size: int, out: int, offset=None):
    """The linear map whose transpose is :func:`_spread`: sums (or winners' values) over bins, as a
    tangent map whose transpose JAX computes back into :func:`_spread`."""
    shape = jax.ShapeDtypeStruct(t.shape[: layout.spatial_axes[i]] + (out,) + t.shape[layout.spatial_axes[i] + 1 :], t.dtype)
    return jax.linear_transpose(lambda g: _spread(g, layout, i, size, out, offset), shape)(t)[0]


# Uneven bins at least this far apart (``q``) whose covering window has at most this many taps
# (``q + r``) are summed as a masked strided pool (:func:`_binned`).
_BINNED_STRIDE = 3
_BINNED_SUM_TAPS = 24


def _binned(size: int, out: int) -> bool:
    """Whether adaptive sums along an axis are one strided window sum with the taps outside each
    bin masked (:func:`jaxpool._geometry.binned_geometry`, :func:`jaxpool.avg.window_sum`) rather
    than :func:`_bins_along`: bins at least :data:`_BINNED_STRIDE` apart that a window of at most
    :data:`_BINNED_SUM_TAPS` taps covers. The masked taps are strided slices of the unpadded input
    (:func:`jaxpool.avg.window_sum`), so nothing input-sized is written before the sums; the
    derivative is :func:`_spread`. Forward+backward in one process (benchmarks/ab_commit.py)
    against the previous rule (bins at least 6 apart covered by 16 taps, summed from a padded
    phase view, or :func:`_bins_along`): 40 -> 6 on (32, 40, 40, 64) 0.43-0.58, 100 -> 7 on (8,
    100, 100, 64) 0.29-0.48, 90 -> 13 (18 taps) 0.33-0.34, 62 -> 4 on (16, 62, 62, 64) 0.73, 87 ->
    24 0.21-0.52, 44 -> 9 (q = 4) 0.42-0.44, 40 -> 11 (q = 3) 0.30-0.51, 31 -> 8 0.48, 100 -> 30
    0.72-1.11; bins 2 apart measured slower (13 -> 5 on (64, 13, 13, 256) 1.56, 20 -> 7 1.12).
    Maxima take every :func:`_covered` axis binned (:func:`_max_by_axis`)."""
    return _covered(size, out, _BINNED_SUM_TAPS) and size // out >= _BINNED_STRIDE


def _add(a: tuple, b: tuple) -> tuple:
    return (a[0] + b[0],)


def _sums_value(y, layout: Layout, i: int, size: int, out: int):
    """Sums over PyTorch's adaptive bins along spatial axis ``i``: one masked strided window sum
    (:func:`_binned`) or :func:`_bins_along` — IEEE sums of the elements of each bin (a
    contraction with 0/1 bin membership would let ``0 * inf`` leak a NaN into other bins)."""
    if _binned(size, out):
        return window_sum(y, layout, binned_geometry(layout.spatial_shape(y.shape), i, out))
    picked = _PICKED_BIN_LENGTH if _picks_sums(layout, size, out) else 2
    return _bins_along((y,), _add, (0,), layout, i, size, out, picked=picked)[0]


_bin_sums = jax.custom_jvp(_sums_value, nondiff_argnums=(1, 2, 3, 4))
_bin_sums.__doc__ = """:func:`_sums_value` with the tangent map :func:`_spread_transposed`: the backward is :func:`_spread`."""


@_bin_sums.defjvp
def _bin_sums_jvp(layout: Layout, i: int, size: int, out: int, primals, tangents):
    (y,), (ty,) = primals, tangents
    return _bin_sums(y, layout, i, size, out), _spread_transposed(ty, layout, i, size, out)


def _first_max(values: tuple, axis: int, again: tuple) -> tuple:
    """Long cores of :func:`_core_and_fringes` (``axis``: each bin's core; ``again``: the same
    cores from :func:`jaxpool._fusion.apart` of the input) in the derivative's forward pass: the
    maximum and its position in chunks (:func:`jaxpool._chunks.extremum_and_winner`, PyTorch's tie
    and NaN winner), loops that read the input in place. Before, two plain reductions of the cores
    (which XLA:CPU copied first; ``_sliding.extremum_and_winner``), and before those a pairwise tree
    of (value, position) pairs (0.43-0.50x of that tree for 62 -> 4 on (16, 62, 62, 64)).
    Forward+backward in one process, chunks / reductions: 1-D 100000 -> 7 on (4, 100000, 4) 0.42
    (1.17x PyTorch), (16, 1000, 64) -> 7 0.44, 2-D 500 -> 7 on (8, 500, 500, 8) 0.88 (the 63 MB copy
    of its cores gone; what remains is mostly the backward's fresh gradient). Inference takes the
    maxima alone (:func:`_bin_maxima`)."""
    x, position = values
    y, offset = _chunks.extremum_and_winner(x, axis, "max", again[0])
    return y, lax.index_in_dim(position, 0, axis, keepdims=False) + offset


def _later_wins(a: tuple, b: tuple) -> tuple:
    """Combines blocks of bins, earlier ``a`` with later ``b`` (a value and its passengers): PyTorch's
    rule, the later wins if strictly greater or NaN."""
    take = _taps.improves(b[0], a[0], "max")
    return tuple(jnp.where(take, new, old) for new, old in zip(b, a))


def _bin_extremum_value(x, layout: Layout, i: int, size: int, out: int):
    """Maxima over PyTorch's adaptive bins along spatial axis ``i`` (:func:`_bins_along`; long
    cores by :func:`_first_max`) and their winners' offsets from the bin starts (uint8 for bins of
    at most 256 elements). The blocks combine earlier with later, so PyTorch's rule is "the later
    wins if strictly greater or NaN"."""

    if _short_cores(size, out):
        return _fringe_maxima(x, layout, i, size, out)
    position = jnp.broadcast_to(layout.along(np.arange(size, dtype=np.int32), i), x.shape)
    fills = (_fill_value(x.dtype, "max"), np.iinfo(np.int32).max)
    core_reduce = _first_max if _long_cores(size, out) else None
    y, winner = _bins_along((x, position), _later_wins, fills, layout, i, size, out, idempotent=True, core_reduce=core_reduce)
    starts, ends = adaptive_bins(size, out)
    offset = winner - layout.along(starts.astype(np.int32), i)
    return y, offset.astype(jnp.uint8 if (ends - starts).max() <= 256 else jnp.int32)


def _bin_maxima_and_offsets(x, layout: Layout, i: int, size: int, out: int):
    """:func:`_bin_extremum_value` by two reductions of plain values instead of one of (value,
    position) pairs, whose doubling and picks XLA:CPU runs several times slower: the maxima ``y``,
    then each bin's winner from the maximum over the bin of one int32 score per position —
    ``size + p`` at a NaN (the last NaN wins), ``size - 1 - p`` where ``x`` equals the maximum of
    the *later* of the two bins that may hold ``p`` (the first such ``p`` wins), else -1. The later
    bin's maximum is wrong only at a bin's last position, shared with the next bin; there a false
    match scores lowest of all and wins only when nothing earlier matches, and so does a missed
    one, because a bin with no earlier match has its maximum at its last position (the score is
    floored at it). Forward+backward in one process against the pairs: adaptive max 90 -> 13 on
    (8, 90, 90, 64) 0.21x (1.5x PyTorch), 64 -> 40 on (16, 64, 64, 32) 0.47x (1.1x). Long cores
    (:func:`_long_cores`) keep the pairs with :func:`_first_max` (1-D 100000 -> 7: 1.46x slower
    this way)."""
    axis = layout.spatial_axes[i]
    (y,) = _bins_along((x,), _later_wins, (_fill_value(x.dtype, "max"),), layout, i, size, out, idempotent=True)
    later = lax.rev(_sliding.pick(lax.rev(y, (axis,)), axis, out, size), (axis,))  # each position's later bin
    position = layout.along(np.arange(size, dtype=np.int32), i)
    score = jnp.where(x == later, size - 1 - position, -1)
    if jnp.issubdtype(x.dtype, jnp.floating):
        score = jnp.where(jnp.isnan(x), size + position, score)
    (best,) = _bins_along((score,), _larger, (-1,), layout, i, size, out, idempotent=True)
    starts, ends = adaptive_bins(size, out)
    last = layout.along((size - ends).astype(np.int32), i)  # the score of each bin's last position
    winner = jnp.where(best >= size, best - size, size - 1 - jnp.maximum(best, last))
    offset = winner - layout.along(starts.astype(np.int32), i)
    return y, offset.astype(jnp.uint8 if (ends - starts).max() <= 256 else jnp.int32)


def _larger(a: tuple, b: tuple) -> tuple:
    return (jnp.maximum(a[0], b[0]),)


def _fringe_maxima(x, layout: Layout, i: int, size: int, out: int):
    """:func:`_bin_extremum_value` for :func:`_fringed` axes whose cores fold taps (not
    :func:`_long_cores`): the maxima ``y`` by a fold of ``lax.max`` (NaN-propagating; between
    ``-0.0`` and ``+0.0`` it keeps ``+0.0``, where PyTorch keeps the first), then each bin's
    winner as two chains of selects over strided slices of ``x`` (the element ``b q + t`` of every
    bin ``b``, masked outside it), which XLA fuses into one loop: the first element equal to the
    bin's maximum (the chain built from the last tap to the first, so the first match is written
    last: PyTorch's first maximum, ``-0.0`` and ``+0.0`` alike) and, for floats, the last NaN (the
    chain built in input order) where the maximum is NaN. A compare and a select per tap and
    chain: forward with offsets, adaptive max 62 -> 4 on (16, 62, 62, 64), 0.62-0.68x the maximum
    of a per-tap score (``size + p`` at a NaN, ``size - 1 - p`` at a match, else -1: a compare,
    an or, two selects and a maximum per tap); forward+backward in one process
    (benchmarks/ab_commit.py) 62 -> 4 0.79-0.90x, 100 -> 6 on (8, 100, 100, 64) 0.79-0.87x. A fold of
    PyTorch's select (``take = v > best or isnan(v)``) instead of ``lax.max`` for the values ran
    2.2x slower."""
    axis, (q, r) = layout.spatial_axes[i], divmod(size, out)
    (y,) = _core_and_fringes((x,), _larger, (_fill_value(x.dtype, "max"),), layout, i, size, out, True)
    starts, ends = adaptive_bins(size, out)
    taps = []  # (element b q + t of every bin, its offset from the bin's start, where it is in the bin)
    for t in range(q + r):
        position = np.arange(out) * q + t
        inside = (position >= starts) & (position < ends)
        if inside.any():
            (v,) = _sliding.strided((x,), axis, out, q, t)
            taps.append((v, layout.along((position - starts).astype(np.int32), i), layout.along(inside, i)))

    def chain(order, hit):
        winner = jnp.zeros(y.shape, jnp.int32)
        for v, offset, inside in order:
            winner = jnp.where(hit(v) & inside, offset, winner)
        return winner

    winner = chain(reversed(taps), lambda v: v == y)
    if jnp.issubdtype(x.dtype, jnp.floating):
        winner = jnp.where(jnp.isnan(y), chain(taps, lambda v: v != v), winner)
    return y, winner.astype(jnp.uint8 if (ends - starts).max() <= 256 else jnp.int32)


def _bin_maxima(x, layout: Layout, i: int, size: int, out: int):
    """The maxima alone of :func:`_bin_extremum_value` (inference, integers): long cores by
    :func:`jaxpool._chunks.extremum`, one loop over the input where the winners take a second
    (their select chains feed the maxima's NaN test, so XLA cannot drop them): adaptive max 500 ->
    7 on (8, 500, 500, 8) forward, in one process, 59.8 ms by the pairwise tree of values that
    preceded both, 8.1 ms with the winners, 5.2-5.5 ms without (PyTorch 6.3-7.0)."""
    if not _long_cores(size, out):
        return _bin_extremum_value(x, layout, i, size, out)[0]
    fills = (_fill_value(x.dtype, "max"),)
    core_maxima = lambda cores, axis, _: (_chunks.extremum(cores[0], axis, "max"),)  # noqa: E731
    return _bins_along((x,), _later_wins, fills, layout, i, size, out, idempotent=True, core_reduce=core_maxima)[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _bin_extremum(x, layout: Layout, i: int, size: int, out: int):
    """:func:`_bin_maxima` with the max-index derivative: each bin's tangent is its winner's
    (:func:`_spread_transposed`, the winners from :func:`_bin_extremum_value` or
    :func:`_bin_maxima_and_offsets`), so the backward pass is :func:`_spread` with the offsets.
    Reverse mode keeps only the offsets (checkpointed, as :func:`jaxpool.max.route_offsets`)."""
    return _bin_maxima(x, layout, i, size, out)


@_bin_extremum.defjvp
def _bin_extremum_jvp(layout: Layout, i: int, size: int, out: int, primals, tangents):
    (x,), (tx,) = primals, tangents
    if _long_cores(size, out) or _short_cores(size, out):
        y, offset = _bin_extremum_value(x, layout, i, size, out)
    else:
        y, offset = _bin_maxima_and_offsets(x, layout, i, size, out)
    route = jax.checkpoint(lambda t, o: _spread_transposed(t, layout, i, size, out, o))
    return y, route(tx, materialize(offset))


def _pooled(size: int, out: int) -> bool:
    """Whether :func:`_max_by_axis` takes an axis as a strided max pool: fewer bins than inputs,
    dividing it evenly or :func:`_covered`."""
    return out < size and (size % out == 0 or _covered(size, out))


# Interleaved pools (:func:`_phases`): at most this many per axis, each strided by at most this much.
_PHASE_LIMIT = 2
_PHASE_STEP = 5


def _phases(size: int, out: int) -> tuple[int, int, np.ndarray, np.ndarray] | None:
    """``(P, D, starts, lengths)`` when PyTorch's bins along a :func:`_covered` axis repeat every
    ``P`` bins ``D`` inputs on, so that bins ``p, p + P, ...`` are one regular pool (windows of
    ``lengths[p]`` every ``D`` from ``starts[p]``), and the covering window (``q + r`` taps, each
    masked somewhere) is at least twice the longest bin: 28 -> 11, 38 -> 15, 20 -> 8 (bins of 3
    and 4 from 0 and 2, every 5), 12 -> 8 and 9 -> 6 (2 and 2 from 0 and 1, every 3). Else ``None``.

    Measured (forward+backward in one process, phases / masked covering window): 28 -> 11 on (16,
    28, 28, 64) 0.72-0.81, 38 -> 15 0.60, 20 -> 8 0.81, 12 -> 8 on (32, 12, 12, 256) 0.76, 9 -> 6
    0.73, 1-D 28 -> 11 0.65, 3-D (16, 28, 28) -> (6, 11, 11) 1.05; and why the limits: three phases
    (20 -> 12, 27 -> 10, 24 -> 9) 1.3-2.9x slower, steps of 7-11 (35 -> 10, 54 -> 12, 77 -> 14)
    2.4-2.7x slower, a covering window under twice the bin (13 -> 5: 5 taps for bins of 4) 1.13x,
    long strides (40 -> 6: 20; 62 -> 4: 31) 3-9x."""
    q, r = divmod(size, out)
    if not _covered(size, out):
        return None
    starts, ends = adaptive_bins(size, out)
    lengths = ends - starts
    if q + r < 2 * lengths.max():
        return None
    for period in range(2, min(_PHASE_LIMIT, out - 1) + 1):
        step = int(starts[period] - starts[0])
        regular = all(
            (np.diff(starts[p::period]) == step).all() and (lengths[p::period] == lengths[p]).all() for p in range(period)
        )
        if regular and step <= _PHASE_STEP:
            return period, step, starts[:period], lengths[:period]
    return None


def _phased_max(y, layout: Layout, i: int, out: int, phases: tuple[int, int, np.ndarray, np.ndarray]):
    """Maxima over the ``out`` bins of axis ``i``, given its :func:`_phases`: one routed strided max
    pass per phase over a slice of ``y`` (:func:`jaxpool.max.chain_passes`: no masked taps, the
    max-index derivative), the shorter phase padded by one output, stacked after the axis and
    reshaped into it."""
    axis = layout.spatial_axes[i]
    period, step, starts, lengths = phases
    count = -(-out // period)
    pooled = []
    for p in range(period):
        n_p = -(-(out - p) // period)
        start, length = int(starts[p]), int(lengths[p])
        piece = lax.slice_in_dim(y, start, start + (n_p - 1) * step + length, axis=axis)
        shape = layout.spatial_shape(piece.shape)
        window = tuple(length if j == i else 1 for j in range(len(shape)))
        strides = tuple(step if j == i else 1 for j in range(len(shape)))
        geom = window_geometry(shape, window, strides)
        z = chain_passes(piece, layout, [(i, lambda _s, g=geom: g)], "max")
        pooled.append(_taps.pad_axis(z, axis, count - n_p, _fill_value(y.dtype, "max")))
    stacked = jnp.stack(pooled, axis=axis + 1)
    shape = list(y.shape)
    shape[axis] = count * period
    return lax.slice_in_dim(stacked.reshape(shape), 0, out, axis=axis)


def _max_by_axis(x, layout: Layout, in_shape, out_shape):
    """Maxima over adaptive bins one axis at a time. :func:`_phases` axes are two interleaved
    strided passes (:func:`_phased_max`, computed once before the next axis). Evenly dividing and
    :func:`_covered` axes are a strided :func:`jaxpool.max_pool` pass with the taps outside each bin masked
    (:func:`jaxpool._geometry.binned_geometry`), chained by :func:`jaxpool.max.chain_passes` — in
    :func:`jaxpool._lowering.pass_order` when every reduced axis is one (40 -> 6, 100 -> 7: first
    axis first) —; several uneven axes whose first has long cores go first axis first
    (:func:`_bins_rows_first`); others, last axis first, are :func:`_bin_extremum`, whose output's cotangent is
    computed once (:func:`jaxpool._fusion.cotangent_once`) when it at least halves the axis: the
    next :func:`_spread` reads it twice per element (forward+backward in one process, with / without:
    62 -> 4 on (16, 62, 62, 64) 0.92-0.94x, 90 -> 13 on (8, 90, 90, 64) 0.90-0.99x, but 64 -> 40 on
    (16, 64, 64, 32) 1.15-1.32x). Covered bins stay binned even
    where :func:`_bin_extremum` measured faster (20 -> 7 on (32, 20, 20, 64) 0.5x): its picks
    along a spatially sharded axis gather (adaptive max 16 -> 6 under 4-way W sharding: 5
    all-gathers, binned none). Exact: the first maximum in row-major order of a bin is, along the
    first axis, the first maximum of its rows' first maxima (the last NaN likewise; in another
    order, :mod:`jaxpool._rowmajor`)."""
    y, pending = _upcast16(x), []

    def pool_pass(i: int):
        n, o = in_shape[i], out_shape[i]
        if n % o == 0:
            return lambda shape: window_geometry(shape, tuple(n // o if j == i else 1 for j in range(len(shape))))
        return lambda shape: binned_geometry(shape, i, o)

    reduced = [i for i in range(layout.n_spatial) if in_shape[i] != out_shape[i]]
    if _rows_first(in_shape, out_shape, reduced):
        pool = _bins_rows_first.fun if jnp.issubdtype(y.dtype, jnp.integer) else _bins_rows_first
        return pool(y, layout, tuple(in_shape), tuple(out_shape)).astype(x.dtype)
    if all(_pooled(in_shape[i], out_shape[i]) and not _phases(in_shape[i], out_shape[i]) for i in reduced):
        order = _lowering.pass_order({i: pool_pass(i)(in_shape) for i in reduced})
        return chain_passes(y, layout, [(i, pool_pass(i)) for i in order], "max").astype(x.dtype)
    for i in reversed(reduced):
        n, o = in_shape[i], out_shape[i]
        phases = _phases(n, o)
        if phases:
            y, pending = chain_passes(y, layout, pending, "max"), []
            y = _phased_max(y, layout, i, o, phases)
            if i != reduced[0]:
                y = materialize(y)
            continue
        if _pooled(n, o):
            pending.append((i, pool_pass(i)))
            continue
        y, pending = chain_passes(y, layout, pending, "max"), []
        y = (_bin_maxima if jnp.issubdtype(y.dtype, jnp.integer) else _bin_extremum)(y, layout, i, n, o)
        if 2 * o <= n:  # the next pass's backward writes this (small) cotangent once, not per read
            y = cotangent_once(y)
    return chain_passes(y, layout, pending, "max").astype(x.dtype)


def _rows_first(in_shape, out_shape, reduced: list[int]) -> bool:
    """Whether :func:`_max_by_axis` reduces the first reduced axis first (:func:`_bins_rows_first`):
    several axes of uneven bins, none pooled, the first with long cores. Its taps are whole
    contiguous rows of the later axes, which XLA:CPU reduces several times faster than runs along
    the axis next to few channels: maxima and winners over 500 -> 7 bins of (8, 500, 500, 8), in
    one process, along H 7.6 ms, along W 36.9 (maxima alone 3.8 and 16.6; the box busy)."""
    dividing = any(_pooled(in_shape[i], out_shape[i]) or _phases(in_shape[i], out_shape[i]) for i in reduced)
    return len(reduced) > 1 and not dividing and _long_cores(in_shape[reduced[0]], out_shape[reduced[0]])


def _rows_first_order(in_shape, out_shape) -> list[int]:
    """:func:`_bins_rows_first`'s passes: the first reduced axis, then the others last first."""
    first, *later = [i for i in range(len(in_shape)) if in_shape[i] != out_shape[i]]
    return [first, *reversed(later)]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _bins_rows_first(x, layout: Layout, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """Maxima over PyTorch's adaptive bins, the first reduced axis first (:func:`_rows_first`), one
    :func:`_bin_maxima` pass per axis. The derivative keeps PyTorch's row-major winner whatever the
    order: each pass's candidates carry their winner's flat position (:func:`_row_major_first`),
    and the tangent is routed through each pass's winner offsets (:func:`_spread`'s transpose),
    as :func:`_bin_extremum`'s."""
    for i in _rows_first_order(in_shape, out_shape):
        x = _bin_maxima(x, layout, i, in_shape[i], out_shape[i])
    return x


@_bins_rows_first.defjvp
def _bins_rows_first_jvp(layout: Layout, in_shape, out_shape, primals, tangents):
    (x,), (tx,) = primals, tangents
    first, *later = order = _rows_first_order(in_shape, out_shape)
    y, offset = _bin_extremum_value(x, layout, first, in_shape[first], out_shape[first])
    offsets = [offset]
    # Each candidate's flat position over the whole spatial volume: row-major order among ties.
    strides = [math.prod(in_shape[j + 1 :]) for j in range(len(in_shape))]
    key = jnp.zeros((), jnp.int32)
    for j, n in enumerate(in_shape):
        if j == first:
            starts, _ = adaptive_bins(n, out_shape[j])
            key = key + (layout.along(starts.astype(np.int32), j) + offset.astype(jnp.int32)) * strides[j]
        else:
            key = key + layout.along(np.arange(n, dtype=np.int32) * strides[j], j)
    key = jnp.broadcast_to(key, y.shape)
    for i in later:
        fills = (_fill_value(y.dtype, "max"), np.iinfo(np.int32).max)
        y, key = _bins_along((y, key), _row_major_first, fills, layout, i, in_shape[i], out_shape[i], idempotent=True)
        starts, ends = adaptive_bins(in_shape[i], out_shape[i])
        offset = key // strides[i] % in_shape[i] - layout.along(starts.astype(np.int32), i)
        offsets.append(offset.astype(jnp.uint8 if (ends - starts).max() <= 256 else jnp.int32))
    for n, (i, offset) in enumerate(zip(order, offsets)):
        route = jax.checkpoint(lambda t, o, i=i: _spread_transposed(t, layout, i, in_shape[i], out_shape[i], o))
        tx = route(tx, materialize(offset))
        if n + 1 < len(order) and 2 * out_shape[i] <= in_shape[i]:  # the next spread reads its cotangent twice
            tx = materialize(tx)
    return y, tx


def _row_major_first(a: tuple, b: tuple) -> tuple:
    """Combines ``(value, flat position)`` candidates, earlier ``a`` with later ``b``: PyTorch's
    winner as a total order (:func:`jaxpool.max.takes_over`), whatever order they meet in."""
    take = takes_over(b[0], b[1], a[0], a[1], "max")
    return tuple(jnp.where(take, new, old) for new, old in zip(b, a))


def _uneven_max(x, layout: Layout, in_shape, out_shape, indices: bool) -> tuple[jax.Array, jax.Array | None]:
    """Axis-by-axis maxima over uneven bins. Blocks combine in input order, so PyTorch's rule is "the
    later wins if strictly greater or NaN"; with ``indices`` each candidate carries its flat input
    position (a total order, :func:`jaxpool.max.takes_over`)."""

    def combine(a, b):
        take = takes_over(b[0], b[1], a[0], a[1], "max") if indices else _taps.improves(b[0], a[0], "max")
        return tuple(jnp.where(take, new, old) for new, old in zip(b, a))

    values: tuple = (x,)
    fills: tuple = (_fill_value(x.dtype, "max"),)
    if indices:
        flat = jnp.zeros((1,) * layout.ndim, jnp.int32)
        for i, n in enumerate(in_shape):
            flat = flat * n + layout.along(np.arange(n, dtype=np.int32), i)
        values, fills = values + (jnp.broadcast_to(flat, x.shape),), fills + (np.iinfo(np.int32).max,)
    for i in reversed(range(len(in_shape))):
        values = _bins_along(values, combine, fills, layout, i, in_shape[i], out_shape[i], idempotent=True)
    first, *rest = values
    return first, (rest[0] if rest else None)


@overload
def adaptive_max_pool(
    x: jax.Array, output_size: Sequence[int | None], *, return_indices: Literal[False] = False, data_format: str = "channels_last"
) -> jax.Array: ...


@overload
def adaptive_max_pool(
    x: jax.Array, output_size: Sequence[int | None], *, return_indices: Literal[True], data_format: str = "channels_last"
) -> tuple[jax.Array, jax.Array]: ...


@overload
def adaptive_max_pool(
    x: jax.Array, output_size: Sequence[int | None], *, return_indices: bool = False, data_format: str = "channels_last"
) -> jax.Array | tuple[jax.Array, jax.Array]: ...


@results_once
def adaptive_max_pool(
    x: jax.Array, output_size: Sequence[int | None], *, return_indices: bool = False, data_format: str = "channels_last"
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Maximum over PyTorch's adaptive bins (ties to the first, NaN wins), like :func:`adaptive_avg_pool`.

    With ``return_indices``, also int32 indices over the input's spatial volume, as
    :func:`jaxpool.max_pool`. Scatter-free derivatives in both modes, evenly dividing or not.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # (batch, H, W, C), channels_last
      >>> jaxpool.adaptive_max_pool(x, (2, 2))[0, ..., 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
      >>> jaxpool.adaptive_max_pool(x, (3, 3)).shape  # overlapping bins, as PyTorch
      (1, 3, 3, 1)
    """
    check_bool(return_indices, "return_indices")
    x, layout, in_shape, out_shape, window = _resolve(x, output_size, data_format)
    if window is not None:
        pooled = _extremum_pool(x, *window, None, False, data_format, "argmax", "max", return_indices)
        y, winner, layout, geom = pooled
        index = flat_indices(winner, layout, geom) if return_indices else None
    elif not return_indices and all(n == o or _pooled(n, o) or _spreads(n, o) for n, o in zip(in_shape, out_shape)):
        y, index = _max_by_axis(x, layout, in_shape, out_shape), None
    else:
        y, index = _uneven_max(_upcast16(x), layout, in_shape, out_shape, return_indices)
        y = y.astype(x.dtype)
    return (y, cast(jax.Array, index)) if return_indices else y


def _global_layout(x, num_spatial_dims, data_format, keepdims=False):
    """Checks the global ops' arguments; an empty spatial axis is refused (PyTorch's adaptive max pools
    refuse it too; a mean over nothing would be a silent NaN)."""
    n = check_num_spatial_dims(num_spatial_dims)
    check_bool(keepdims, "keepdims")
    x = as_pool_input(x)
    layout = layout_of(x, int(n or 0), data_format, "num_spatial_dims")
    if 0 in layout.spatial_shape(x.shape):
        raise ValueError(
            f"x has an empty spatial axis (shape {x.shape}, spatial {layout.spatial_shape(x.shape)} with "
            f"num_spatial_dims={n}, {data_format}); global pooling needs at least one position"
        )
    return x, layout


def _channel_mask(mask, x, layout: Layout):
    """Validates a boolean ``(*batch, *spatial)`` mask and inserts the channel axis; ``None`` passes."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be a boolean array over (*batch, *spatial) positions, got dtype {mask.dtype}")
    positions = tuple(d for axis, d in enumerate(x.shape) if axis != layout.channel_axis)
    try:
        mask = jnp.broadcast_to(mask, positions)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to x's (*batch, *spatial) positions {positions}"
        ) from None
    return jnp.expand_dims(mask, layout.channel_axis)


@results_once
def global_avg_pool(
    x: jax.Array,
    *,
    num_spatial_dims: int = 2,
    keepdims: bool = False,
    data_format: str = "channels_last",
    mask: jax.Array | None = None,
) -> jax.Array:
    """Mean over all spatial positions: ``(*batch, *spatial, C) -> (*batch, C)``.

    Network in Network's classifier (Lin, Chen & Yan 2013). ``keepdims`` keeps size-1 spatial axes.
    16-bit floats and integers are accumulated in float32.

    ``mask``: optional boolean ``(*batch, *spatial)`` (broadcastable) marking real positions, for
    variable-length inputs (padded sequences, point sets): the mean of the real positions only; a row
    with none gives 0 (never NaN), and masked values — even NaN — never reach the result or gradient.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # (batch, H, W, C), channels_last
      >>> jaxpool.global_avg_pool(x)
      Array([[7.5]], dtype=float32)
      >>> mask = (jnp.arange(4) < 2)[None, :, None] & jnp.ones((1, 4, 4), bool)  # (batch, H, W): the first two rows
      >>> jaxpool.global_avg_pool(x, mask=mask)
      Array([[3.5]], dtype=float32)
    """
    x, layout = _global_layout(x, num_spatial_dims, data_format, keepdims)
    acc = accumulation_dtype(x.dtype)
    mask = _channel_mask(mask, x, layout)
    axes = layout.spatial_axes
    if mask is None and _symbolic.is_symbolic(layout.spatial_shape(x.shape)):
        y = jnp.mean(x, axis=axes, dtype=acc)
    elif mask is None:
        y = _sliding.packed_sum(x.astype(acc), axes) / math.prod(layout.spatial_shape(x.shape))
    else:
        total = _sliding.packed_sum(jnp.where(mask, x.astype(acc), 0), axes)
        count = jnp.sum(mask, axis=axes, dtype=acc)
        y = jnp.where(count > 0, total / jnp.maximum(count, 1), 0)
    y = jnp.expand_dims(y, axes) if keepdims else y
    return y.astype(result_dtype(x.dtype))


@results_once
def global_max_pool(
    x: jax.Array,
    *,
    num_spatial_dims: int = 2,
    keepdims: bool = False,
    data_format: str = "channels_last",
    mask: jax.Array | None = None,
) -> jax.Array:
    """Maximum over all spatial positions, with :func:`jaxpool.max_pool`'s tie, NaN and gradient rules.

    ``mask`` as in :func:`global_avg_pool` (e.g. VoxelNet's per-voxel max over its points): the
    maximum of the real positions; a row with none gives 0, never ``-inf``, and a zero gradient.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # (batch, H, W, C), channels_last
      >>> jaxpool.global_max_pool(x)
      Array([[15.]], dtype=float32)
      >>> jaxpool.global_max_pool(x, keepdims=True).shape
      (1, 1, 1, 1)
    """
    x, layout = _global_layout(x, num_spatial_dims, data_format, keepdims)
    mask = _channel_mask(mask, x, layout)
    masked = x if mask is None else jnp.where(mask, x, jnp.asarray(_fill_value(x.dtype, "max"), x.dtype))
    window = layout.spatial_shape(x.shape)
    if _symbolic.is_symbolic(window):  # jnp.max's derivative: tied maxima share the gradient
        y = jnp.max(masked, axis=layout.spatial_axes, keepdims=True)
    else:
        y = _extremum_pool(masked, window, None, "VALID", None, False, data_format, "argmax", "max")[0]
    if mask is not None:
        y = jnp.where(jnp.any(mask, axis=layout.spatial_axes, keepdims=True), y, jnp.zeros((), y.dtype))
    return y if keepdims else jnp.squeeze(y, axis=layout.spatial_axes)


@results_once
def spatial_pyramid_pool(
    x: jax.Array,
    levels: Sequence[int | Sequence[int]] = (1, 2, 4),
    *,
    method: str = "max",
    num_spatial_dims: int = 2,
    data_format: str = "channels_last",
) -> jax.Array:
    """Spatial pyramid pooling (He, Zhang, Ren & Sun 2014, SPP-net): fixed-length features from any size.

    Each level ``l`` pools the input adaptively to ``l`` bins per spatial axis (an int, or a tuple of
    N bin counts); the levels are flattened and concatenated in order.

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)`` with N = ``num_spatial_dims``.
      levels: non-empty sequence of bin counts.
      method: ``"max"`` (the paper's) or ``"avg"``.

    Returns:
      ``(*batch, C * sum(prod(level)))``. channels_last flattens each level bin-major/channel-minor,
      channels_first channel-major.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.ones((2, 7, 5, 3))
      >>> jaxpool.spatial_pyramid_pool(x, (1, 2, 4)).shape  # 3 * (1 + 4 + 16) features for any H, W
      (2, 63)
    """
    check_choice(method, ("max", "avg"), "method")
    if not isinstance(levels, Sequence) or isinstance(levels, str) or len(levels) == 0:
        raise ValueError(f"levels must be a non-empty sequence of bin counts, e.g. (1, 2, 4); got {levels!r}")
    x, layout = _global_layout(x, num_spatial_dims, data_format)
    pool = adaptive_max_pool if method == "max" else adaptive_avg_pool
    n = layout.n_spatial
    features = []
    for level in levels:
        size = int_tuple(level, n, "levels")
        check_addressable(layout.with_spatial(x.shape, size), "levels", levels)
        pooled = pool(x, size, data_format=data_format)
        batch = pooled.shape[: layout.n_batch]
        features.append(pooled.reshape(batch + (math.prod(pooled.shape[layout.n_batch :]),)))  # no -1: batch may be 0
    return jnp.concatenate(features, axis=-1)
