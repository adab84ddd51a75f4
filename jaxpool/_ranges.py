"""Spatially sharded maps whose outputs read data-dependent rows within static ranges.

:mod:`jaxpool._halo` partitions maps over regular windows. Fractional max pooling's regions start
where a random draw puts them (PyTorch's ``int((i + u) alpha) - int(u alpha)``, Graham's boundary
sequences), so its forward pass finds each winner with gathers and its backward pass is a
scatter-add; XLA's SPMD partitioner all-gathers a spatially sharded input for both. Yet each
output ``o`` along spatial axis ``i`` reads only rows within a static range ``[first[o], end[o])``
(where its region can start and end, whatever the draw). :func:`mapped` runs such a map
partitioned: each shard receives, once per direction of each sharded axis, the rows its outputs'
ranges reach outside its block (:func:`jaxpool._halo._exchange`), and runs the map over them
knowing the whole axis's row at their start (``origins``). :func:`spilled` runs a transpose:
each shard receives the cotangent (and operands) of the outputs whose ranges reach into its block,
transposes them all into the rows they cover and keeps its own — so every input row sums its terms
in the unsharded order, bit for bit (a max's gradient where an element wins several overlapping
regions). No collective but those halo exchanges. One device and
``jax.export`` run the plain map (origins 0), as :mod:`jaxpool._halo` does.

Operands are broadcastable to the map's output (each axis the output's size or 1) and split as
the output is (its winners' indices), except the first ``whole`` (a fractional pool's region
starts and lengths, computed from per-plane draws): those stay whole along the spatial axes, so
that XLA computes them without communicating, and each shard slices its outputs' part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from jaxpool import _halo
from jaxpool._layout import Layout

# local(v, *operands, layout=, origins=) -> output; a transpose's: local(ct, *operands, layout=, origins=, rows=)
LocalMap = Callable[..., Any]
# Per spatial axis, (first, end): the static range of input rows each output along it may read.
Reads = Sequence[tuple[Sequence[int], Sequence[int]]]


def mapped(local: LocalMap, x, operands, layout: Layout, reads: Reads, whole: int = 0):
    """``local(v, *operands, layout=layout, origins=origins)``, each output along spatial axis ``i`` reading rows
    of ``x`` within ``reads[i]``. ``v``: ``x``, or on a mesh a shard's block with the rows its
    outputs' ranges reach in the neighbouring blocks (rows past the input's ends hold zeros: a map
    must not read them); ``origins[i]``: the whole axis's row at ``v``'s first (0 where unsharded: a
    Python int). Example: a gather at per-output row positions ``p`` is ``take(v, p - origins[i])``.
    The first ``whole`` operands are not split along the spatial axes (see above)."""
    return _ranged(local, x, tuple(operands), layout, tuple(reads), None, whole)


def spilled(local: LocalMap, ct, operands, layout: Layout, reads: Reads, in_shape: tuple[int, ...]):
    """The transpose of a :func:`mapped` map: ``local(ct, *operands, layout=layout, origins=origins,
    rows=rows)`` returns the cotangent of rows of spatial shape ``rows`` starting at ``origins``; on
    a mesh ``ct`` and ``operands`` hold every output whose range reaches into the shard's block
    (zero cotangent past the ends and in XLA's padding of an uneven axis) and the shard keeps its
    block's rows. ``in_shape``: the input's spatial shape."""
    return _ranged(local, ct, tuple(operands), layout, tuple(reads), tuple(in_shape), 0)


def _ranged(local: LocalMap, a, operands: tuple, layout: Layout, reads: tuple, in_shape: tuple | None, whole: int):
    zeros = (0,) * layout.n_spatial
    if in_shape is None:
        plain = lambda v, *ops: local(v, *ops, layout=layout, origins=zeros)  # noqa: E731
    else:
        plain = lambda c, *ops: local(c, *ops, layout=layout, origins=zeros, rows=in_shape)  # noqa: E731
    if _halo._PLAIN.get():
        return plain(a, *operands)
    compiled = jax.jit(plain)
    shapes = jax.eval_shape(compiled, a, *operands)

    @custom_vmap
    def run(v, *ops):
        if _halo._PLAIN.get():  # lowered for export or one device
            return plain(v, *ops)
        return _custom_partitioned(compiled, local, v, ops, layout, reads, in_shape, whole, len(jax.tree.leaves(shapes)))

    @run.def_vmap
    def _vmapped(axis_size, in_batched, v, *ops):  # the mapped axis (moved first) joins the batch axes
        v, *ops = (u if b else jnp.expand_dims(u, 0) for u, b in zip((v, *ops), in_batched))
        if not in_batched[0]:
            v = jnp.broadcast_to(v, (axis_size, *v.shape[1:]))
        wider = Layout(layout.ndim + 1, layout.n_spatial, layout.channels_first)
        out = _ranged(local, v, tuple(ops), wider, reads, in_shape, whole)
        return out, jax.tree.map(lambda _: True, out)

    return _halo._call(run, shapes, a, *operands)


def _plan(reads: tuple[Sequence[int], Sequence[int]], rows: int, count: int) -> _halo._AxisPlan:
    """Blocks of XLA's tiles (``ceil(rows / count)`` input rows, ``ceil(outputs / count)`` outputs),
    each needing the rows its outputs' ranges reach before and after it."""
    first, end = np.asarray(reads[0]), np.asarray(reads[1])
    block, tile = -(-rows // count), -(-len(first) // count)
    before = after = 0
    for b in range(count):
        outputs = slice(b * tile, min((b + 1) * tile, len(first)))
        if outputs.start < outputs.stop:
            before = max(before, b * block - int(first[outputs].min()))
            after = max(after, int(end[outputs].max()) - (b + 1) * block)
    return _halo._AxisPlan(block, before, after)


def _transpose_plan(reads: tuple[Sequence[int], Sequence[int]], rows: int, count: int) -> tuple[_halo._AxisPlan, _halo._AxisPlan]:
    """For a transpose over blocks of XLA's tiles: the outputs each block receives (those whose
    ranges reach into its rows, the most any block needs before and after its own), and the frame
    of rows those outputs' ranges cover around the block, which it transposes them into."""
    first, end = np.asarray(reads[0]), np.asarray(reads[1])
    out = len(first)
    block, tile = -(-rows // count), -(-out // count)
    before = after = 0
    for b in range(count):
        reaching = np.flatnonzero((first < (b + 1) * block) & (end > b * block))
        if reaching.size:
            before, after = max(before, b * tile - int(reaching[0])), max(after, int(reaching[-1]) + 1 - (b + 1) * tile)
    lo = hi = 0
    for b in range(count):
        got = slice(max(b * tile - before, 0), min((b + 1) * tile + after, out))
        if got.start < got.stop:
            lo, hi = max(lo, b * block - int(first[got].min())), max(hi, int(end[got].max()) - (b + 1) * block)
    return _halo._AxisPlan(tile, before, after), _halo._AxisPlan(block, lo, hi)


def _rule(a, operands: tuple, layout: Layout, whole: int, outputs: int) -> str:
    """Shardy's rule: every array's axes share the factors of ``a``'s, except an operand's axes of
    size 1 where ``a``'s is not (broadcast) and the spatial axes of the first ``whole`` operands,
    which get factors of their own (never split)."""
    names = [f"d{n}" for n in range(a.ndim)]
    specs = [" ".join(names)]
    for k, o in enumerate(operands):
        own = [o.shape[d] == 1 and a.shape[d] != 1 or (k < whole and d in layout.spatial_axes) for d in range(o.ndim)]
        specs.append(" ".join(f"o{k}_{d}" if own[d] else names[d] for d in range(o.ndim)))
    return ", ".join(specs) + " -> " + ", ".join([" ".join(names)] * outputs)


def _own_part(o, layout: Layout, i: int, shards: _halo._Shards, outputs: int):
    """A shard's outputs' part of operand ``o`` along spatial axis ``i`` (of ``outputs`` rows; XLA's
    tiles, the last padded with copies of the last row)."""
    axis = layout.spatial_axes[i]
    if o.shape[axis] != outputs:
        return o
    tile = -(-outputs // shards.count)
    if tile * shards.count != outputs:
        o = jnp.concatenate([o] + [lax.slice_in_dim(o, outputs - 1, outputs, axis=axis)] * (tile * shards.count - outputs), axis)
    return lax.dynamic_slice_in_dim(o, shards.index() * tile, tile, axis)


def _custom_partitioned(
    compiled, local: LocalMap, a, operands: tuple, layout: Layout, reads: tuple, in_shape: tuple | None, whole: int, outputs: int
):
    call = custom_partitioning(compiled)
    out_shape = tuple(len(first) for first, _ in reads)

    def partition(mesh, arg_shapes, result_shape):
        spec = _halo._spec(arg_shapes[0].sharding, layout.ndim)
        plans, limits = {}, {}
        for i, axis in enumerate(layout.spatial_axes):
            if spec[axis] is None:
                continue
            shards = _halo._Shards(mesh, spec[axis] if isinstance(spec[axis], tuple) else (spec[axis],))
            rows = (in_shape or layout.spatial_shape(a.shape))[i]
            plans[i] = shards, _plan(reads[i], rows, shards.count)
            if out_shape[i] % shards.count:
                limits[i] = out_shape[i]
        sharding = NamedSharding(mesh, PartitionSpec(*spec))

        def operand_spec(k: int, o) -> PartitionSpec:  # broadcast axes, and whole operands' spatial axes: not split
            return PartitionSpec(
                *(None if o.shape[d] == 1 or k < whole and d in layout.spatial_axes else spec[d] for d in range(o.ndim))
            )

        op_shardings = tuple(NamedSharding(mesh, operand_spec(k, o)) for k, o in enumerate(arg_shapes[1:]))
        every = {i: shards for i, (shards, _) in plans.items()}

        def origins():
            return tuple(
                plans[i][0].index() * plans[i][1].rows - plans[i][1].lo if i in plans else 0 for i in range(layout.n_spatial)
            )

        if in_shape is None:

            def forward(v, *ops):
                ops = tuple(_own_parts(o, layout, plans, out_shape) if k < whole else o for k, o in enumerate(ops))
                return local(_halo._exchange(v, layout, plans, 0), *ops, layout=layout, origins=origins())

            lower = forward
        else:
            frames = {i: _transpose_plan(reads[i], in_shape[i], shards.count) for i, (shards, _) in plans.items()}
            received = {i: (plans[i][0], frames[i][0]) for i in plans}
            rows = tuple(_rows(frames[i][1]) if i in frames else n for i, n in enumerate(in_shape))

            def transpose(c, *ops):
                c, *ops = (_halo._exchange(u, layout, received, 0) for u in (_halo._masked(c, layout, every, limits, 0), *ops))
                starts = tuple(
                    plans[i][0].index() * frames[i][1].rows - frames[i][1].lo if i in frames else 0
                    for i in range(layout.n_spatial)
                )
                g = local(c, *ops, layout=layout, origins=starts, rows=rows)
                for i, (_, frame) in frames.items():
                    g = lax.slice_in_dim(g, frame.lo, frame.lo + frame.rows, axis=layout.spatial_axes[i])
                return g

            lower = transpose

        return mesh, lower, sharding if outputs == 1 else (sharding,) * outputs, (sharding, *op_shardings)

    call.def_partition(partition, sharding_rule=_rule(a, operands, layout, whole, outputs))
    return call(a, *operands)


def _own_parts(o, layout: Layout, plans: dict, out_shape: tuple):
    for i, (shards, _) in plans.items():
        o = _own_part(o, layout, i, shards, out_shape[i])
    return o


def _rows(plan: _halo._AxisPlan) -> int:
    """A shard's rows with its halos."""
    return plan.lo + plan.rows + plan.hi
