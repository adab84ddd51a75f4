"""Spatially sharded windowed maps: one halo exchange per direction of each sharded axis.

XLA's SPMD partitioner gives every shifted tap of a window fold (a slice or pad along a sharded
axis) a halo exchange of its own, where ``lax.reduce_window`` exchanges once; on XLA:CPU the fold
is the faster program, and every formulation that shares its shifts runs 1.2-3x slower on one
device (benchmarks/RESULTS_breadth.md, "Halo exchanges"). :func:`windowed` and :func:`spilled`
wrap a windowed map and its transpose in ``jax.experimental.custom_partitioning``: on one device
they are the plain program (JAX inlines it), and on a mesh each shard receives its window's
overlap from its neighbours once (a ``ppermute`` per direction, the fill value past the input's
ends), runs the same map over its own block, and — for the transpose — sends back what spills over
its edges, added by the neighbour. Values equal the unsharded map's (sums within reassociation).

An axis is exchanged this way when it splits into equal blocks of whole strides and every shard
owns the outputs of its block (``out == input / stride``, the windows reaching at most one
neighbour); otherwise (ragged sizes, ``ceil_mode`` overhang past a block) that axis is gathered.
Transformations: ``custom_partitioning`` has no differentiation or batching rules, so these maps
are only called inside :func:`jaxpool._linear.linear` (which differentiates and transposes them as
a pair) and are vectorised by moving the mapped axis into the batch axes (``custom_vmap``).
``jax.export`` serialises no partitioning callback: programs lowered for export (:func:`plain`)
take the plain map, which XLA partitions itself when the exported program runs on a mesh.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
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


def windowed(local: LocalMap, x, layout: Layout, geom: WindowGeometry, fill=0):
    """``local(x, layout, geom)`` — a map whose output ``o`` along each spatial axis reads the
    input rows of window ``o`` (padding ``fill``) — partitioned with one halo exchange per
    direction of each sharded spatial axis. Example: ``windowed(window_sum, x, layout, geom)``."""
    return _partitioned(local, x, layout, geom, fill, forward=True)


def spilled(local: LocalMap, ct, layout: Layout, geom: WindowGeometry):
    """``local(ct, layout, geom)`` — the transpose of a :func:`windowed` map, from the output's
    cotangent ``ct`` to the input's — partitioned: each shard transposes its block over the
    window's reach and sends what falls outside it to the neighbour that owns it."""
    return _partitioned(local, ct, layout, geom, 0, forward=False)


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


def _partitioned(local: LocalMap, a, layout: Layout, geom: WindowGeometry, fill, forward: bool):
    if _PLAIN.get():
        return local(a, layout, geom)

    @custom_vmap
    def mapped(v):
        return _custom_partitioned(local, v, layout, geom, fill, forward)

    @mapped.def_vmap
    def _vmapped(axis_size, in_batched, v):  # the mapped axis (moved first) joins the batch axes
        wider = Layout(layout.ndim + 1, layout.n_spatial, layout.channels_first)
        return _partitioned(local, v, wider, geom, fill, forward), True

    return mapped(a)


def _custom_partitioned(local: LocalMap, a, layout: Layout, geom: WindowGeometry, fill, forward: bool):
    @custom_partitioning
    def call(v):
        return local(v, layout, geom)

    def partition(mesh, arg_shapes, result_shape):
        spec = _spec(arg_shapes[0].sharding, layout.ndim)
        plans = {}
        for i, axis in enumerate(layout.spatial_axes):
            if spec[axis] is not None:
                shards = _Shards(mesh, spec[axis] if isinstance(spec[axis], tuple) else (spec[axis],))
                plan = _plan(geom, i, shards.count)
                if plan is None:
                    spec[axis] = None
                else:
                    plans[i] = shards, plan
        sharding = NamedSharding(mesh, PartitionSpec(*spec))
        block = _block_geometry(geom, {i: plan for i, (_, plan) in plans.items()})
        if forward:
            return mesh, lambda v: local(_exchange(v, layout, plans, fill), layout, block), sharding, (sharding,)
        return mesh, lambda c: _fold(local(c, layout, block), layout, plans), sharding, (sharding,)

    factors = " ".join(f"d{n}" for n in range(layout.ndim))
    call.def_partition(partition, sharding_rule=f"{factors} -> {factors}")
    return call(a)


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
    fields = {k: list(getattr(geom, k)) for k in ("in_shape", "pad_lo", "pad_hi", "out_shape")}
    for i, plan in plans.items():
        fields["in_shape"][i] = plan.rows + plan.lo + plan.hi
        fields["pad_lo"][i] = fields["pad_hi"][i] = 0
        fields["out_shape"][i] = plan.rows // geom.strides[i]
    return dataclasses.replace(geom, **{k: tuple(v) for k, v in fields.items()})


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
