"""Window reductions along one axis whose cost does not grow with the window, and tiling reductions.

A reduction is given as ``combine(earlier, later) -> combined`` over tuples of arrays (a sum, or a
max with its position). Everything here is built from slices, pads, reshapes, selects and adds, so
JAX differentiates it in both modes and its transpose has no scatter.

* :func:`along_axis`: every stride-``s``, dilation-``d`` window of ``k`` elements along one axis of
  an already padded array. ``k <= AXIS_TAPS``: a fold over the window's taps (phase-view slices,
  :class:`jaxpool._taps.Taps`). Longer: doubling — level ``j`` holds the reduction of ``2**j``
  consecutive (dilated) elements, ``level[j+1][p] = combine(level[j][p], level[j][p + 2**j d])``;
  a window is the combination of the blocks of ``k``'s binary expansion (disjoint, so sums are
  exact pairwise sums; max needs no care about overlap). ``ceil(log2 k)`` passes at stride 1, then
  one strided slice.
* :func:`blocked`: strided windows from blocks of ``s`` elements, each reduced once by :func:`tree`
  (pairwise halving); linear work for any window and stride.
* :func:`pick`: ``a[floor(i * n / o)]`` for ``i < o`` along one axis — the start of every adaptive
  bin — as a broadcast, reshape and strided slice, not a gather.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from jaxpool import _linear, _lowering, _symbolic, _taps
from jaxpool._fusion import materialize
from jaxpool._geometry import WindowGeometry
from jaxpool._layout import Layout


def _slice(values: tuple, axis: int, start: int, count: int) -> tuple:
    return tuple(lax.slice_in_dim(v, start, start + count, axis=axis) for v in values)


def strided(values: tuple, axis: int, count: int, stride: int, start: int = 0) -> tuple:
    """Elements ``start + o * stride``, ``o < count``, along ``axis`` (stride 1 for one element: XLA's
    SPMD partitioner mis-slices a stride longer than the slice on a sharded axis; transposed by
    :func:`jaxpool._taps.strided_slice`'s spread, not an interior pad)."""
    if count == 1 or stride == 1:
        return _slice(values, axis, start, count)

    def cut(v):
        first, limit, strides = [0] * v.ndim, list(v.shape), [1] * v.ndim
        first[axis], limit[axis], strides[axis] = start, start + (count - 1) * stride + 1, stride
        return _taps.strided_slice(v, first, limit, strides)

    return tuple(cut(v) for v in values)


def doubling(values: tuple, combine, axis: int, k: int, dilation: int, count: int, *, idempotent: bool = False) -> tuple:
    """Stride-1 windows of ``k`` dilated elements along ``axis``: the first ``count`` of them.

    ``idempotent`` reductions (max/min: an element counted twice changes nothing) combine just two
    overlapping blocks of the largest power of two ``<= k``; others (sums) the disjoint blocks of
    ``k``'s binary expansion."""
    levels = [values]  # levels[j]: reductions of 2**j elements, starting at every position
    while 2 ** len(levels) <= k:
        prev, span = levels[-1], 2 ** (len(levels) - 1) * dilation
        n = prev[0].shape[axis] - span
        levels.append(combine(_slice(prev, axis, 0, n), _slice(prev, axis, span, n)))
    if idempotent:
        top, span = levels[-1], 2 ** (len(levels) - 1)
        if span == k:
            return _slice(top, axis, 0, count)
        return combine(_slice(top, axis, 0, count), _slice(top, axis, (k - span) * dilation, count))
    top = len(levels) - 1  # k's highest bit: the first block
    result, offset = _slice(levels[top], axis, 0, count), 2**top
    for j in reversed(range(top)):  # the other blocks of k's binary expansion, in order
        if k >> j & 1:
            result = combine(result, _slice(levels[j], axis, offset * dilation, count))
            offset += 2**j
    return result


# Blocks up to this long are halved without padding (their length cut into powers of two);
# longer ones are padded to a power of two first.
UNPADDED_BLOCK = 16


def tree(values: tuple, combine, fills: tuple, axis: int) -> tuple:
    """Reduces ``axis`` (dropping it) by combining neighbours pairwise, earlier first: ``log2``
    passes, linear work, and the pairwise sum's accuracy. Up to :data:`UNPADDED_BLOCK` elements the
    axis is cut into the powers of two of its length (11 = 8 + 2 + 1), each halved on its own and the
    results combined in order: padding 11 -> 16 made XLA:CPU materialise the padded copy (avg
    12x12/11 on (32, 56, 56, 64) forward+backward 45 -> 7.7 ms in one process, together with
    :func:`blocked` no longer padding the input 56 -> 66). Longer axes are padded with ``fills`` to
    a power of two, which keeps the program O(log) in the length."""
    size = values[0].shape[axis]
    if size > UNPADDED_BLOCK:
        width = 1 << (size - 1).bit_length()
        return _halved(tuple(_taps.pad_axis(v, axis, width - size, f) for v, f in zip(values, fills)), combine, axis)
    widths = [1 << bit for bit in reversed(range(size.bit_length())) if size >> bit & 1]
    starts = [sum(widths[:j]) for j in range(len(widths))]
    result = _halved(_slice(values, axis, starts[0], widths[0]), combine, axis)
    for start, width in zip(starts[1:], widths[1:]):
        result = combine(result, _halved(_slice(values, axis, start, width), combine, axis))
    return result


def _halved(values: tuple, combine, axis: int) -> tuple:
    """:func:`tree` of an axis whose length is a power of two."""
    width = values[0].shape[axis]
    while width > 1:
        width //= 2
        paired = tuple(split_axis(v, axis, width, 2) for v in values)
        earlier, later = (tuple(lax.index_in_dim(v, j, axis + 1, keepdims=False) for v in paired) for j in (0, 1))
        values = combine(earlier, later)
    return tuple(jnp.squeeze(v, axis) for v in values)


def split_axis(v, axis: int, outer: int, inner: int):
    """``v`` with ``axis`` reshaped to ``(outer, inner)`` (row-major)."""
    shape = list(v.shape)
    shape[axis : axis + 1] = [outer, inner]
    return v.reshape(shape)


# Blocks of up to this many elements are summed by :func:`block_sums` from an input that does not
# end on a block boundary without first slicing it: XLA:CPU sums such a window sequentially, whose
# float32 error grows with the block's length (the reshaped slice is reduced pairwise).
SEQUENTIAL_SUM_BLOCK = 64


def block_sums(values: tuple, axis: int, blocks: int, s: int) -> tuple:
    """Sums of the first ``blocks`` blocks of ``s`` elements along ``axis`` of each of ``values``.

    Where the axis ends past the last block, a slice before the reshape is an input-sized copy that
    XLA:CPU writes before reducing; up to :data:`SEQUENTIAL_SUM_BLOCK` elements a block a
    ``reduce_window`` whose window is the block and whose padding drops the tail reads the input
    in place instead (avg 12x12/11, adaptive avg 56 -> 5 on (32, 56, 56, 64): forward+backward
    0.77-0.85x in one process, the 1.6 ms copy gone). Linear with the transpose
    a broadcast of each block's cotangent over its elements (:func:`repeat_rows`), zeros for the
    tail (:func:`jaxpool._linear.linear`: not JAX's dilated ``reduce_window`` transpose)."""

    def summed(v):
        length = v.shape[axis]
        if length == blocks * s or s > SEQUENTIAL_SUM_BLOCK:
            return jnp.sum(split_axis(lax.slice_in_dim(v, 0, blocks * s, axis=axis), axis, blocks, s), axis=axis + 1)
        window = tuple(s if a == axis else 1 for a in range(v.ndim))
        padding = tuple((0, blocks * s - length) if a == axis else (0, 0) for a in range(v.ndim))

        def forward(a):
            return lax.reduce_window(a, jnp.zeros((), a.dtype), lax.add, window, window, padding)

        def transpose(c):
            return _taps.pad_axis(repeat_rows(c, axis, s), axis, length - blocks * s, 0)

        return _linear.linear(forward, transpose, v)

    return tuple(summed(v) for v in values)


def blocked(
    values: tuple, combine, fills: tuple, axis: int, k: int, s: int, out: int, *, idempotent: bool = False, block_reduce=None
) -> tuple:
    """Windows ``[o s, o s + k)``, ``o < out``, for strides ``s > 1``: the axis is cut into blocks of
    ``s``; a window is ``k // s`` whole blocks (each reduced once — by :func:`tree`, or by
    ``block_reduce(values, axis, blocks, s)`` when given, which reduces the first ``blocks`` blocks
    of ``s`` along ``axis``, e.g. :func:`block_sums` —, then combined by :func:`doubling` over
    blocks) and the first ``k % s`` elements of the next block (the heads). Linear work whatever
    ``k`` and ``s`` — no stride-1 pass over windows that are never used. The whole blocks are a
    slice of the input, never padded (XLA:CPU materialises a padded copy); heads of up to
    ``AXIS_TAPS`` elements are strided slices, longer ones blocks of the input padded by less than
    one block."""
    whole, rest = divmod(k, s)
    length = values[0].shape[axis]
    parts = []  # earlier first: the whole blocks, then the next block's head
    if whole:
        blocks = out + whole - 1
        if block_reduce:
            reduced = block_reduce(values, axis, blocks, s)
        else:
            cut = tuple(split_axis(lax.slice_in_dim(v, 0, blocks * s, axis=axis), axis, blocks, s) for v in values)
            reduced = tree(cut, combine, fills, axis + 1)
        parts.append(doubling(reduced, combine, axis, whole, 1, out, idempotent=idempotent))
    if rest:
        first = whole * s  # the first head starts after the first window's whole blocks
        if rest <= _lowering.AXIS_TAPS:
            heads = strided(values, axis, out, s, first)
            for t in range(1, rest):
                heads = combine(heads, strided(values, axis, out, s, first + t))
        else:
            short = max(first + out * s - length, 0)  # the last head's block may end past the input
            padded = tuple(_taps.pad_axis(v, axis, short, f) for v, f in zip(values, fills))
            cut = tuple(split_axis(lax.slice_in_dim(v, first, first + out * s, axis=axis), axis, out, s) for v in padded)
            heads = tree(tuple(lax.slice_in_dim(v, 0, rest, axis=axis + 1) for v in cut), combine, fills, axis + 1)
        parts.append(heads)
    result = parts[0]
    for part in parts[1:]:
        result = combine(result, part)
    return result


def along_axis(
    values: tuple,
    combine,
    layout: Layout,
    geom: WindowGeometry,
    i: int,
    *,
    fills: tuple,
    idempotent: bool = False,
    padded: bool = True,
    block_reduce=None,
) -> tuple:
    """Windows of ``geom`` along spatial axis ``i`` of ``values`` (other axes as they are); ``fills``
    are the reduction's identities, for padding. ``values`` are padded along ``i`` as ``geom`` says
    (``padded``), or unpadded: short windows of stride >= 3 then read the padding as ``fills`` from
    their taps (:func:`jaxpool._lowering.slices_unpadded`: no padded copy of the input for XLA:CPU to
    materialise; avg 5x5/3 pad 1 on (32, 56, 56, 64) forward 19 -> 3.1 ms), others pad here."""
    k, d, s, out = geom.window[i], geom.dilation[i], geom.strides[i], geom.out_shape[i]
    axis = layout.spatial_axes[i]
    if not padded and (k > _lowering.AXIS_TAPS or not _lowering.slices_unpadded(geom, (i,))):
        values, padded = tuple(_taps.pad_input(v, layout, geom, f, axes=(i,)) for v, f in zip(values, fills)), True
    if k <= _lowering.AXIS_TAPS:
        taps = [_taps.Taps(v, layout, geom, axes=(i,), fill=f, padded=padded) for v, f in zip(values, fills)]
        result = tuple(view({i: 0}) for view in taps)
        for t in range(1, k):
            result = combine(result, tuple(view({i: t}) for view in taps))
        return result
    if s > 1 and d == 1 and out > 1:
        return blocked(values, combine, fills, axis, k, s, out, idempotent=idempotent, block_reduce=block_reduce)
    windows = doubling(values, combine, axis, k, d, (out - 1) * s + 1, idempotent=idempotent)
    return strided(windows, axis, out, s)


def tile_shape(layout: Layout, geom: WindowGeometry, shape) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``shape`` with each spatial axis split into ``(out, window)``, and the window axes' positions."""
    tiled, window_axes = [], []
    spatial = dict(zip(layout.spatial_axes, range(geom.ndim)))
    for axis, size in enumerate(shape):
        if axis in spatial:
            i = spatial[axis]
            tiled += [geom.out_shape[i], geom.window[i]]
            window_axes.append(len(tiled) - 1)
        else:
            tiled.append(size)
    return tuple(tiled), tuple(window_axes)


# Tiling sums whose elements after the last window axis (channels-last: the channels) span fewer
# bytes than this are read with that axis partly merged into them (:func:`packed_sum`): XLA:CPU
# vectorises a reduction over its minor dimension, and 4 float32 channels fill a quarter of a
# vector. Forward+backward of the global sum in one process, packed / plain: (1, 100000, 4) 0.48,
# (1, 100000, 2) 0.46, (1, 100000, 8) 0.66, (1, 512, 512, 4) 0.46, (1, 512, 512, 8) 0.37, (8, 64, 64,
# 8) 0.80; 16 float32 channels or a single one: no gain (0.94-0.98). Not maxima: XLA:CPU hands
# their plain reduction to YNNPACK, and a packed winner score reads each element's lane back
# (global max forward, packed / plain: (1, 512, 512, 4) 1.47, (1, 100000, 4) 1.36).
PACKED_LANE_BYTES = 64


def lane_split(tiled: tuple[int, ...], last_window_axis: int, itemsize: int) -> int:
    """How many consecutive elements of the last window axis of ``tiled`` (its size ``k``)
    :func:`packed_sum` merges into the elements after it: the largest divisor ``b`` of ``k`` with
    ``b`` times their bytes at most :data:`PACKED_LANE_BYTES`; 1 (no packing) for a single element,
    or elements already that wide."""
    trailing = math.prod(tiled[last_window_axis + 1 :])
    if _symbolic.is_symbolic(tiled[last_window_axis:]) or trailing < 2 or 2 * trailing * itemsize > PACKED_LANE_BYTES:
        return 1
    k = tiled[last_window_axis]
    return max(b for b in range(1, PACKED_LANE_BYTES // (trailing * itemsize) + 1) if k % b == 0)


def tiling_sum(x, layout: Layout, geom: WindowGeometry):
    """Sum of every tiling window of ``x``, shaped as ``x`` with each spatial axis its output size:
    the reshape of :func:`tile_shape` and :func:`packed_sum` over the window axes."""
    tiled, window_axes = tile_shape(layout, geom, x.shape)
    return packed_sum(x.reshape(tiled), window_axes)


def packed_sum(x, axes: tuple[int, ...]):
    """``jnp.sum(x, axes)``, narrow elements after the last of ``axes`` packed (:func:`lane_split`):
    that axis ``k = a * b`` split, its ``b`` merged into the elements after it, ``axes`` reduced,
    then the ``b`` partial sums.

    Example: ``(1, 100000, 4)`` float32 over axis 1 sums ``(1, 25000, 16)`` over its axis 1, then
    ``(1, 4, 4)`` over its axis 1."""
    last = max(axes)
    lanes = lane_split(x.shape, last, x.dtype.itemsize)
    if lanes == 1:
        return jnp.sum(x, axis=axes)
    trailing = x.shape[last + 1 :]
    packed = jnp.sum(x.reshape(x.shape[:last] + (x.shape[last] // lanes, lanes * math.prod(trailing))), axis=axes)
    return jnp.sum(packed.reshape(packed.shape[:-1] + (lanes,) + trailing), axis=packed.ndim - 1)


def window_offsets(layout: Layout, geom: WindowGeometry, tiled_ndim: int, window_axes, dtype):
    """Row-major in-window offset of every element of a tiled array, broadcastable to its shape."""
    flat = jnp.zeros((1,) * tiled_ndim, dtype)
    for a, k in zip(window_axes, geom.window):
        shape = [1] * tiled_ndim
        shape[a] = k
        flat = flat * k + lax.broadcasted_iota(dtype, tuple(shape), a)
    return flat


# extremum_and_winner reduces its score in float32 (exact below 2**24) from this many outputs on:
# XLA:CPU fuses the select into one reduction loop, where an int32 score is first materialised
# and then reduced as a tree (forward+backward in one process, float / int: global max (2, 256, 256,
# 16) 0.58, (32, 14, 14, 512) 0.58, (64, 13, 13, 256) 0.47, (8, 64, 64, 128) 0.80); with fewer
# outputs the int32 tree's two threads win ((1, 512, 512, 4) 1.16-1.31, (1, 100000, 4) 1.31, (4, 64,
# 64, 4) 1.25).
FLOAT_SCORE_OUTPUTS = 32

# extremum_and_winner computes the extremum of windows of at least this many elements once
# (jaxpool._fusion.materialize) before the score reads it: else XLA:CPU fuses its broadcast into
# the reduction, which then writes an input-sized array of the extremum for the score's loop to read.
COMPUTED_EXTREMUM_TAPS = 100


def extremum_and_winner(xt, axes: tuple[int, ...], offsets, k: int, mode: str, real=None):
    """Max/min over ``axes`` of ``xt`` (windows of ``k`` elements; ``offsets``: each element's
    row-major offset in its window, broadcastable) and PyTorch's winner: the last NaN, else the first
    element equal to the extremum, as an int32 offset (``k`` for a window with no ``real`` element).

    Two plain reductions — the extremum, and a score whose maximum encodes the winner — which XLA
    vectorises and its SPMD partitioner splits over a sharded axis (local reductions, one all-reduce);
    a variadic (value, index) reduce is neither. XLA:CPU's vectorised row reductions drop NaN
    (``reduce_max`` of an (8, 1000) array with one NaN gives 1.0:
    tests/test_max.py::test_xla_cpu_row_reductions_drop_nan), so a NaN winner sets the result itself.
    """
    y = (jnp.max if mode == "max" else jnp.min)(xt, axis=axes, keepdims=True)
    if k >= COMPUTED_EXTREMUM_TAPS and not _symbolic.is_symbolic(y.shape):
        y = materialize(y)
    score = winner_score(xt, y, offsets, k, real)
    many = _symbolic.is_symbolic(y.shape) or y.size >= FLOAT_SCORE_OUTPUTS  # a symbolic batch: many
    if 2 * k < 2**24 and many:  # exact in float32
        score = score.astype(jnp.float32)
    top = jnp.max(score, axis=axes).astype(jnp.int32)
    y = jnp.squeeze(y, axes)
    if jnp.issubdtype(xt.dtype, jnp.floating):
        y = jnp.where(top >= k, jnp.asarray(jnp.nan, y.dtype), y)
    return y, winner_position(top, k)


def winner_score(value, extremum, position, bound: int, inside=None):
    """PyTorch's winner as the maximum of one score per candidate (``position < bound``, its
    row-major place): ``bound - 1 - position`` where ``value`` equals the ``extremum`` (the first
    such scores highest), ``bound + position`` at a NaN (beating those; the last NaN wins), else -1
    (also outside ``inside``). :func:`winner_position` reads the winner back."""
    score = jnp.where(value == extremum, bound - 1 - position, -1)
    if jnp.issubdtype(value.dtype, jnp.floating):
        score = jnp.where(jnp.isnan(value), bound + position, score)
    return score if inside is None else jnp.where(inside, score, -1)


def winner_position(top, bound: int):
    """The winner's position from the maximum ``top`` (int32) of :func:`winner_score`; ``bound``
    where no candidate scored."""
    return jnp.where(top >= bound, top - bound, bound - 1 - top)


def repeat_rows(a, axis: int, repeat: int):
    """Every row of ``a`` along ``axis`` ``repeat`` times in a row (a broadcast and a reshape)."""
    expanded = jnp.expand_dims(a, axis + 1)
    shape = list(expanded.shape)
    shape[axis + 1] = repeat
    flat = list(a.shape)
    flat[axis] = a.shape[axis] * repeat
    return jnp.broadcast_to(expanded, shape).reshape(flat)


def pick(a, axis: int, n: int, o: int, shift: int = 0):
    """``a[floor(i * n / o) + shift]`` for ``i < o`` along ``axis``: broadcast, reshape, strided slice.

    With ``g = gcd(n, o)``, ``floor(i n / o) = floor(i (n/g) / (o/g))``: repeating every element
    ``o/g`` times puts that element at flat position ``i * n/g``, and the one ``shift`` rows on at
    ``i * n/g + shift * o/g``; outputs past the end of ``a`` are zeros. Costs ``o/g`` times the
    axis in (fused) work; the transpose is an interior pad, a reshape and a sum — no scatter.
    """
    g = math.gcd(n, o)
    step, repeat = n // g, o // g
    expanded = a if repeat == 1 else repeat_rows(a, axis, repeat)
    start = shift * repeat
    inside = min(o, (n * repeat - 1 - start) // step + 1)  # outputs whose row is in ``a``
    picked = lax.slice_in_dim(expanded, start, start + (inside - 1) * step + 1, step if inside > 1 else 1, axis=axis)
    config = [(0, 0, 0)] * a.ndim
    config[axis] = (0, o - inside, 0)
    return lax.pad(picked, jnp.zeros((), a.dtype), config) if inside < o else picked
