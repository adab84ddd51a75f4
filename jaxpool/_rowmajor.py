"""Single-axis max/min passes run in any axis order, with PyTorch's row-major winner.

A window's winner is its first extremum in row-major order (its last NaN). Passes run last axis
first get it for free: the first of the rows' first maxima (:func:`jaxpool.max.chain_passes`). But
the first pass is the only one over the whole input, forward and backward, and run over the first
axis its taps are whole contiguous rows of the later axes, which XLA:CPU reduces several times
faster than taps along the axis next to the channels when the window is long
(:func:`jaxpool._lowering.pass_order`).

Exactness in any order: each candidate of a later pass is an earlier pass's winner, whose row-major
position among the axes already reduced (its *rank*) is known — for the first pass its in-window
offset times the windows of the axes after it. A later pass takes, among its candidates equal to
the extremum, the one of smallest rank (its own tap adding ``t`` times the windows after its axis),
and among NaNs the largest: PyTorch's row-major first maximum and last NaN of the whole window. It
passes on its winner's rank; its derivative stays its own max-index route
(:func:`jaxpool.max.route_offsets`) from its in-window offset. The winner is the maximum of one
score per candidate (:func:`winner`, a fused fold), never more than the pass's own candidates:
taps, or whole blocks and head taps for ``"blocks"``.
"""

from __future__ import annotations

from typing import cast

import jax
import jax.numpy as jnp

from jaxpool import _blocks, _lowering, _sliding, _taps
from jaxpool._geometry import WindowGeometry
from jaxpool._layout import Layout


def winner(x, rank, scale: int, total: int, stride: int, layout: Layout, geom: WindowGeometry, mode: str, fill):
    """``(offset, rank)`` of PyTorch's winner in each window of the single-axis ``geom`` over ``x``.

    ``rank * scale`` is each element's row-major position among the axes reduced before (``rank``
    compact, scaled in the fold; below ``total``, the window's size over all axes), to which tap
    ``t`` adds ``t * stride``. The winner is the candidate equal to the window's extremum ``y`` of
    smallest rank, or the NaN of largest rank (:func:`jaxpool._sliding.winner_score`). Candidates
    are the taps, or for ``"blocks"`` each whole block's own winner and the head taps
    (:func:`jaxpool._blocks.candidates`): HLO size and work per output independent of the window.
    ``y`` is the candidates' own extremum (:func:`jaxpool._taps.extremum_fold`; against the select
    fold's 0.88-1.04x forward+backward), computed in the same loop (the pass's output, read here,
    would be copied for the barrier that holds it). The winner's rank comes back compact.
    """
    if _lowering.choose(geom) == "blocks":
        found = _blocks.candidates(x, layout, geom, mode, fill, rank, scale, stride, total)
    else:
        xp, rp = _taps.pad_input(x, layout, geom, fill), _taps.pad_input(rank, layout, geom, 0)
        found = [
            (
                _taps.tap(xp, layout, geom, at),
                _taps.tap_inside(layout, geom, at),
                _scaled(_taps.tap(rp, layout, geom, at), scale) + t * stride,
            )
            for t, at in _taps.window_taps(geom)
        ]
    y = _taps.extremum_fold(((value, inside) for value, inside, _ in found), mode, fill)
    score_dtype = jnp.float32 if 2 * total < 2**24 else jnp.int32  # exact; XLA:CPU vectorises f32 best
    best = None
    for value, inside, position in found:
        score = _sliding.winner_score(value, y, jnp.asarray(position).astype(score_dtype), total, inside)
        best = score if best is None else jnp.maximum(best, score)
    rank = _sliding.winner_position(cast(jax.Array, best).astype(jnp.int32), total)
    offset = (rank // stride % geom.window_size).astype(_taps.offset_dtype(geom.window_size))
    return offset, rank.astype(_taps.offset_dtype(total))


def _scaled(rank, scale: int):
    """``rank * scale`` in int32 (elementwise, so XLA fuses it into the fold reading it)."""
    return rank.astype(jnp.int32) * scale
