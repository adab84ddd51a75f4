"""Max/min and PyTorch's winner over long runs of consecutive elements of a *cut* — a reshape of a
slice of the input, such as the cores of uneven adaptive bins or the blocks of ``"blocks"`` windows
with long strides — without copying the cut.

Two levels. A run of ``k`` elements is :data:`jaxpool._lowering.CUT_TAPS` consecutive pieces of
``n = k // CUT_TAPS`` (contiguous slices) and a tail; chunk ``j`` is element ``j`` of every piece.
First the chunks: their extremum a ``lax.max`` (``lax.min``) fold over the pieces, in one loop; their
winners in a second loop, two chains of selects over the same pieces — the first piece equal to the
chunk's extremum (the chain built from the last piece, so the first match is written last; ``-0.0``
and ``+0.0`` alike) and, for floats, the last NaN. Then the ``n`` chunks (in memory) by
:func:`jaxpool._sliding.extremum_and_winner`, whose scores order the candidates by their positions
``t n + j``, and the tail, which comes after every chunk, by PyTorch's update rule in input order.

Why not one reduction of the run: XLA:CPU's reductions fuse no producer, so the cut is copied before
them (and the winner's score is one more input-sized array); and why at most 15 pieces: XLA:CPU's
loop fusion duplicates a producer's index computation at most 15 times, then copies it
(:data:`jaxpool._lowering.CUT_TAPS`). Each loop reads its own copy-free view of the input (the
winners' through :func:`jaxpool._fusion.apart`), and the results are computed once, so a consumer
that reads them from several taps does not fuse the cut into itself.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jax import lax

from jaxpool import _lowering, _sliding, _taps
from jaxpool._fusion import apart, materialize


def extremum_and_winner(x, axis: int, mode: str, again=None):
    """``(extremum, offset)`` over ``axis`` of ``x`` (which it removes): the max (``mode="max"``)
    or min, and the int32 offset along ``axis`` of PyTorch's winner — the last NaN, else the first
    element equal to the extremum.

    ``x``: the cut, whose axis ``axis`` holds each run of ``k >= 1`` elements. ``again``: the same
    cut rebuilt from :func:`jaxpool._fusion.apart` of its source, for the winners' loop (default
    ``apart(x)``, enough when ``x`` is the jitted function's argument: a slice or reshape of one
    would be shared, so copied, by the two loops).

    Example: ``x`` of shape ``(N, 7, 69, W, C)`` (bins of 69 along axis 2) gives two
    ``(N, 7, W, C)`` arrays.
    """
    k, g = x.shape[axis], _lowering.CUT_TAPS
    n = k // g
    if n:
        y, offset = _chunked(x, axis, mode, apart(x) if again is None else again, n)
    else:
        y, offset = lax.index_in_dim(x, 0, axis, keepdims=False), jnp.zeros((), jnp.int32)
    for t in range(max(1, n * g), k):  # later than every chunk: PyTorch's rule
        value = lax.index_in_dim(x, t, axis, keepdims=False)
        take = _taps.improves(value, y, mode)
        y, offset = jnp.where(take, value, y), jnp.where(take, t, offset)
    return materialize(y), materialize(jnp.broadcast_to(offset, y.shape))


def extremum(x, axis: int, mode: str):
    """The extremum alone of :func:`extremum_and_winner` (for inference: one loop over ``x``):
    the chunks' ``lax.max`` (``lax.min``) fold, then the chunks' extremum, whose NaN
    :func:`jaxpool._sliding.extremum_and_winner` keeps (XLA:CPU's row reductions drop it), then the
    last ``k % CUT_TAPS`` elements by ``lax.max`` (``lax.min``), which propagate NaN."""
    k, g = x.shape[axis], _lowering.CUT_TAPS
    n = k // g
    combine = lax.max if mode == "max" else lax.min
    if n:
        chunk = materialize(functools.reduce(combine, _pieces(x, axis, n)))
        y = _sliding.extremum_and_winner(chunk, (axis,), _iota(x.ndim, axis, n), n, mode)[0]
    else:
        y = lax.index_in_dim(x, 0, axis, keepdims=False)
    for t in range(max(1, n * g), k):
        y = combine(y, lax.index_in_dim(x, t, axis, keepdims=False))
    return materialize(y)


def _chunked(x, axis: int, mode: str, again, n: int):
    """The extremum and winner of the first ``n`` chunks of :data:`jaxpool._lowering.CUT_TAPS`
    elements along ``axis`` (see the module docstring)."""
    g = _lowering.CUT_TAPS
    chunk = materialize(functools.reduce(lax.max if mode == "max" else lax.min, _pieces(x, axis, n)))
    values = _pieces(again, axis, n)

    def chain(order, hit):
        winner = jnp.zeros(chunk.shape, jnp.int32)
        for t in order:
            winner = jnp.where(hit(values[t]), t, winner)
        return winner

    first = chain(reversed(range(g)), lambda v: v == chunk)
    if jnp.issubdtype(x.dtype, jnp.floating):
        first = jnp.where(jnp.isnan(chunk), chain(range(g), lambda v: v != v), first)
    return _sliding.extremum_and_winner(chunk, (axis,), first * n + _iota(x.ndim, axis, n), x.shape[axis], mode)


def _pieces(x, axis: int, n: int) -> list:
    """The first ``CUT_TAPS * n`` elements along ``axis`` as ``CUT_TAPS`` consecutive pieces of
    ``n``: chunk ``j`` is element ``j`` of every piece (``t n + j`` for piece ``t``), so each piece
    is a contiguous slice — on the axis next to few channels, XLA:CPU vectorises those and not
    slices strided by ``CUT_TAPS`` (1-D 100000 -> 7 on 4 channels, forward in one process: 0.65 -> 0.25 ms)."""
    return [lax.slice_in_dim(x, t * n, (t + 1) * n, axis=axis) for t in range(_lowering.CUT_TAPS)]


def _iota(ndim: int, axis: int, n: int):
    shape = [1] * ndim
    shape[axis] = n
    return lax.broadcasted_iota(jnp.int32, tuple(shape), axis)
