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
owns the outputs of its block (``out == input / stride``); a window longer than a block takes
its halo from as many shards as it spans, one ``ppermute`` each. Axes whose outputs divide over the
shards but whose windows drift across the blocks ("VALID" 3x3/1 on 64 rows over 2 devices: 31
outputs a shard, reading rows 0-32 and 31-63) take the most rows any shard's windows need (only
those some shard reads from another: :meth:`_AxisPlan.received`), each shard slicing its own
(:func:`_aligned`); an exact transpose receives the most outputs any shard's rows need and slices
its rows from their transpose. Where outputs do not divide (14 over 4, ``ceil_mode``'s extra
window), or the input's rows do not (15 rows after a 2x2/1 pool; an unpooled axis that a chained
pass before left uneven), XLA gives each shard the next multiple's share, padding last
(custom_partitioning's operands and results are tiled so): each shard's map runs over its tile
(:func:`_tiled`), its extra windows reading padding, with that padding's contents replaced
by the fill it stands for (:func:`_masked`): no gather, whatever the shard count.
The maps run as a primitive (:func:`_call`) that lowers the plain map for one device — the
program is the local maps' own, with no call boundary — and for ``jax.export``, which serialises
no partitioning callback (:func:`plain`; XLA partitions the exported program on a mesh).
A map may also read input-shaped arrays besides its input (``inputs``: a max's tangent map reads
the input whose maxima select it), exchanged with the same halos — or, for an exact transpose,
over the rows that the windows of the received outputs read.
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


def splits(geom: WindowGeometry, drifting: bool = False) -> bool:
    """Whether blocks of whole strides can own their outputs on every pooled axis (``out * stride
    == in``) for any shard count (what ``jaxpool.max`` asks before running a whole chain as one
    map). With ``drifting``, any unbinned geometry: where the shards own equal numbers of outputs whose
    windows drift across the blocks (``out * stride != in``: "VALID" 3x3/1 on 64 rows over 2
    devices), each shard slices its windows' rows from the exchanged ones (:func:`_aligned`);
    where the outputs do not divide over the shards, each shard computes its tile's (:func:`_tiled`)."""
    return geom.bins is None and (drifting or not _drifting(geom))


def windowed(
    local: LocalMap, x, layout: Layout, geom: WindowGeometry, fill: float = 0, operands=(), exact_edges=False, inputs=()
):
    """``local(x, *inputs, *operands, layout, geom)`` — a map whose output ``o`` along each spatial
    axis reads the input rows of window ``o`` (padding ``fill``; ``operands`` shaped like the
    output; ``inputs``, ``(array, fill)`` pairs shaped like ``x``, whose rows it reads with
    ``x``'s) — partitioned with one halo exchange per direction of each sharded spatial axis (and
    of each input). It may return several arrays shaped like its output. With ``exact_edges`` the
    shards at the input's ends run ``local`` with the real padding instead of ``fill`` rows (a
    ``lax.switch`` on the shard's position): needed where padding must be told apart from an equal
    real element (a max's winner). Example: ``windowed(window_sum, x, layout, geom)``."""
    arrays, fills = tuple(a for a, _ in inputs), tuple(f for _, f in inputs)
    return _partitioned(local, x, arrays + tuple(operands), layout, geom, fill, "edges" if exact_edges else "windowed", fills)


def spilled(local: LocalMap, ct, layout: Layout, geom: WindowGeometry, operands=(), exact=False, inputs=()):
    """``local(ct, *inputs, *operands, layout, geom)`` — the transpose of a :func:`windowed` map,
    from the output's cotangent ``ct`` to the input's — partitioned: each shard transposes its
    block over the window's reach and sends what falls outside it to the neighbour that owns it,
    which adds it. With ``exact`` each shard instead receives the rows of ``ct`` (and ``operands``)
    whose windows reach into its block, and the rows of ``inputs`` those windows read, and
    transposes them with its own: every input row then sums its terms in the unsharded order, bit
    for bit (a max's gradient), at one exchange per direction (and shard reached) for each array;
    shards whose windows reach past the input's ends run ``local`` with the real padding there."""
    arrays, fills = tuple(a for a, _ in inputs), tuple(f for _, f in inputs)
    return _partitioned(local, ct, arrays + tuple(operands), layout, geom, 0, "gathered" if exact else "spilled", fills)


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


def _partitioned(local: LocalMap, a, operands, layout: Layout, geom: WindowGeometry, fill, how: str, input_fills=()):
    """``local(a, *operands)`` partitioned ``how``; the first ``len(input_fills)`` operands are shaped
    like the map's input (padded with those fills), the others like its output."""
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
        outputs = len(jax.tree.leaves(shapes))
        return _custom_partitioned(whole, local, v, ops, layout, geom, fill, how, outputs, input_fills)

    @mapped.def_vmap
    def _vmapped(axis_size, in_batched, v, *ops):  # the mapped axis (moved first) joins the batch axes
        v, *ops = (u if b else jnp.broadcast_to(u, (axis_size, *u.shape)) for u, b in zip((v, *ops), in_batched))
        wider = Layout(layout.ndim + 1, layout.n_spatial, layout.channels_first)
        out = _partitioned(local, v, tuple(ops), wider, geom, fill, how, input_fills)
        return out, jax.tree.map(lambda _: True, out)

    return _call(mapped, shapes, a, *operands)


def _axis_sizes(geom: WindowGeometry) -> tuple[tuple[int, int, int, int], ...]:
    """``(axis, input rows, outputs, stride)`` of each spatial axis (stride 0 for axes the map does
    not pool: its output rows are its input rows); none for binned windows."""
    if geom.bins is not None:
        return ()
    axes = enumerate(zip(geom.in_shape, geom.out_shape, geom.strides, geom.window, geom.pad_lo, geom.pad_hi))
    return tuple((i, n, o, 0 if k == s == 1 and lo == hi == 0 else s) for i, (n, o, s, k, lo, hi) in axes)


def _drifting(geom: WindowGeometry) -> bool:
    """Whether the windows of some pooled axis drift across blocks of whole strides (``out *
    stride != in``: blocks can own their outputs only where the outputs divide over the shards)."""
    return any(o * s != n for _, n, o, s in _axis_sizes(geom) if s)


def _tiled(rows: int, outputs: int, stride: int, count: int) -> tuple[int, int]:
    """An axis's input rows and outputs (``stride`` 0: an axis the map does not pool, whose outputs
    are its rows) as XLA tiles them over ``count`` shards: where they do not divide, each shard
    holds the next multiple's share, padding last (15 rows over 2: 8 each). A pooled axis's
    outputs grow likewise where blocks of its rows own no equal share of them (14 outputs of
    "VALID" 3x3/1 on 16 rows over 4: 4 a shard, the last two padding, their windows reading
    padding)."""
    tiled_rows = -(-rows // count) * count
    if not stride:
        return tiled_rows, tiled_rows
    if outputs % count and (tiled_rows // count % stride or outputs * stride != tiled_rows):
        return tiled_rows, -(-outputs // count) * count
    return tiled_rows, outputs


def _masked(v, layout: Layout, shards: dict, limits: dict[int, int], fill):
    """A shard's block of ``v`` with ``fill`` in its rows past ``limits[i]`` along spatial axis
    ``i`` (XLA's padding of an unevenly split axis holds anything)."""
    for i, limit in limits.items():
        axis = layout.spatial_axes[i]
        rows = v.shape[axis]
        shape = [1] * v.ndim
        shape[axis] = rows
        index = shards[i].index() * rows + lax.broadcasted_iota(jnp.int32, shape, axis)
        v = jnp.where(index < limit, v, jnp.asarray(fill, v.dtype))
    return v


def _custom_partitioned(
    whole,
    local: LocalMap,
    a,
    operands,
    layout: Layout,
    geom: WindowGeometry,
    fill,
    how: str,
    outputs: int,
    input_fills=(),
):
    call = custom_partitioning(whole)

    def partition(mesh, arg_shapes, result_shape):
        spec = _spec(arg_shapes[0].sharding, layout.ndim)
        plans, reach = {}, {}  # reach: the rows of the inputs an exact transpose's windows read
        tiled, limits = geom, ({}, {})  # limits: the input's own rows, its own outputs (where XLA pads)
        for i, n, o, s in _axis_sizes(geom):
            axis = layout.spatial_axes[i]
            if spec[axis] is None:
                continue
            shards = _Shards(mesh, spec[axis] if isinstance(spec[axis], tuple) else (spec[axis],))
            rows, outs = _tiled(n, o, s, shards.count)
            wider = geom.with_axis(i, in_shape=rows, out_shape=outs)
            plan = _plan(wider, i, shards.count)
            if plan is not None and rows != n and s:  # the shards at the ends pad past the input's own rows
                plan = dataclasses.replace(plan, size=n)
            if plan is not None and how == "gathered":
                plan, block_plan = _output_plan(wider, i, plan), plan
                if input_fills:
                    reach[i] = shards, _reach_plan(wider, i, block_plan, plan)
                    plan = plan if reach[i][1] is not None else None
            if plan is None:
                spec[axis] = None
                reach.pop(i, None)
                continue
            plans[i], tiled = (shards, plan), tiled.with_axis(i, in_shape=rows, out_shape=outs)
            for limit, own, held in zip(limits, (n, o), (rows, outs)):
                if s and held != own:
                    limit[i] = own
        sharding = NamedSharding(mesh, PartitionSpec(*spec))
        block = _block_geometry(tiled, {i: plan for i, (_, plan) in plans.items()})
        n = len(input_fills)
        every = {i: sh for i, (sh, _) in plans.items()}
        in_limits, out_limits = limits

        def masked(lower):  # XLA's padding of the operands replaced by the fill their reads expect
            out_shaped = how in ("spilled", "gathered")  # the first operand (a cotangent) is shaped like the output

            def run(first, *ops):
                shaped = [(first, out_limits if out_shaped else in_limits, 0 if out_shaped else fill)]
                shaped += [(o, in_limits, f) for o, f in zip(ops[:n], input_fills)] + [(o, out_limits, 0) for o in ops[n:]]
                return lower(*(_masked(u, layout, every, lim, f) for u, lim, f in shaped))

            return run if in_limits or out_limits else lower

        def exchanged(*arrays):  # the map's input and its inputs (the first of each) with their halos, aligned
            fills = (fill, *input_fills)[-len(arrays) :]
            return [_aligned(_exchange(u, layout, plans, f), layout, plans) for u, f in zip(arrays, fills)]

        if how == "gathered":
            lower = lambda c, *ops: _gathered(local, c, ops[:n], ops[n:], input_fills, layout, tiled, plans, reach)  # noqa: E731
        elif how == "spilled":

            def spill(c, *ops):
                return _fold(_unaligned(local(c, *exchanged(*ops[:n]), *ops[n:], layout, block), layout, plans), layout, plans)

            lower = spill
        elif how == "edges":
            run = lambda vs, others, g, _: local(*vs, *others, layout, g)  # noqa: E731
            lower = lambda v, *ops: _at_edges(run, exchanged(v, *ops[:n]), ops[n:], plans, layout, block)  # noqa: E731
        else:
            lower = lambda v, *ops: local(*exchanged(v, *ops[:n]), *ops[n:], layout, block)  # noqa: E731
        results = sharding if outputs == 1 else (sharding,) * outputs
        return mesh, masked(lower), results, (sharding,) * (1 + len(operands))

    factors = " ".join(f"d{n}" for n in range(layout.ndim))
    call.def_partition(
        partition,
        sharding_rule=", ".join([factors] * (1 + len(operands))) + " -> " + ", ".join([factors] * outputs),
    )
    return call(a, *operands)


def _at_edges(run, vs, others, plans: dict, layout: Layout, geom: WindowGeometry):
    """``run(vs, others, geom, cuts)`` over arrays ``vs`` exchanged by ``plans`` (``geom`` reads
    them unpadded), where a shard whose exchanged rows reach past the input's ends drops those
    ``fill`` rows and pads as the unsharded map does (so that the padding never takes a real
    element's place): ``cuts[i]``, the rows dropped before and after along axis ``i``, in ``geom``
    padding. One ``lax.switch`` branch per combination of the axes' cuts that some shard has."""
    variants = {}  # axis -> per block: (padding rows before it, after it), only where some reads padding
    for i, (shards, plan) in plans.items():
        size, ends = plan.size or shards.count * plan.rows, []
        for start, length in map(plan.reads, range(shards.count)):
            cut = max(-start, 0), max(start + length - size, 0)
            ends.append(cut if sum(cut) < length else (0, 0))  # (no real row: outputs in XLA's padding)
        if any(any(e) for e in ends):
            variants[i] = shards, ends
    if not variants:
        return run(vs, others, geom, {})
    kinds = {i: sorted(set(ends)) for i, (_, ends) in variants.items()}
    combos = list(itertools.product(*kinds.values()))

    def branch(combo):
        def go(*args):
            vs, others, g = list(args[: len(args) - n_others]), args[len(args) - n_others :], geom
            for i, (start, end) in zip(kinds, combo):
                axis = layout.spatial_axes[i]
                vs = [lax.slice_in_dim(v, start, v.shape[axis] - end, axis=axis) for v in vs]
                g = g.with_axis(i, in_shape=g.in_shape[i] - start - end, pad_lo=g.pad_lo[i] + start, pad_hi=g.pad_hi[i] + end)
            return run(vs, others, g, dict(zip(kinds, combo)))

        return go

    n_others = len(others)
    index = 0
    for i, (shards, ends) in variants.items():
        table = np.array([kinds[i].index(e) for e in ends], np.int32)
        index = index * len(kinds[i]) + jnp.asarray(table)[shards.index()]
    return lax.switch(index, [branch(c) for c in combos], *vs, *others)


_halo_p = jax.extend.core.Primitive("jaxpool_halo")
_halo_p.multiple_results = True


def call(fn, shapes, *args):
    """``fn(*args)`` lowered knowing the devices: ``fn`` may ask :func:`plain_lowering` whether the
    program runs on one device (or is exported) and take a form that would communicate on several
    (e.g. a branch on a global predicate). Not differentiable: its arguments carry no tangent
    (integers, or ``lax.stop_gradient``)."""
    return _call(fn, shapes, *args)


def plain_lowering() -> bool:
    """Whether the map being lowered runs on one device or is exported (see :func:`call`)."""
    return _PLAIN.get()


def _call(fn, shapes, *args):
    """``fn(*args)``, of output ``shapes``, as a primitive whose lowering takes the plain maps when
    lowered for ``jax.export`` or for one device (:func:`plain`: the one-device program is the
    local maps' own, not one with call boundaries). JAX lowers it knowing the devices."""
    leaves, tree = jax.tree.flatten(shapes)
    avals = tuple((s.shape, s.dtype) for s in leaves)
    fn_leaves = lambda *a: jax.tree.leaves(fn(*a))  # noqa: E731
    return jax.tree.unflatten(tree, _halo_p.bind(*args, fn=fn_leaves, avals=avals))


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
    avals = tuple(((size, *shape), dtype) for shape, dtype in avals)
    outs = _halo_p.bind(*args, fn=jax.vmap(fn), avals=avals)
    return outs, [0] * len(outs)


_halo_p.def_impl(lambda *args, fn, **_: fn(*args))
_halo_p.def_abstract_eval(lambda *args, avals, **_: [args[0].update(shape=shape, dtype=dtype) for shape, dtype in avals])
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
    """One sharded axis: blocks of ``rows`` input rows, each needing the ``lo`` rows before it and
    the ``hi`` after it, from as many shards as they span (``hi < 0``: its last ``-hi`` rows are
    read by none). Windows that drift across the blocks (``drift``: how many rows later each block's
    windows start than the one before's, relative to the block) read ``span`` rows of those, from
    row ``first - block * drift``, for their ``outputs`` outputs per block; otherwise ``span`` is 0.
    ``size``: the input's own rows where the blocks hold more (0: all are its own)."""

    rows: int
    lo: int
    hi: int
    drift: int = 0
    span: int = 0
    first: int = 0
    outputs: int = 0
    size: int = 0

    def reads(self, block: int) -> tuple[int, int]:
        """``(first row, rows)``: where, along the whole axis, the rows that ``block``'s map reads
        start (negative: before the input), and how many (exchanged, then :func:`_aligned`)."""
        start = block * self.rows - self.lo
        if self.span:
            return start + self.first - block * self.drift, self.span
        return start, self.lo + self.rows + self.hi

    def received(self, count: int) -> tuple[int, int]:
        """How many of the ``lo`` rows before a block and of the ``hi`` after it some block of
        ``count`` reads from other blocks (the rest: padding, or rows only another block reads)."""
        size, before, after = count * self.rows, 0, 0
        for b in range(count):
            start, length = self.reads(b)
            before = max(before, b * self.rows - max(start, 0))
            after = max(after, min(start + length, size) - (b + 1) * self.rows)
        return min(before, self.lo), min(after, max(self.hi, 0))


def _plan(geom: WindowGeometry, i: int, shards: int) -> _AxisPlan | None:
    """Axis ``i`` over ``shards`` blocks, or None where the input or the outputs do not divide over
    them (:func:`splits` has excluded binned windows; :func:`_tiled` grows uneven ones)."""
    size, s, out, pad = geom.in_shape[i], geom.strides[i], geom.out_shape[i], geom.pad_lo[i]
    if size % shards:
        return None
    rows = size // shards
    if rows % s == 0 and out * s == size:
        lo, hi = pad, geom.extent[i] - s - pad
        return None if lo < 0 or -hi > rows else _AxisPlan(rows, lo, hi)
    if out % shards:
        return None
    outputs = out // shards  # block b's windows: rows b * outputs * s - pad on, relative to the block
    drift = rows - outputs * s  # b * drift + pad rows before the block, extent - s - pad - (b + 1) * drift after
    lo = max(b * drift + pad for b in range(shards))
    hi = max(geom.extent[i] - s - pad - (b + 1) * drift for b in range(shards))
    if -hi > rows:
        return None
    return _AxisPlan(rows, lo, hi, drift, (outputs - 1) * s + geom.extent[i], lo - pad, outputs)


def _hops(count: int, rows: int) -> list[tuple[int, int]]:
    """A halo of ``count`` rows as ``(distance, rows)`` pieces: all of the nearer shards' blocks and
    the rest from the farthest, farthest first."""
    far = -(-count // rows)
    return [(d, min(rows, count - (d - 1) * rows)) for d in range(far, 0, -1)]


def _block_geometry(geom: WindowGeometry, plans: dict[int, _AxisPlan]) -> WindowGeometry:
    """``geom`` over one shard's block with its halos: no padding on the exchanged axes."""
    for i, plan in plans.items():
        if plan.span:  # drifting windows: the rows they read (_aligned)
            geom = geom.with_axis(i, in_shape=plan.span, pad_lo=0, pad_hi=0, out_shape=plan.outputs)
        else:
            rows = plan.rows + plan.lo + plan.hi
            geom = geom.with_axis(i, in_shape=rows, pad_lo=0, pad_hi=0, out_shape=plan.rows // geom.strides[i])
    return geom


def _output_plan(geom: WindowGeometry, i: int, plan: _AxisPlan) -> _AxisPlan:
    """For an exact transpose (:func:`spilled`): blocks of ``rows`` outputs, each needing the
    ``lo`` outputs before it whose windows reach into its input block and the ``hi`` after it (the
    most any block needs where windows drift: each transposes them all, and ``drift`` says how many
    rows later each block's input block starts relative to its outputs' windows)."""
    s, pad, extent = geom.strides[i], geom.pad_lo[i], geom.extent[i]
    if not plan.span:
        rows = plan.rows // s
        return _AxisPlan(rows, max((plan.hi + s - 1) // s, 0), -(-plan.lo // s))
    out, rows = geom.out_shape[i], plan.outputs
    count = out // rows
    firsts = [max(-(-(b * plan.rows + pad - extent + 1) // s), 0) for b in range(count)]  # the first output reaching block b
    lasts = [min(((b + 1) * plan.rows - 1 + pad) // s, out - 1) for b in range(count)]  # and the last
    lo = max(max(b * rows - f for b, f in enumerate(firsts)), 0)
    hi = max(max(last - (b + 1) * rows + 1 for b, last in enumerate(lasts)), 0)
    return _AxisPlan(rows, lo, hi, plan.drift)


def _reach_plan(geom: WindowGeometry, i: int, plan: _AxisPlan, outputs: _AxisPlan) -> _AxisPlan | None:
    """For an exact transpose with inputs (:func:`spilled`): the input rows that the windows of a
    block's ``outputs`` plan read, around the block's ``plan.rows`` (drifting windows: the most any
    block's read, each block slicing its own, :func:`_aligned`)."""
    s, count = geom.strides[i], (plan.drift and geom.out_shape[i] // outputs.rows) or 1
    before = outputs.lo * s + geom.pad_lo[i]  # rows before block 0 that its outputs' windows read
    span = (outputs.lo + outputs.rows + outputs.hi - 1) * s + geom.extent[i]
    lo = max(before + b * plan.drift for b in range(count))
    hi = max(span - before - b * plan.drift - plan.rows for b in range(count))
    if lo < 0 or -hi > plan.rows:
        return None
    if not plan.drift:
        return _AxisPlan(plan.rows, lo, hi)
    return _AxisPlan(plan.rows, lo, hi, plan.drift, span, lo - before, outputs.lo + outputs.rows + outputs.hi)


def _gathered(local: LocalMap, c, inputs, operands, input_fills, layout: Layout, geom: WindowGeometry, plans: dict, reach: dict):
    """The exact transpose on one shard: ``c`` and ``operands`` with the output rows before and
    after the block whose windows reach into it (zero past the ends), and ``inputs`` with the rows
    those windows read (padding past the ends: :func:`_at_edges`), transposed over their own
    windows, cropped to the block's input rows."""
    c = _exchange(c, layout, plans, 0)
    operands = [_exchange(o, layout, plans, 0) for o in operands]
    windows = geom
    for i, (_, plan) in plans.items():
        out = plan.lo + plan.rows + plan.hi
        in_shape = (out - 1) * geom.strides[i] + geom.extent[i]
        windows = windows.with_axis(i, in_shape=in_shape, pad_lo=0, pad_hi=0, out_shape=out)

    def run(xs, others, g, cuts):
        g = local(*others[:1], *xs, *others[1:], layout, g)
        for i, (shards, plan) in plans.items():
            axis, rows = layout.spatial_axes[i], geom.in_shape[i] // shards.count
            start = plan.lo * geom.strides[i] + geom.pad_lo[i] - cuts.get(i, (0, 0))[0]  # block 0's first row
            starts = [start + b * plan.drift for b in range(shards.count)]
            early, short = max(-min(starts), 0), max(starts) + rows - g.shape[axis]
            if early > 0 or short > 0:  # windows with gaps: a block's first or last rows are read by none
                g = jnp.pad(g, [(early, max(short, 0)) if a == axis else (0, 0) for a in range(g.ndim)])
                start += early
            if plan.drift:  # drifting windows: each block's rows start ``drift`` later than the last's
                g = lax.dynamic_slice_in_dim(g, start + shards.index() * plan.drift, rows, axis)
            else:
                g = lax.slice_in_dim(g, start, start + rows, axis=axis)
        return g

    if not inputs:
        return run([], [c, *operands], windows, {})
    xs = [_aligned(_exchange(u, layout, reach, f), layout, reach) for u, f in zip(inputs, input_fills)]
    return _at_edges(run, xs, [c, *operands], reach, layout, windows)


def _exchange(v, layout: Layout, plans: dict, fill):
    """Each shard's block with ``lo`` rows of the previous shard before it and ``hi`` of the next
    after it (``fill`` past the input's ends), axis by axis: later axes carry the earlier halos,
    so the corners arrive too."""
    for i, (shards, plan) in plans.items():
        axis = layout.spatial_axes[i]
        index, filled = shards.index(), jnp.asarray(fill, v.dtype)
        before, after = plan.received(shards.count)
        parts = [_fill_rows(v, axis, plan.lo - before, fill)]
        for d, count in _hops(before, plan.rows):  # the last rows of the shard d before
            rows = lax.slice_in_dim(v, plan.rows - count, plan.rows, axis=axis)
            parts.append(jnp.where(index < d, filled, shards.send(rows, d)))
        parts.append(v if plan.hi >= 0 else lax.slice_in_dim(v, 0, plan.rows + plan.hi, axis=axis))
        for d, count in reversed(_hops(after, plan.rows)):  # the first rows of the shard d after
            rows = lax.slice_in_dim(v, 0, count, axis=axis)
            parts.append(jnp.where(index >= shards.count - d, filled, shards.send(rows, -d)))
        parts.append(_fill_rows(v, axis, max(plan.hi, 0) - after, fill))
        parts = [p for p in parts if p.shape[axis]]
        v = jnp.concatenate(parts, axis=axis) if len(parts) > 1 else parts[0]
    return v


def _fill_rows(v, axis: int, count: int, fill):
    """``count`` rows shaped like ``v``'s, all ``fill``."""
    shape = list(v.shape)
    shape[axis] = count
    return jnp.full(shape, fill, v.dtype)


def _aligned(v, layout: Layout, plans: dict):
    """A block exchanged by :func:`_exchange` cut to the rows its drifting windows read (a dynamic
    slice from row ``first - block * drift``); axes whose windows do not drift pass unchanged."""
    for i, (shards, plan) in plans.items():
        if plan.span:
            v = lax.dynamic_slice_in_dim(v, plan.first - shards.index() * plan.drift, plan.span, layout.spatial_axes[i])
    return v


def _unaligned(g, layout: Layout, plans: dict):
    """The transpose of :func:`_aligned`: ``g`` placed at its rows of the exchanged block, zero
    elsewhere (a dynamic update of zeros)."""
    for i, (shards, plan) in reversed(list(plans.items())):
        if plan.span:
            axis = layout.spatial_axes[i]
            frame = list(g.shape)
            frame[axis] = plan.rows + plan.lo + plan.hi
            start = plan.first - shards.index() * plan.drift
            g = lax.dynamic_update_slice_in_dim(jnp.zeros(frame, g.dtype), g, start, axis)
    return g


def _fold(g, layout: Layout, plans: dict):
    """The transpose of :func:`_exchange`: the rows of ``g`` (a block with its halos) outside the
    block are sent to the shard they belong to and added there; past the input's ends, dropped."""
    for i, (shards, plan) in reversed(list(plans.items())):
        axis = layout.spatial_axes[i]
        if plan.hi < 0:
            g = jnp.pad(g, [(0, -plan.hi if a == axis else 0) for a in range(g.ndim)])
        block = lax.slice_in_dim(g, plan.lo, plan.lo + plan.rows, axis=axis)
        before, after = plan.received(shards.count)  # (the other rows: past the input's ends, dropped)
        start = plan.lo - before
        for d, count in _hops(before, plan.rows):  # rows before the block: the shard d before's last ones
            spill = lax.slice_in_dim(g, start, start + count, axis=axis)
            block = _add_rows(block, shards.send(spill, -d), axis, plan.rows - count)
            start += count
        start = plan.lo + plan.rows
        for d, count in reversed(_hops(after, plan.rows)):  # after it: the shard d after's first ones
            spill = lax.slice_in_dim(g, start, start + count, axis=axis)
            block = _add_rows(block, shards.send(spill, d), axis, 0)
            start += count
        g = block
    return g


def _add_rows(block, rows, axis: int, start: int):
    """``block`` plus ``rows`` placed from row ``start`` along ``axis``."""
    pad = [(0, 0)] * block.ndim
    pad[axis] = (start, block.shape[axis] - start - rows.shape[axis])
    return block + jnp.pad(rows, pad)
