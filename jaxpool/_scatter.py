"""``max_unpool`` without its pooling window: each (batch, channel) plane's values scattered to the
positions their indices name.

The form is chosen when the program is lowered (:func:`jaxpool._halo.call`): on one device (or
for ``jax.export``) one scatter into the whole output flattened, the indices made global
(``(plane, position)`` to one offset); on several, one scatter per plane
(:func:`jaxpool._flat_index.scatter_flat`, its gathers :func:`~jaxpool._flat_index.gather_flat`),
vmapped over the batch and channel axes so that they stay batch axes of the scatter and a batch- or channel-sharded input
is unpooled shard by shard (the flattened form's single axis would be gathered; a spatially
sharded one is gathered either way: its indices may name any position). XLA:CPU runs the vmapped
scatter per plane 2-3x slower: max_pool then max_unpool forward+backward in one process
(benchmarks/ab_commit.py ``unpool_bare``), flattened / per plane, 2x2/2 on (8, 112, 112, 64)
0.40-0.54 (0.58x PyTorch with the heap allocator, 1.26x with the default one), 3x3/2 pad 1 on (32,
56, 56, 64) 0.30 (0.81-0.84x), 2x2x2/2 on (4, 16, 32, 32, 32) 0.40 (0.37x), 1-D 3/2 pad 1 on (32,
4096, 64) 0.52 (0.92x).

Out-of-range indices (negative ones too: no wrap-around) write nothing. Where indices repeat, the
scatter keeps one value (XLA:CPU: the last written). Differentiated (:func:`scattered`'s JVP), the
value and its derivative both read each position's latest writer in row-major order of its plane
(a scatter-max of the writers' ranks, then a gather of the output's size), and the transpose
gathers the cotangent at the kept values' indices: one scatter, of int32 ranks, in forward+backward.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jaxpool import _halo, _linear
from jaxpool._flat_index import gather_flat, ordinals, scatter_flat
from jaxpool._layout import Layout

# Flattened offsets are int32: outputs with more elements keep one scatter per plane.
_FLAT_LIMIT = 2**31 - 1


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def scattered(layout: Layout, out_shape: tuple[int, ...], y, indices):
    """``y`` ``(*batch, *pooled, C)`` (or channels_first) written at ``indices`` (positions over
    ``out_shape``'s volume, per plane) of a zero array ``(*batch, *out_shape, C)``."""
    return _write(layout, out_shape, y, _in_range(indices, out_shape))


@scattered.defjvp
def _scattered_jvp(layout: Layout, out_shape, primals, tangents):
    y, indices = primals
    index = _in_range(indices, out_shape)
    full_shape = layout.with_spatial(y.shape, out_shape)
    shapes = (jax.ShapeDtypeStruct(full_shape, jnp.int32), jax.ShapeDtypeStruct(index.shape, bool))
    writer, kept = _halo.call(functools.partial(_latest_writers, layout, out_shape), shapes, index)
    # Read at the writers (a gather of the output's size), transposed to a gather at the kept
    # values' indices: no second scatter.
    read_writers = functools.partial(_read_writers, layout)
    read = functools.partial(_read, layout, out_shape)
    written = lambda a: _linear.linear(read_writers, lambda c, w, i: read(c, i), a, writer, jnp.where(kept, index, -1))  # noqa: E731
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        return written(y), jnp.zeros(full_shape, jax.dtypes.float0)
    return written(y), written(tangents[0])


def _in_range(indices, out_shape):
    """``indices`` as int32, ``-1`` where outside ``[0, volume)``."""
    return jnp.where((indices >= 0) & (indices < math.prod(out_shape)), indices, -1).astype(jnp.int32)


def _write(layout: Layout, out_shape, values, index):
    """``values`` scattered to ``index`` (``-1``: nowhere) of each plane."""
    shape = jax.ShapeDtypeStruct(layout.with_spatial(values.shape, out_shape), values.dtype)
    return _halo.call(lambda v, i: _scatter(layout, out_shape, v, i, "set"), shape, values, index)


def _read(layout: Layout, out_shape, out, index):
    """``out`` read at ``index``, zero where it is ``-1`` (the transpose of a write of unique indices)."""
    shape = jax.ShapeDtypeStruct(index.shape, out.dtype)
    return _halo.call(lambda o, i: _gather(layout, o, i), shape, out, index)


def _latest_writers(layout: Layout, out_shape, index):
    """``(writer, kept)``: at each output position 1 + the offset of its latest writer in row-major
    order of its plane (flattened: in the whole of ``index``; per plane: in its plane), 0 where
    none writes; whether each value is its position's latest writer."""
    if _flattens(layout.with_spatial(index.shape, out_shape), index.shape):
        rank = jnp.arange(1, math.prod(index.shape) + 1, dtype=jnp.int32).reshape(index.shape)
    else:
        rank = ordinals(index.shape, layout)
    rank = jnp.where(index >= 0, rank, 0)
    writer = _scatter(layout, out_shape, rank, index, "max")
    return writer, (index >= 0) & (_gather(layout, writer, index) == rank)


def _read_writers(layout: Layout, values, writer, index):
    """``values`` (pooled shape) read at each output position's ``writer`` (see
    :func:`_latest_writers`); zero where it is 0."""
    shape = jax.ShapeDtypeStruct(writer.shape, values.dtype)

    def read(v, w):
        if _flattens(w.shape, v.shape):
            taken = v.ravel()[jnp.maximum(w - 1, 0)]
        else:
            taken = gather_flat(v, jnp.maximum(w - 1, 0), layout)
        return jnp.where(w > 0, taken, jnp.zeros((), v.dtype))

    return _halo.call(read, shape, values, writer)


def _scatter(layout: Layout, out_shape, values, index, how: str):
    """A zero array of the output's shape, ``values`` written by ``.at[].set``/``.max`` (``how``) at
    ``index`` (``-1``: nowhere)."""
    full_shape = layout.with_spatial(values.shape, out_shape)
    if _flattens(full_shape, index.shape):
        at = jnp.zeros((math.prod(full_shape),), values.dtype).at[_global(layout, out_shape, index).ravel()]
        return getattr(at, how)(values.ravel(), mode="drop").reshape(full_shape)
    nowhere = jnp.where(index >= 0, index, math.prod(out_shape))  # past the volume: dropped
    return scatter_flat(values, nowhere, layout, out_shape, how, mode="drop")


def _gather(layout: Layout, out, index):
    """``out`` (the output's shape) read at each plane's ``index``; zero where ``index`` is ``-1``."""
    if _flattens(out.shape, index.shape):
        taken = out.ravel()[jnp.where(index >= 0, _global(layout, layout.spatial_shape(out.shape), index), 0)]
    else:
        taken = gather_flat(out, jnp.maximum(index, 0), layout)
    return jnp.where(index >= 0, taken, jnp.zeros((), out.dtype))


def _flattens(full_shape, pooled_shape) -> bool:
    """Whether to take the flattened form: on one device (or exported), for arrays of known size
    (not a symbolic batch) that int32 offsets reach."""
    shapes = (full_shape, pooled_shape)
    known = all(isinstance(d, int) for shape in shapes for d in shape)
    return _halo.plain_lowering() and known and max(math.prod(s) for s in shapes) <= _FLAT_LIMIT


def _global(layout: Layout, out_shape, index):
    """Each ``index`` as an offset into the flattened output; out of range (its size) where ``-1``."""
    shape, volume = index.shape, math.prod(out_shape)
    planes = math.prod(shape[: layout.n_batch])
    batch = jnp.arange(planes, dtype=jnp.int32).reshape(shape[: layout.n_batch] + (1,) * (len(shape) - layout.n_batch))
    channels = shape[layout.channel_axis]
    channel = jax.lax.broadcasted_iota(jnp.int32, shape, layout.channel_axis)
    if layout.channels_first:
        where = (batch * channels + channel) * volume + index
    else:
        where = (batch * volume + index) * channels + channel
    return jnp.where(index >= 0, where, planes * channels * volume)
