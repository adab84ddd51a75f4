"""Axes that are not a multiple of their stride, pooled as an even body and a thin edge.

The phase view of :class:`jaxpool._taps.Taps` (and max's phase-view fold) reads a strided axis as
``(rows, stride)``: a free reshape when the axis is a multiple of the stride. A ragged axis must be
padded up to one first, and XLA:CPU materialises that padded copy and the taps' pads of it (3x3/2
pad 1 on (32, 57, 57, 64), forward+backward: 40 ms, against 6.5 ms on (32, 56, 56, 64)). Instead,
the outputs along each ragged axis are split in two: the *body*, whose windows end inside the
largest multiple of the stride (a slice of the input, so its phase view is again a reshape), and
the *edge*, the last output or two, over a slab one window wide. Each part is pooled by the
lowering its own geometry chooses and the results are concatenated. That is the value only: the
derivative is not the parts' (their gradients padded and added into the input's are an
input-sized temporary, or fused, a pad of the phase interleave that XLA:CPU runs 5-8x slower than
the interleave alone) but one map over the whole geometry, whose transpose writes the input's
gradient in one loop (:func:`jaxpool.max.route_offsets` from the parts' concatenated offsets,
:func:`jaxpool.avg._phase_derivative`): forward+backward on (32, 55, 55, 64), 3x3/2, max 14.6 ->
7.8 ms, avg 20 -> 6.6 ms.

Example: 3x3/2 pad 1 on 57 (29 outputs) is 28 outputs over rows ``[0, 56)`` (pad 1 low, none
high) and 1 output over rows ``[55, 57)`` (pad 1 high).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax.numpy as jnp
from jax import lax

from jaxpool._geometry import WindowGeometry
from jaxpool._layout import Layout


def axis_parts(geom: WindowGeometry, i: int) -> list[tuple[int, int, WindowGeometry]] | None:
    """``[(start, stop, part geometry), ...]`` along axis ``i``: the body over ``[0, n - n % s)``
    and, if any output needs the remainder, the edge over ``[start, n)``; ``None`` when the axis is
    not ragged (a multiple of its stride, one output, or no output inside the body)."""
    n, s, lo, e, out = geom.in_shape[i], geom.strides[i], geom.pad_lo[i], geom.extent[i], geom.out_shape[i]
    body = n - n % s
    if out <= 1 or s <= 1 or body == n or body + lo - e < 0:
        return None
    inside = min(out, (body + lo - e) // s + 1)  # outputs whose last tap is inside the body
    parts = [(0, body, geom.with_axis(i, in_shape=body, pad_hi=0, out_shape=inside))]
    if inside < out:
        first = inside * s - lo  # first tap of the first edge output (may lie in the low padding)
        start = max(first, 0)
        edge = geom.with_axis(i, in_shape=n - start, pad_lo=start - first, out_shape=out - inside)
        parts.append((start, n, edge))
    return parts


def ragged_parts(geom: WindowGeometry) -> dict[int, list[tuple[int, int, WindowGeometry]]]:
    """:func:`axis_parts` of every axis that :func:`by_parts` splits."""
    parts = {i: axis_parts(geom, i) for i in range(geom.ndim)}
    return {i: p for i, p in parts.items() if p is not None}


def _restricted(geom: WindowGeometry, i: int, part: WindowGeometry) -> WindowGeometry:
    """``geom`` with axis ``i`` taken from ``part`` (an :func:`axis_parts` geometry of that axis)."""
    return geom.with_axis(i, **{f: getattr(part, f)[i] for f in ("in_shape", "pad_lo", "pad_hi", "out_shape")})


def body(geom: WindowGeometry) -> WindowGeometry:
    """The geometry of the part that is the body along every ragged axis (all multiples of the stride)."""
    for i, parts in ragged_parts(geom).items():
        geom = _restricted(geom, i, parts[0][2])
    return geom


def by_parts(pool: Callable, x, layout: Layout, geom: WindowGeometry) -> tuple:
    """``pool(x, layout, geom)`` — a tuple of arrays of the output's spatial shape (or ``None``s) —
    computed part by part along every ragged axis and concatenated. A ``None`` in any part is
    ``None`` in the result. Meant for values: callers give the derivative over the whole geometry
    (see the module docstring)."""
    splits = ragged_parts(geom)
    axes = tuple(splits)
    results = {}
    for choice in itertools.product(*(range(len(p)) for p in splits.values())):
        part, piece = geom, x
        for i, c in zip(axes, choice):
            start, stop, g = splits[i][c]
            part = _restricted(part, i, g)
            piece = lax.slice_in_dim(piece, start, stop, axis=layout.spatial_axes[i])
        results[choice] = pool(piece, layout, part)

    def join(prefix: tuple[int, ...]) -> tuple:
        if len(prefix) == len(axes):
            return results[prefix]
        i = axes[len(prefix)]
        rows = [join(prefix + (c,)) for c in range(len(splits[i]))]
        columns = zip(*rows)
        axis = layout.spatial_axes[i]
        return tuple(None if any(c is None for c in column) else jnp.concatenate(column, axis) for column in columns)

    return join(())
