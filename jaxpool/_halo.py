"""Spatially sharded windowed maps: one halo exchange per direction of each sharded axis.

XLA's SPMD partitioner gives every shifted tap of a window fold (a slice or pad along a sharded
axis) a halo exchange of its own, where ``lax.reduce_window`` exchanges once; on XLA:CPU the fold
is the faster program, and every formulation that shares its shifts runs 1.2-3x slower on one
device (benchmarks/RESULTS_breadth.md, "Halo exchanges"). :func:`windowed` and :func:`spilled`
wrap a windowed map and its transpose in ``jax.experimental.custom_partitioning``: on a mesh each
shard receives its window's overlap from its neighbours once (a ``ppermute`` per direction, the
fill value past the input's ends), runs the same map over its own block, and — for the transpose —
either sends back what spills over its edges, added by the neighbour (sums), or receives the
output rows whose windows reach into its block and transposes them with its own (``exact``: each
input row sums its terms in the unsharded order, as a max's gradient must). Where padding must
not be mistaken for an equal real element (a max's winner), the shards at the input's ends pad as
the unsharded map does (``exact_edges``: a ``lax.switch`` on the shard's position). Values equal
the unsharded map's (sums within reassociation; maxima and their gradients bit for bit).

An axis is exchanged this way when it splits into equal blocks of whole strides and every shard
owns the outputs of its block (``out == input / stride``, the windows reaching at most one
neighbour); otherwise (ragged sizes, ``ceil_mode`` overhang past a block) that axis is gathered.
The maps run as a primitive (:func:`_call`) that lowers the plain map for one device — the
program is the local maps' own, with no call boundary — and for ``jax.export``, which serialises
no partitioning callback (:func:`plain`; XLA partitions the exported program on a mesh).
Transformations: ``custom_partitioning`` has no differentiation or batching rules, so these maps
are only called inside :func:`jaxpool._linear.linear` (which differentiates and transposes them as
a pair) or as the value of a ``custom_jvp`` (a max's), and are vectorised by moving the mapped
axis into the batch axes (``custom_vmap``).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src import dispatch, sharding_impls
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.interpreters import batching, mlir
from jax.sharding import NamedSharding, PartitionSpec

from jaxpool._geometry import WindowGeometry
from jaxpool._layout import Layout

LocalMap = Callable[..., Any]  # (array, layout, geometry) -> array


def splits(geom: WindowGeometry) -> bool:
    """Whether blocks of whole strides can own their outputs on every pooled axis (``out * stride
    == in``): a precondition for any shard count. Elsewhere (e.g. 4x4/3 bins on 16) XLA's own
    partitioning of the plain map exchanges halos where :func:`windowed` would gather the axis."""
    return geom.bins is None and all(
        o * s == n for o, s, n, k in zip(geom.out_shape, geom.strides, geom.in_shape, geom.window) if k > 1 or s > 1
    )


def windowed(local: LocalMap, x, layout: Layout, geom: WindowGeometry, fill: float = 0, operands=(), exact_edges=False):
    """``local(x, *operands, layout, geom)`` — a map whose output ``o`` along each spatial axis
    reads the input rows of window ``o`` (padding ``fill``; ``operands`` shaped like the output) —
    partitioned with one halo exchange per direction of each sharded spatial axis. It may return
    several arrays shaped like its output. With ``exact_edges`` the shards at the input's ends run
    ``local`` with the real padding instead of ``fill`` rows (a ``lax.switch`` on the shard's
    position): needed where padding must be told apart from an equal real element (a max's
    winner). Example: ``windowed(window_sum, x, layout, geom)``."""
    return _partitioned(local, x, operands, layout, geom, fill, "edges" if exact_edges else "windowed")


def spilled(local: LocalMap, ct, layout: Layout, geom: WindowGeometry, operands=(), exact=False):
    """``local(ct, *operands, layout, geom)`` — the transpose of a :func:`windowed` map, from the
    output's cotangent ``ct`` to the input's — partitioned: each shard transposes its block over the
    window's reach and sends what falls outside it to the neighbour that owns it, which adds it.
    With ``exact`` each shard instead receives the rows of ``ct`` (and ``operands``) whose windows
    reach into its block and transposes them with its own: every input row then sums its terms in
    the unsharded order, bit for bit (a max's gradient), at one exchange per direction for each of
    ``ct`` and ``operands``."""
    return _partitioned(local, ct, operands, layout, geom, 0, "gathered" if exact else "spilled")


def transposed(local: LocalMap) -> LocalMap:
    """The transpose of a map ``local(a, *operands, layout, geom)`` linear in ``a`` (JAX's, op by
    op): ``transposed(local)(ct, *operands, layout, geom)``, for :func:`spilled`."""

    def back(ct, *args):
        *operands, layout, geom = args
        shape = jax.ShapeDtypeStruct(layout.with_spatial(ct.shape, geom.in_shape), ct.dtype)
        return jax.linear_transpose(lambda v: local(v, *operands, layout, geom), shape)(ct)[0]

    return back


_PLAIN = contextvars.ContextVar("jaxpool_plain_halo", default=False)


@contextlib.contextmanager
def plain(on: bool = True):
    """While on, :func:`windowed` and :func:`spilled` trace the plain map (no partitioning
    callback): ``jax.export`` serialises no callbacks, so programs lowered for export take it."""
    token = _PLAIN.set(on or _PLAIN.get())
    try:
        yield
    finally:
        _PLAIN.reset(token)


def _partitioned(local: LocalMap, a, operands, layout: Layout, geom: WindowGeometry, fill, how: str):
    if _PLAIN.get():
        return local(a, *operands, layout, geom)
    # One traced map for the shapes and the partitioned call (jit caches its trace), and no
    # constants seen by custom_partitioning, which traces none (e.g. a max fold's masks).
    whole = jax.jit(lambda v, *ops: local(v, *ops, layout, geom))
    shapes = jax.eval_shape(whole, a, *operands)

    @custom_vmap
    def mapped(v, *ops):
        if _PLAIN.get():  # lowered for export or one device (the primitive's lowering, :func:`_call`)
            return local(v, *ops, layout, geom)
        return _custom_partitioned(whole, local, v, ops, layout, geom, fill, how, len(jax.tree.leaves(shapes)))

    @mapped.def_vmap
    def _vmapped(axis_size, in_batched, v, *ops):  # the mapped axis (moved first) joins the batch axes
        v, *ops = (u if b else jnp.broadcast_to(u, (axis_size, *u.shape)) for u, b in zip((v, *ops), in_batched))
        wider = Layout(layout.ndim + 1, layout.n_spatial, layout.channels_first)
        out = _partitioned(local, v, tuple(ops), wider, geom, fill, how)
        return out, jax.tree.map(lambda _: True, out)

    return _call(mapped, shapes, a, *operands)


def _custom_partitioned(whole, local: LocalMap, a, operands, layout: Layout, geom: WindowGeometry, fill, how: str, outputs: int):
    call = custom_partitioning(whole)

    def partition(mesh, arg_shapes, result_shape):
        spec = _spec(arg_shapes[0].sharding, layout.ndim)
        plans = {}
        for i, axis in enumerate(layout.spatial_axes):
            if spec[axis] is not None:
                shards = _Shards(mesh, spec[axis] if isinstance(spec[axis], tuple) else (spec[axis],))
                plan = _plan(geom, i, shards.count)
                if plan is not None and how == "gathered":
                    plan = _output_plan(geom, i, plan)
                if plan is None:
                    spec[axis] = None
                else:
                    plans[i] = shards, plan
        sharding = NamedSharding(mesh, PartitionSpec(*spec))
        block = _block_geometry(geom, {i: plan for i, (_, plan) in plans.items()})
        if how == "gathered":
            lower = lambda c, *ops: _gathered(local, c, ops, layout, geom, plans)  # noqa: E731
        elif how == "spilled":
            lower = lambda c, *ops: _fold(local(c, *ops, layout, block), layout, plans)  # noqa: E731
        elif how == "edges":
            lower = lambda v, *ops: _at_edges(local, _exchange(v, layout, plans, fill), ops, layout, geom, plans)  # noqa: E731
        else:
            lower = lambda v, *ops: local(_exchange(v, layout, plans, fill), *ops, layout, block)  # noqa: E731
        results = sharding if outputs == 1 else (sharding,) * outputs
        return mesh, lower, results, (sharding,) * (1 + len(operands))

    factors = " ".join(f"d{n}" for n in range(layout.ndim))
    call.def_partition(
        partition,
        sharding_rule=", ".join([factors] * (1 + len(operands))) + " -> " + ", ".join([factors] * outputs),
    )
    return call(a, *operands)


def _at_edges(local: LocalMap, v, operands, layout: Layout, geom: WindowGeometry, plans: dict):
    """``local`` over the exchanged block ``v``, where a shard at an end of a sharded axis drops the
    ``fill`` rows it received past the input's end and pads as the unsharded map does (so that the
    padding never takes a real element's place): one ``lax.switch`` branch per combination of the
    axes' positions that some shard has."""
    variants = {}  # axis -> per block: (at the start, at the end), only where it reads padding
    for i, (shards, plan) in plans.items():
        ends = [(b == 0 and plan.lo > 0, b == shards.count - 1 and plan.hi > 0) for b in range(shards.count)]
        if any(any(e) for e in ends):
            variants[i] = shards, ends
    if not variants:
        return local(v, *operands, layout, _block_geometry(geom, {i: plan for i, (_, plan) in plans.items()}))
    kinds = {i: sorted(set(ends)) for i, (_, ends) in variants.items()}
    combos = list(itertools.product(*kinds.values()))

    def branch(combo):
        def run(v, *ops):
            block = _block_geometry(geom, {i: plan for i, (_, plan) in plans.items()})
            for i, (start, end) in zip(kinds, combo):
                axis, plan = layout.spatial_axes[i], plans[i][1]
                if start:  # the rows before the input: padding, not received rows
                    v = lax.slice_in_dim(v, plan.lo, v.shape[axis], axis=axis)
                    block = block.with_axis(i, in_shape=block.in_shape[i] - plan.lo, pad_lo=plan.lo)
                if end:
                    v = lax.slice_in_dim(v, 0, v.shape[axis] - plan.hi, axis=axis)
                    block = block.with_axis(i, in_shape=block.in_shape[i] - plan.hi, pad_hi=plan.hi)
            return local(v, *ops, layout, block)

        return run

    index = 0
    for i, (shards, ends) in variants.items():
        table = np.array([kinds[i].index(e) for e in ends], np.int32)
        index = index * len(kinds[i]) + jnp.asarray(table)[shards.index()]
    return lax.switch(index, [branch(c) for c in combos], v, *operands)


_halo_p = jax.extend.core.Primitive("jaxpool_halo")
_halo_p.multiple_results = True


def _call(fn, shapes, *args):
    """``fn(*args)``, of output ``shapes``, as a primitive whose lowering takes the plain maps when
    lowered for ``jax.export`` or for one device (:func:`plain`: the one-device program is the
    local maps' own, not one with call boundaries), and which JAX lowers knowing the devices."""
    leaves, tree = jax.tree.flatten(shapes)
    avals = tuple((s.shape, s.dtype) for s in leaves)
    return jax.tree.unflatten(tree, _halo_p.bind(*args, fn=lambda *a: jax.tree.leaves(fn(*a)), avals=avals))


def _halo_lowering(ctx, *args, fn, avals):
    with plain(ctx.module_context.lowering_parameters.for_export or _devices(ctx) < 2):
        return mlir.lower_fun(fn, multiple_results=True)(ctx, *args)


def _devices(ctx) -> int:
    """How many devices the program being lowered runs on (as custom_partitioning finds them)."""
    context = ctx.module_context.axis_context
    if isinstance(context, sharding_impls.ShardingContext):
        return len(context.device_assignment or ())
    if isinstance(context, sharding_impls.SPMDAxisContext):
        return len(context.mesh._flat_devices_tuple)
    return 0


def _halo_batch(args, dims, *, fn, avals):
    size = next(v.shape[d] for v, d in zip(args, dims) if d is not None)
    args = [batching.bdim_at_front(v, d, size) for v, d in zip(args, dims)]
    outs = _halo_p.bind(*args, fn=jax.vmap(fn), avals=tuple(((size, *shape), dtype) for shape, dtype in avals))
    return outs, [0] * len(outs)


_halo_p.def_impl(lambda *args, fn, avals: fn(*args))
_halo_p.def_abstract_eval(lambda *args, fn, avals: [args[0].update(shape=shape, dtype=dtype) for shape, dtype in avals])
mlir.register_lowering(_halo_p, _halo_lowering)
batching.primitive_batchers[_halo_p] = _halo_batch
dispatch.prim_requires_devices_during_lowering.add(_halo_p)


def _spec(sharding, ndim: int) -> list:
    spec = list(sharding.spec) if isinstance(sharding, NamedSharding) else []
    return spec + [None] * (ndim - len(spec))


class _Shards:
    """The shards of one array axis split over mesh axes ``names`` (major first), in block order.

    :meth:`send` moves each block's rows to block ``+ step``. ``lax.ppermute`` over several mesh
    axes numbers the devices in the mesh's axis order whatever the order of the names (while
    ``lax.axis_index`` follows the names: jax 0.10), so the pairs are numbered over the names in
    mesh order, from each block's coordinates."""

    def __init__(self, mesh, names: tuple):
        self.names, self.sizes = names, tuple(mesh.shape[n] for n in names)
        self.count = math.prod(self.sizes)
        self.mesh_order = tuple(sorted(names, key=list(mesh.axis_names).index))

    def index(self):
        """This device's block number."""
        block = 0
        for name, size in zip(self.names, self.sizes):
            block = block * size + lax.axis_index(name)
        return block

    def send(self, rows, step: int):
        pairs = [(self._device(b), self._device(b + step)) for b in range(self.count) if 0 <= b + step < self.count]
        return lax.ppermute(rows, self.mesh_order, pairs)

    def _device(self, block: int) -> int:
        coordinates = dict(zip(self.names, np.unravel_index(block, self.sizes)))
        sizes = dict(zip(self.names, self.sizes))
        return int(np.ravel_multi_index([coordinates[n] for n in self.mesh_order], [sizes[n] for n in self.mesh_order]))


@dataclasses.dataclass(frozen=True)
class _AxisPlan:
    """One sharded axis: blocks of ``rows`` input rows, each needing ``lo`` rows of the shard
    before and ``hi`` of the one after (``hi < 0``: its last ``-hi`` rows are read by none)."""

    rows: int
    lo: int
    hi: int


def _plan(geom: WindowGeometry, i: int, shards: int) -> _AxisPlan | None:
    """Axis ``i`` over ``shards`` blocks, or None where a block does not own whole windows' outputs
    (:func:`splits` has excluded binned windows)."""
    size, s = geom.in_shape[i], geom.strides[i]
    if size % shards or (size // shards) % s or geom.out_shape[i] * s != size:
        return None
    rows = size // shards
    lo, hi = geom.pad_lo[i], geom.extent[i] - s - geom.pad_lo[i]
    if lo > rows or hi > rows or lo < 0:  # a window reaching past the next shard
        return None
    return _AxisPlan(rows, lo, hi)


def _block_geometry(geom: WindowGeometry, plans: dict[int, _AxisPlan]) -> WindowGeometry:
    """``geom`` over one shard's block with its halos: no padding on the exchanged axes."""
    for i, plan in plans.items():
        rows = plan.rows + plan.lo + plan.hi
        geom = geom.with_axis(i, in_shape=rows, pad_lo=0, pad_hi=0, out_shape=plan.rows // geom.strides[i])
    return geom


def _output_plan(geom: WindowGeometry, i: int, plan: _AxisPlan) -> _AxisPlan | None:
    """For an exact transpose (:func:`spilled`): blocks of ``rows`` outputs, each needing the
    ``lo`` outputs before it whose windows reach into its input block and the ``hi`` after it."""
    s, rows = geom.strides[i], plan.rows // geom.strides[i]
    lo, hi = max((plan.hi + s - 1) // s, 0), -(-plan.lo // s)
    if lo > rows or hi > rows:
        return None
    return _AxisPlan(rows, lo, hi)


def _gathered(local: LocalMap, c, operands, layout: Layout, geom: WindowGeometry, plans: dict):
    """The exact transpose on one shard: ``c`` and ``operands`` with the output rows before and
    after the block whose windows reach into it (zero past the ends), transposed over their own
    windows, cropped to the block's input rows."""
    c = _exchange(c, layout, plans, 0)
    operands = [_exchange(o, layout, plans, 0) for o in operands]
    windows = geom
    for i, (_, plan) in plans.items():
        out = plan.lo + plan.rows + plan.hi
        in_shape = (out - 1) * geom.strides[i] + geom.extent[i]
        windows = windows.with_axis(i, in_shape=in_shape, pad_lo=0, pad_hi=0, out_shape=out)
    g = local(c, *operands, layout, windows)
    for i, (_, plan) in plans.items():
        axis, rows = layout.spatial_axes[i], plan.rows * geom.strides[i]
        start = plan.lo * geom.strides[i] + geom.pad_lo[i]  # the block's first row
        short = start + rows - g.shape[axis]
        if short > 0:  # windows with gaps: the block's last rows are read by none
            g = jnp.pad(g, [(0, short if a == axis else 0) for a in range(g.ndim)])
        g = lax.slice_in_dim(g, start, start + rows, axis=axis)
    return g


def _exchange(v, layout: Layout, plans: dict, fill):
    """Each shard's block with ``lo`` rows of the previous shard before it and ``hi`` of the next
    after it (``fill`` past the input's ends), axis by axis: later axes carry the earlier halos,
    so the corners arrive too."""
    for i, (shards, plan) in plans.items():
        axis = layout.spatial_axes[i]
        index = shards.index()
        parts = []
        if plan.lo:
            received = shards.send(lax.slice_in_dim(v, plan.rows - plan.lo, plan.rows, axis=axis), 1)
            parts.append(jnp.where(index == 0, jnp.asarray(fill, v.dtype), received))
        parts.append(v if plan.hi >= 0 else lax.slice_in_dim(v, 0, plan.rows + plan.hi, axis=axis))
        if plan.hi > 0:
            received = shards.send(lax.slice_in_dim(v, 0, plan.hi, axis=axis), -1)
            parts.append(jnp.where(index == shards.count - 1, jnp.asarray(fill, v.dtype), received))
        v = jnp.concatenate(parts, axis=axis) if len(parts) > 1 else parts[0]
    return v


def _fold(g, layout: Layout, plans: dict):
    """The transpose of :func:`_exchange`: the rows of ``g`` (a block with its halos) outside the
    block are sent to the shard they belong to and added there; past the input's ends, dropped."""
    for i, (shards, plan) in reversed(list(plans.items())):
        axis = layout.spatial_axes[i]
        if plan.hi < 0:
            g = jnp.pad(g, [(0, -plan.hi if a == axis else 0) for a in range(g.ndim)])
        hi = max(plan.hi, 0)
        block = lax.slice_in_dim(g, plan.lo, plan.lo + plan.rows, axis=axis)
        if plan.lo:  # rows before the block: the previous shard's last ones
            spill = lax.slice_in_dim(g, 0, plan.lo, axis=axis)
            block = _add_rows(block, shards.send(spill, -1), axis, plan.rows - plan.lo)
        if hi:  # rows after it: the next shard's first ones
            spill = lax.slice_in_dim(g, plan.lo + plan.rows, plan.lo + plan.rows + hi, axis=axis)
            block = _add_rows(block, shards.send(spill, 1), axis, 0)
        g = block
    return g


def _add_rows(block, rows, axis: int, start: int):
    """``block`` plus ``rows`` placed from row ``start`` along ``axis``."""
    pad = [(0, 0)] * block.ndim
    pad[axis] = (start, block.shape[axis] - start - rows.shape[axis])
    return block + jnp.pad(rows, pad)
