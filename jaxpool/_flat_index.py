"""Gathers and scatters at flat spatial indices whose rows lie within static ranges.

A max pool's winner is a flat index over the spatial volume of its (batch, channel) plane
(PyTorch's ``return_indices``). Fractional max pooling gathers its tangent at its winners; max
unpooling writes pooled values to them. Each output's index names a row, along each spatial axis,
within a static range (its region's or its window's reach: ``reads``, as :mod:`jaxpool._ranges`
takes them), so both run as maps of :mod:`jaxpool._ranges`: a spatially sharded array exchanges
halos instead of being gathered whole. Each map addresses a shard's block of rows through
:func:`local_index`. Unbounded indices (``max_unpool`` without its window, :mod:`jaxpool._scatter`)
use :func:`gather_flat` and :func:`scatter_flat` alone, per plane.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxpool import _linear, _ranges
from jaxpool._layout import Layout

# Every position is clipped into the array (local_rows) or valid by construction: no bounds handling.
IN_BOUNDS = "promise_in_bounds"


def local_rows(row, origin, rows: int):
    """Rows of the whole axis as rows of a shard's block starting at ``origin`` (unsharded: 0),
    clipped into it: outputs in XLA's padding of an uneven axis have any index."""
    return row if isinstance(origin, int) and origin == 0 else jnp.clip(row - origin, 0, rows - 1)


def local_index(index, layout: Layout, origins, in_shape: tuple[int, ...], rows: tuple[int, ...]):
    """A flat index over the whole spatial volume ``in_shape`` as one over a block of spatial shape
    ``rows`` whose rows start at ``origins`` (unsharded: unchanged)."""
    if all(isinstance(o, int) and o == 0 for o in origins) and tuple(rows) == tuple(in_shape):
        return index
    local = jnp.zeros((), jnp.int32)
    for j, (n, origin, m) in enumerate(zip(in_shape, origins, rows)):
        row = index // math.prod(in_shape[j + 1 :]) % n
        local = local * m + local_rows(row, origin, m)
    return local


def _flat(a, layout: Layout):
    """``a`` with its spatial axes as one (explicit volumes, not -1: an empty batch or channel axis
    leaves -1 undetermined)."""
    first, n = layout.spatial_axes[0], layout.n_spatial
    return a.reshape(a.shape[:first] + (math.prod(a.shape[first : first + n]),) + a.shape[first + n :])


def gather_flat(x, index, layout: Layout):
    """``x`` at flat spatial ``index`` per plane; its transpose is a scatter-add."""
    picked = jnp.take_along_axis(_flat(x, layout), _flat(index, layout), layout.spatial_axes[0], mode=IN_BOUNDS)
    return picked.reshape(index.shape)


def _gather_map(in_shape: tuple[int, ...]):
    """:func:`gather_flat` as a :func:`jaxpool._ranges.mapped` map, and its transpose."""

    def gather(v, i, layout, origins):
        return gather_flat(v, local_index(i, layout, origins, in_shape, layout.spatial_shape(v.shape)), layout)

    def scatter(c, i, layout, origins, rows):
        shape = jax.ShapeDtypeStruct(layout.with_spatial(c.shape, rows), c.dtype)
        return jax.linear_transpose(lambda v: gather(v, i, layout, origins), shape)(c)[0]

    return gather, scatter


def gathered(x, index, layout: Layout, reads, in_shape: tuple[int, ...]):
    """``x`` at each output's flat ``index``, linear in ``x``; its transpose scatter-adds the
    cotangent there (JAX's transpose of the gather)."""
    gather, scatter = _gather_map(in_shape)
    return _linear.linear(
        lambda v, i: _ranges.mapped(gather, v, (i,), layout, reads),
        lambda c, i: _ranges.spilled(scatter, c, (i,), layout, reads, in_shape),
        x,
        index,
    )


def gathered_values(x, index, layout: Layout, reads, in_shape: tuple[int, ...]):
    """``x`` at each output's flat ``index`` (not differentiated: integer ``x``)."""
    return _ranges.mapped(_gather_map(in_shape)[0], x, (index,), layout, reads)


def scatter_flat(values, index, layout: Layout, rows: tuple[int, ...], how: str, mode: str = IN_BOUNDS):
    """A zero array of spatial shape ``rows`` (batch and channel axes as ``values``'), ``values``
    written at each plane's flat ``index`` by ``.at[].set``/``.max`` (``how``); vmapped over the
    planes, whose axes stay batch axes of the scatter (a batch- or channel-sharded array scatters
    shard by shard). ``mode="drop"`` drops indices past the volume."""
    flat_values, flat_index = _flat(values, layout), _flat(index, layout)
    axis, volume = layout.spatial_axes[0], math.prod(rows)
    plane = lambda v, i: getattr(jnp.zeros((volume,), v.dtype).at[i], how)(v, mode=mode)  # noqa: E731
    for _ in range(flat_values.ndim - 1):  # each leading axis its own batch axis: none merged
        plane = jax.vmap(plane)
    out = plane(jnp.moveaxis(flat_values, axis, -1), jnp.moveaxis(flat_index, axis, -1))
    out = jnp.moveaxis(out, -1, axis)
    return out.reshape(layout.with_spatial(values.shape, rows))


def latest_writers(order, index, layout: Layout, reads, in_shape: tuple[int, ...]):
    """Per input position, the largest positive ``order`` (int32, shaped like the outputs) among
    the outputs whose flat ``index`` names it; 0 where none does."""

    def latest(o, i, layout, origins, rows):
        return scatter_flat(o, local_index(i, layout, origins, in_shape, rows), layout, rows, "max")

    return _ranges.spilled(latest, order, (index,), layout, reads, in_shape)


def written(values, order, index, layout: Layout, reads, in_shape: tuple[int, ...]):
    """Each input position holds the value of the output with the largest positive ``order`` among
    those whose flat ``index`` names it, 0 where none does: a scatter whose repeated indices keep
    the latest in ``order``, written as the gather of each position's latest writer (values keep
    their sign bits; no float is added). Not differentiated here."""

    def write(o, i, v, layout, origins, rows):
        # Block-local ordinals: an output's rank in the received (row-major) block, as its order's
        # rank among them, since the received outputs are a box of the output grid.
        ordinal = ordinals(o.shape, layout)
        index = local_index(i, layout, origins, in_shape, rows)
        latest = scatter_flat(jnp.where(o > 0, ordinal, 0), index, layout, rows, "max")
        picked = gather_flat(v, jnp.maximum(latest - 1, 0), layout)
        return jnp.where(latest > 0, picked, jnp.zeros((), v.dtype))

    # ``order`` goes first: the cotangent slot, masked to 0 (no writer) in XLA's padding of an
    # uneven axis, whose outputs hold anything.
    return _ranges.spilled(write, order, (index, values), layout, reads, in_shape)


def ordinals(shape, layout: Layout):
    """1, 2, ... (int32) over each plane's outputs in row-major order, of ``shape``."""
    spatial = layout.spatial_shape(shape)
    ranks = jnp.arange(1, math.prod(spatial) + 1, dtype=jnp.int32).reshape(spatial)
    outside = tuple(a for a in range(layout.ndim) if a not in layout.spatial_axes)
    return jnp.broadcast_to(jnp.expand_dims(ranks, outside), shape)
