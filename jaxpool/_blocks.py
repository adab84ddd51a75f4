"""Strided windows along one axis as whole blocks of the stride plus a short head: linear work for
any window, and a one-byte winner offset (:mod:`jaxpool._lowering`, ``"blocks"``).

With stride ``s`` and window ``k = m s + h`` (``h < s``), cut the (padded) axis into blocks of ``s``:
window ``o`` is blocks ``o .. o + m - 1`` followed by the first ``h`` elements of block ``o + m``.
Each block is reduced once (a reshape and plain reductions: its extremum, and a winner score that
encodes PyTorch's first maximum and last NaN: :func:`jaxpool._sliding.extremum_and_winner`); the window
then folds ``m`` block results and ``h`` strided head taps in input order. Adaptive 512 -> 7 (windows
of 74 every 73): one block and one head tap per window, where a tap fold would need 74 and the
doubling scheme 7 passes. The derivative routes each output to its winner with one select per
block and head tap (:func:`route`), no scatter; the transpose is a reshape and pads.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool import _sliding, _taps
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


def candidates(
    x, layout: Layout, geom: WindowGeometry, mode: str, fill, rank=None, scale: int = 1, stride: int = 1, total: int = 0
):
    """``(value, inside mask, position)`` of every window's candidates in input order: each whole
    block's winner (:func:`jaxpool._sliding.extremum_and_winner`), then each head tap. The position
    is the in-window offset — or, given each element's ``rank`` (its row-major position among axes
    pooled before: ``rank * scale``, below ``total``), the rank plus the offset times ``stride``
    (:func:`jaxpool._rowmajor.winner`)."""
    i = strided_axis(geom)
    axis, s, k, out = layout.spatial_axes[i], geom.strides[i], geom.window[i], geom.out_shape[i]
    m = k // s
    xp = _taps.pad_input(x, layout, geom, fill, axes=(i,))
    cut, blocks = _cut(xp, layout, geom, i)
    real = _real(geom, i, blocks)
    mask = None if real.all() else _along_cut(layout, i, real)
    inner = _iota(layout, i, s)
    unit, bound = (1, k) if rank is None else (stride, total)  # of an in-window offset in a position
    if rank is not None:
        rp = _taps.pad_input(rank, layout, geom, 0, axes=(i,))
        inner = _cut(rp, layout, geom, i)[0].astype(jnp.int32) * scale + inner * stride
    best, winner = _sliding.extremum_and_winner(cut, (axis + 1,), inner, bound, mode, mask)
    has_real = np.asarray(real.any(axis=1))
    found = []
    for b in range(m):
        inside = has_real[b : b + out]
        value = lax.slice_in_dim(best, b, b + out, axis=axis)
        position = lax.slice_in_dim(winner, b, b + out, axis=axis) + b * s * unit
        found.append((value, None if inside.all() else layout.along(inside, i), position))
    for t in range(m * s, k):
        (value,) = _sliding.strided((xp,), axis, out, s, t)
        position = t if rank is None else _sliding.strided((rp,), axis, out, s, t)[0].astype(jnp.int32) * scale + t * stride
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
