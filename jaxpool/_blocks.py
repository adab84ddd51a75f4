"""Strided windows along one axis as whole blocks of the stride plus a short head: linear work for
any window, and a one-byte winner offset (:mod:`jaxpool._lowering`, ``"blocks"``).

With stride ``s`` and window ``k = m s + h`` (``h < s``), cut the (padded) axis into blocks of ``s``:
window ``o`` is blocks ``o .. o + m - 1`` followed by the first ``h`` elements of block ``o + m``.
Each block is reduced once — its extremum, and a winner score that encodes PyTorch's first maximum
and last NaN (:func:`jaxpool._sliding.winner_score`): for strides of at most
:data:`jaxpool._lowering.CORE_TAPS` folds over strided slices of the unpadded input
(:func:`_folded_blocks`), beyond a reshape of the unpadded input reduced in chunks
(:func:`_chunked_blocks`), or in ranked passes a reshape of the padded input and plain
reductions (:func:`jaxpool._sliding.extremum_and_winner`) —; the window then folds ``m`` block results and
``h`` strided head taps in input order. Adaptive 512 -> 7 (windows of 74 every 73): one block and
one head tap per window, where a tap fold would need 74 and the doubling scheme 7 passes. The
derivative routes each output to its winner with one select per block and head tap
(:func:`route`), no scatter; the transpose is a reshape and pads.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool import _chunks, _lowering, _sliding, _taps
from jaxpool._fusion import apart
from jaxpool._geometry import WindowGeometry
from jaxpool._layout import Layout


def strided_axis(geom: WindowGeometry) -> int:
    """The one spatial axis this single-axis geometry pools along."""
    (i,) = geom.pooled_axes
    return i


def _cut(xp, layout: Layout, geom: WindowGeometry, i: int):
    """Padded ``xp`` cut into the ``out + m - 1`` whole blocks the windows use: axis ``i`` becomes
    ``(blocks, s)``. Returns the cut array and the block count."""
    axis, s, out = layout.spatial_axes[i], geom.strides[i], geom.out_shape[i]
    blocks = out + geom.window[i] // s - 1
    return _sliding.split_axis(lax.slice_in_dim(xp, 0, blocks * s, axis=axis), axis, blocks, s), blocks


def _real(geom: WindowGeometry, i: int, blocks: int) -> np.ndarray:
    """Static ``(blocks, s)`` mask of the block elements that are input, not padding."""
    s = geom.strides[i]
    pos = np.arange(blocks * s).reshape(blocks, s) - geom.pad_lo[i]
    return (pos >= 0) & (pos < geom.in_shape[i])


def _along_cut(layout: Layout, i: int, mask: np.ndarray) -> np.ndarray:
    """A ``(blocks, s)`` mask shaped to broadcast against the cut array."""
    shape = [1] * (layout.ndim + 1)
    axis = layout.spatial_axes[i]
    shape[axis : axis + 2] = mask.shape
    return mask.reshape(shape)


def _iota(layout: Layout, i: int, s: int):
    """Position inside the block, shaped to broadcast against the cut array."""
    return lax.broadcasted_iota(jnp.int32, tuple(_along_cut(layout, i, np.zeros((1, s))).shape), layout.spatial_axes[i] + 1)


def _folded_blocks(x, layout: Layout, geom: WindowGeometry, i: int, blocks: int, mode: str, fill, rank, scale, stride, bound):
    """Each block's extremum and winner as folds over its ``s`` elements: element ``t`` of every
    block is a strided slice of the unpadded ``x``, padded where a block leaves the input
    (:func:`jaxpool._taps.unpadded_tap`), so XLA fuses the slices into the fold's loop — the
    reshape of :func:`_cut` needs a padded copy of the input and a copy of its blocks first (XLA:CPU
    reduces only materialised operands), and its score one more input-sized array. The extremum is
    a ``lax.max`` (``lax.min``) fold, the winner the maximum of one
    :func:`jaxpool._sliding.winner_score` per element (its position: the offset ``t`` or its rank)."""
    s, lo = geom.strides[i], {i: geom.pad_lo[i]}
    block_geom = geom.with_axis(i, window=s, out_shape=blocks)
    real = _real(geom, i, blocks)
    values = [_taps.unpadded_tap(x, layout, block_geom, {i: t}, fill, lo) for t in range(s)]
    best = functools.reduce(lax.max if mode == "max" else lax.min, values)  # padding holds the fill
    exact = 2 * bound < 2**24  # float32 scores: XLA:CPU vectorises their select and maximum
    scores = []
    for t, v in enumerate(values):
        if rank is None:
            position = np.float32(t) if exact else np.int32(t)
        else:
            ranked = _taps.unpadded_tap(rank, layout, block_geom, {i: t}, 0, lo).astype(jnp.int32) * scale + t * stride
            position = ranked.astype(jnp.float32) if exact else ranked
        inside = None if real[:, t].all() else layout.along(real[:, t], i)
        scores.append(_sliding.winner_score(v, best, position, bound, inside))
    return best, _sliding.winner_position(functools.reduce(jnp.maximum, scores).astype(jnp.int32), bound)


def _chunked_blocks(x, layout: Layout, geom: WindowGeometry, i: int, blocks: int, mode: str, fill):
    """Each block's extremum and in-block winner for strides above
    :data:`jaxpool._lowering.CORE_TAPS`, without padding: the blocks wholly inside the input are a
    reshape of a slice of ``x`` reduced in chunks (:func:`jaxpool._chunks.extremum_and_winner`,
    loops that read ``x`` in place), each block at the ends over its elements inside the input (one
    with none holds ``fill``); the results concatenated in block order. The reshape of the padded
    input (kept for ranked passes, whose inputs are an earlier pass's smaller output) had XLA:CPU
    pad the input and copy the blocks before reducing them: adaptive max 300 -> 7 on (8, 300, 300,
    16) (windows of 44 every 43, padded by 1) spent 20 of its 45 ms per call on those two copies."""
    axis, s, lo, size = layout.spatial_axes[i], geom.strides[i], geom.pad_lo[i], geom.in_shape[i]
    first = min(blocks, -(-lo // s))  # blocks from here on start inside the input
    last = max(first, min(blocks, (size + lo) // s))  # and those before this one end inside it

    def block_axis(v):  # axis `axis` as (1, length): one block
        return _sliding.split_axis(v, axis, 1, v.shape[axis])

    def edge(b: int) -> tuple:  # block b, which leaves the input
        begin, end = max(0, b * s - lo), min(size, (b + 1) * s - lo)
        if begin >= end:
            shape = list(x.shape)
            shape[axis] = 1
            return jnp.full(shape, fill, x.dtype), jnp.zeros(shape, jnp.int32)
        part = lax.slice_in_dim(x, begin, end, axis=axis)
        again = lax.slice_in_dim(apart(x), begin, end, axis=axis)
        value, offset = _chunks.extremum_and_winner(block_axis(part), axis + 1, mode, block_axis(again))
        return value, offset + (begin - (b * s - lo))

    def cut(source):
        return _sliding.split_axis(lax.slice_in_dim(source, first * s - lo, last * s - lo, axis=axis), axis, last - first, s)

    parts = [edge(b) for b in range(first)]
    if last > first:
        parts.append(_chunks.extremum_and_winner(cut(x), axis + 1, mode, cut(apart(x))))
    parts += [edge(b) for b in range(last, blocks)]
    if len(parts) == 1:
        return parts[0]
    return tuple(lax.concatenate([p[j] for p in parts], axis) for j in range(2))


def candidates(
    x, layout: Layout, geom: WindowGeometry, mode: str, fill, rank=None, scale: int = 1, stride: int = 1, total: int = 0
):
    """``(value, inside mask, position)`` of every window's candidates in input order: each whole
    block's winner (for blocks of at most :data:`jaxpool._lowering.CORE_TAPS` elements
    :func:`_folded_blocks`; longer ones :func:`_chunked_blocks`, or with ``rank``
    :func:`jaxpool._sliding.extremum_and_winner` over a reshape of the padded input), then each
    head tap. The position is the in-window offset — or, given each element's ``rank`` (its row-major
    position among axes pooled before: ``rank * scale``, below ``total``), the rank plus the offset
    times ``stride`` (:func:`jaxpool._rowmajor.winner`)."""
    i = strided_axis(geom)
    axis, s, k, out = layout.spatial_axes[i], geom.strides[i], geom.window[i], geom.out_shape[i]
    m = k // s
    blocks = out + m - 1
    real = _real(geom, i, blocks)
    unit, bound = (1, k) if rank is None else (stride, total)  # of an in-window offset in a position
    folds = _lowering.folds_blocks(geom)
    unpadded = folds or rank is None  # the head taps too
    if folds:
        best, winner = _folded_blocks(x, layout, geom, i, blocks, mode, fill, rank, scale, stride, bound)
    elif rank is None:
        best, winner = _chunked_blocks(x, layout, geom, i, blocks, mode, fill)
    else:
        xp = _taps.pad_input(x, layout, geom, fill, axes=(i,))
        cut, _ = _cut(xp, layout, geom, i)
        mask = None if real.all() else _along_cut(layout, i, real)
        inner = _iota(layout, i, s)
        if rank is not None:
            rp = _taps.pad_input(rank, layout, geom, 0, axes=(i,))
            inner = _cut(rp, layout, geom, i)[0].astype(jnp.int32) * scale + inner * stride
        best, winner = _sliding.extremum_and_winner(cut, (axis + 1,), inner, bound, mode, mask)

    def head(t: int, source, source_fill):  # head tap t of every window (of x or of its rank)
        if unpadded:
            return _taps.unpadded_tap(source, layout, geom, {i: t}, source_fill, {i: geom.pad_lo[i]})
        padded = _taps.pad_input(source, layout, geom, source_fill, axes=(i,))  # the cut's pad, shared
        return _sliding.strided((padded,), axis, out, s, t)[0]

    has_real = np.asarray(real.any(axis=1))
    found = []
    for b in range(m):
        inside = has_real[b : b + out]
        value = lax.slice_in_dim(best, b, b + out, axis=axis)
        position = lax.slice_in_dim(winner, b, b + out, axis=axis) + b * s * unit
        found.append((value, None if inside.all() else layout.along(inside, i), position))
    for t in range(m * s, k):
        value = head(t, x, fill)
        position = t if rank is None else head(t, rank, 0).astype(jnp.int32) * scale + t * stride
        found.append((value, _taps.tap_inside(layout, geom, {i: t}), position))
    return found


def extremum(x, layout: Layout, geom: WindowGeometry, mode: str, fill):
    """``(extremum, in-window offset of PyTorch's winner)`` of every window of the single-axis ``geom``."""
    dtype = _taps.offset_dtype(geom.window_size)
    found = candidates(x, layout, geom, mode, fill)
    return _taps.select_fold(((v, inside, jnp.asarray(p).astype(dtype)) for v, inside, p in found), mode, dtype)


def route(tx, offset, layout: Layout, geom: WindowGeometry):
    """The tangent of each output: that of its winner's element, from the saved ``offset``. Linear in
    ``tx``: one select per whole block and per head tap."""
    i = strided_axis(geom)
    axis, s, k, out = layout.spatial_axes[i], geom.strides[i], geom.window[i], geom.out_shape[i]
    m = k // s
    zero = jnp.zeros((), tx.dtype)
    offset = offset.astype(jnp.int32)
    cut, _ = _cut(_taps.pad_input(tx, layout, geom, 0, axes=(i,)), layout, geom, i)
    iota = _iota(layout, i, s)
    total = None
    for b in range(m):
        block = lax.slice_in_dim(cut, b, b + out, axis=axis)
        term = jnp.sum(jnp.where(iota == jnp.expand_dims(offset - b * s, axis + 1), block, zero), axis=axis + 1)
        total = term if total is None else total + term
    if k > m * s:
        taps = _taps.Taps(tx, layout, geom, axes=(i,))
        for t in range(m * s, k):
            term = jnp.where(offset == t, taps({i: t}), zero)
            total = term if total is None else total + term
    return total
