"""Max and min pooling, with the max-index ("max id") derivative.

The lowering follows :mod:`jaxpool._lowering`: small windows fold their taps and keep, per output,
the offset of the winning element inside its window (one byte when the window has at most 256
elements); tiling windows (global pooling, SPP levels) reduce a reshaped array once; large
windows go axis by axis with a doubling scheme. The derivative routes each output's tangent — and,
transposed, its cotangent — to its winning element without any scatter: a ``jax.custom_jvp`` whose
tangent map selects the winner's tap (small and tiling windows, saving only the offsets for
reverse mode), or plain differentiation of selects (large windows). Forward mode (``jvp``,
``jacfwd``, ``hessian``) and reverse mode both work. This is the classic max-pooling gradient
(LeCun et al. 1998; Ranzato et al. 2007), with PyTorch's choice of element on ties (the first in
row-major window order) and NaN (a NaN wins and takes the gradient; with several, the last).

``backward="xla"`` computes the same forward with ``lax.reduce_window`` and leaves differentiation
to XLA (``select_and_scatter_add`` in reverse mode).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool import _blocks, _edges, _halo, _linear, _lowering, _rowmajor, _sliding, _symbolic, _taps
from jaxpool._fusion import apart, differentiated_once, materialize, results_once
from jaxpool._geometry import PaddingLike, WindowGeometry, check_bool, window_geometry, window_tuple
from jaxpool._layout import Layout, as_pool_input, layout_of

BACKWARDS = ("argmax", "xla")
# Kept for modules that fold small windows themselves (see jaxpool._lowering).
JOINT_FOLD_LIMIT = _lowering.JOINT_TAPS


def _fill_value(dtype, mode: str):
    """The identity of max/min in ``dtype``: -inf/+inf for floats, the integer limits otherwise."""
    if jnp.issubdtype(dtype, jnp.floating):
        return -np.inf if mode == "max" else np.inf
    info = jnp.iinfo(dtype)
    return info.min if mode == "max" else info.max


def takes_over(value, index, best, best_index, mode: str):
    """PyTorch's winner as a total order: the larger (smaller, for min) value, a NaN over any
    number, the earlier position among equal values and the later one among NaNs. Being a total
    order on (value, position), it gives the same winner whatever order the elements meet in."""
    strictly = value > best if mode == "max" else value < best
    take = strictly | ((value == best) & (index < best_index))
    if jnp.issubdtype(value.dtype, jnp.floating):
        new_nan, old_nan = jnp.isnan(value), jnp.isnan(best)
        take = jnp.where(new_nan, ~old_nan | (index > best_index), take & ~old_nan)
    return take


def _upcast16(x):
    """Folding 16-bit floats directly makes XLA:CPU insert converts that split the fold into one
    materialised array per tap; upcasting preserves order, ties and NaN exactly."""
    return x.astype(jnp.float32) if _lowering.is_narrow_float(x.dtype) else x


def _tiling_extremum(x, layout: Layout, geom: WindowGeometry, mode: str):
    """Tiling windows: a reshape that gives each window its own axes, then
    :func:`jaxpool._sliding.extremum_and_winner` (plain reductions)."""
    tiled, window_axes = _sliding.tile_shape(layout, geom, x.shape)
    iota = _sliding.window_offsets(layout, geom, len(tiled), window_axes, jnp.int32)
    y, offset = _sliding.extremum_and_winner(x.reshape(tiled), window_axes, iota, geom.window_size, mode)
    return y, offset.astype(_taps.offset_dtype(geom.window_size))


def _disjoint_route(tx, offset, layout: Layout, geom: WindowGeometry):
    """Tangent of windows that never overlap (:func:`jaxpool._lowering.routes_disjoint`: tiling
    ones, and any padding, ragged end or gap between windows): each window's winner, as one select
    and one sum over ``tx`` cut into windows — each axis padded or cropped to ``out`` blocks of its
    stride, split, and the first ``k`` of every block kept. Transposed, the backward pass writes
    the gradient in one loop (a broadcast, a select, a reshape and a pad), where the tap route's
    transpose is an interior pad per tap, each a fresh input-sized temporary: forward+backward in
    one process, max 3x3/3 pad 1 on (32, 56, 56, 64) (a chained pass per axis) 0.52x, 3x3/3 on 56
    0.48-0.62x, 3x3x3/3 pad 1 on (4, 16, 32, 32, 32) 0.42-0.44x, 1-D 4/4 pad 1 on (32, 4096, 64)
    0.77x."""
    cut = tx
    for i in reversed(range(geom.ndim)):  # last axis first: splitting it leaves earlier axes in place
        axis, n, k, out = layout.spatial_axes[i], geom.in_shape[i], geom.window[i], geom.out_shape[i]
        block = geom.strides[i] if out > 1 else k
        if (geom.pad_lo[i], out * block - n) != (0, 0):
            config = [(0, 0, 0)] * cut.ndim
            config[axis] = (geom.pad_lo[i], out * block - n - geom.pad_lo[i], 0)
            cut = lax.pad(cut, jnp.zeros((), cut.dtype), config)
        cut = _sliding.split_axis(cut, axis, out, block)
        if block > k:
            cut = lax.slice_in_dim(cut, 0, k, axis=axis + 1)
    tiled, window_axes = _sliding.tile_shape(layout, geom, tx.shape)
    offsets = _sliding.window_offsets(layout, geom, len(tiled), window_axes, offset.dtype)
    winner = jnp.expand_dims(offset, window_axes) == offsets
    return jnp.sum(jnp.where(winner, cut, jnp.zeros((), tx.dtype)), axis=window_axes)


def _taps_extremum(x, layout: Layout, geom: WindowGeometry, mode: str, select_values: bool = False):
    """Small windows: fused folds over all taps to (extremum, in-window offset).

    The extremum (:func:`jaxpool._taps.extremum_fold`, a fold of ``lax.max``) and the offset
    (:func:`jaxpool._taps.select_fold`) are two folds, the second over
    :func:`jaxpool._fusion.apart` of ``x``: XLA:CPU computes them in separate loops anyway, and from
    shared taps it would materialise every tap (forward+backward returning y and dx: 3x3/2 on (32,
    56, 56, 64) 19.5 -> 7.5 ms). A program that uses only one of them (inference: y; reverse
    mode's residual: the offset) drops the other. ``lax.max`` against the select fold's extremum,
    in one process (benchmarks/ab_commit.py): inference 3x3/2 pad 1 on (32, 56, 56, 64) 0.55x,
    5x5/2 pad 2 0.70x; forward+backward adaptive max 28 -> 11 on (16, 28, 28, 64) 0.76-0.78x, 13 ->
    5 0.84-0.89x, 3x3x3/2 pad 1 0.69-0.92x. With ``select_values`` (the parts of a padded
    ``"edges"`` window, :func:`jaxpool._lowering.parts_select_values`) the extremum is the select
    fold's."""
    dtype = _taps.offset_dtype(geom.window_size)
    fill = _fill_value(x.dtype, mode)

    def tap_values(x):
        if _lowering.fold_phases(geom):
            taps = _taps.Taps(x, layout, geom, fill=fill)
            return [taps(offs) for _, offs in _taps.window_taps(geom)]
        if _lowering.slices_unpadded(geom):
            return [_taps.unpadded_tap(x, layout, geom, offs, fill) for _, offs in _taps.window_taps(geom)]
        xp = _taps.pad_input(x, layout, geom, fill)
        return [_taps.tap(xp, layout, geom, offs) for _, offs in _taps.window_taps(geom)]

    if select_values:
        y = _taps.select_fold(_candidates(tap_values(x), layout, geom), mode, dtype)[0]
    else:  # taps of padding hold ``fill``: only taps outside a window's bins need a mask
        binned = (_taps.tap_inside(layout, geom, offs, padding_inside=True) for _, offs in _taps.window_taps(geom))
        y = _taps.extremum_fold(zip(tap_values(x), binned), mode, fill)
    candidates = _candidates(tap_values(apart(x)), layout, geom)
    if _lowering.matches_first(geom):
        nans = _candidates(tap_values(apart(apart(x))), layout, geom)
        y = materialize(y)  # read by the chains and returned: one array, no copy for the barrier
        return y, _taps.first_match(candidates, y, dtype, nans)
    return y, _taps.select_fold(candidates, mode, dtype)[1]


def _candidates(values, layout: Layout, geom: WindowGeometry):
    """``(tap value, inside mask, flat offset)`` in scan order, for :func:`jaxpool._taps.select_fold`."""
    return ((v, _taps.tap_inside(layout, geom, offs), flat) for v, (flat, offs) in zip(values, _taps.window_taps(geom)))


def _taps_route(tx, offset, layout: Layout, geom: WindowGeometry):
    """Tangent of a tap fold: the winner's tap, selected by the saved offset, from phase-view taps.
    Transposed (the backward pass), where :func:`jaxpool._lowering.spreads_route`, by
    :func:`jaxpool._taps.spread` (the cotangent and the offsets padded once into a frame, per-phase
    sums of their shifted slices, one interleave); otherwise JAX's own transpose of the taps
    (phase-interleaved shifted adds). No scatter either way."""
    if not _lowering.spreads_route(geom):
        return _tap_selects(tx, offset, layout, geom)
    shape = tx.shape
    return _linear.linear(
        lambda t, o: _tap_selects(t, o, layout, geom), lambda ct, o: _taps.spread(ct, layout, geom, shape, o), tx, offset
    )


def _tap_selects(tx, offset, layout: Layout, geom: WindowGeometry):
    """:func:`_taps_route`'s value: the sum over taps of each tap where it is the window's offset."""
    taps = _taps.Taps(tx, layout, geom, sliced=True)
    zero = jnp.zeros((), tx.dtype)
    return sum(jnp.where(offset == flat, taps(offs), zero) for flat, offs in _taps.window_taps(geom))


def _flat_positions(layout: Layout, geom: WindowGeometry):
    """int32 flat index over the unpadded spatial volume (PyTorch's), shaped to broadcast."""
    flat = jnp.zeros((1,) * layout.ndim, jnp.int32)
    for i, n in enumerate(geom.in_shape):
        flat = flat * n + layout.along(np.arange(n, dtype=np.int32), i)
    return flat


def _positions(layout: Layout, geom: WindowGeometry):
    """:func:`_flat_positions` padded with int32 max (never wins ties)."""
    return _taps.pad_input(_flat_positions(layout, geom), layout, geom, np.iinfo(np.int32).max)


def _separable_extremum(x, layout: Layout, geom: WindowGeometry, mode: str, positions: bool | jax.Array):
    """Large windows, one axis at a time (:func:`jaxpool._sliding.along_axis`), differentiated by
    JAX itself (selects only: forward and reverse mode, no scatter). The combined blocks are
    disjoint and ordered, so PyTorch's rule is "the later block wins if strictly better or NaN" —
    and, where the input is padded, if equal to an earlier block of padding alone, so that a real
    -inf never loses to the padding's: per axis a flag of the padding rows (their extent only, a
    constant) rides with the values, and a block is padding alone where both halves are. Before,
    a flat int32 position per element rode through every level: its temporaries crossed glibc's
    32 MiB mmap ceiling (33.7 MiB, now 20.6), forward+backward of 9x9/1 pad 4 on (8, 32, 32, 64)
    24.7 -> 9.0 ms in one process (benchmarks/ab_commit.py). With ``positions`` each candidate
    carries its flat input position instead (int32 max in the padding), for indices: made here, or
    given as an array shaped like ``x`` (a shard's block of the whole input's, :func:`_positioned_pool`)."""
    given, positions = (None, positions) if isinstance(positions, bool) else (positions, True)
    padded = not positions and geom.needs_mask()

    def combine(a, b):
        take = _taps.improves(b[0], a[0], mode)
        if positions:
            take = take | ((b[0] == a[0]) & (a[1] == np.iinfo(np.int32).max))
        if padded:
            take = take | ((b[0] == a[0]) & a[1])
            return jnp.where(take, b[0], a[0]), a[1] & b[1]
        return tuple(jnp.where(take, new, old) for new, old in zip(b, a))

    fills: tuple = (_fill_value(x.dtype, mode),)
    values: tuple = (_taps.pad_input(x, layout, geom, fills[0]),)
    if positions:  # the input's flat positions, made or given (a shard's block of them)
        fills += (np.iinfo(np.int32).max,)
        values += (_positions(layout, geom) if given is None else _taps.pad_input(given, layout, geom, fills[1]),)
    for i in reversed(range(geom.ndim)):
        if padded:
            values = _sliding.along_axis(
                (values[0], _padding_rows(layout, geom, i)), combine, layout, geom, i, fills=fills + (True,), idempotent=True
            )[:1]
        else:
            values = _sliding.along_axis(values, combine, layout, geom, i, fills=fills, idempotent=True)
    return values if positions else (values[0], None)


def _padding_rows(layout: Layout, geom: WindowGeometry, i: int):
    """True at the padding rows of spatial axis ``i`` of :func:`jaxpool._taps.pad_input`'s result, shaped to broadcast."""
    inside = np.zeros(geom.pad_lo[i] + geom.in_shape[i] + geom.pad_hi[i] + geom.overhang[i], bool)
    inside[geom.pad_lo[i] : geom.pad_lo[i] + geom.in_shape[i]] = True
    return jnp.asarray(layout.along(~inside, i))


def _local_pool(x, layout: Layout, geom: WindowGeometry, mode: str, scheme: str):
    """:func:`_pool`'s value on one device (or one shard's block): the doubling scheme
    (:func:`_separable_extremum`) or the ``"runs"`` chain (:func:`_chain_plan`'s passes, each
    :func:`_local_routed`)."""
    if scheme == "doubling":
        return _separable_extremum(x, layout, geom, mode, positions=False)[0]
    for g in _plan_geometries(_chain_plan(geom), layout.spatial_shape(x.shape)):
        x = materialize(_local_routed(x, layout, g, mode)[0])
    return x


def _pool_tangent(tx, x, layout: Layout, geom: WindowGeometry, mode: str, scheme: str):
    """The tangent of :func:`_local_pool` at ``x``: linear in ``tx``, selected as ``x``'s extrema
    are (JAX's derivative of the doubling scheme's selects; each pass's winners routed)."""
    if scheme == "doubling":
        return jax.jvp(lambda v: _local_pool(v, layout, geom, mode, scheme), (x,), (tx,))[1]
    for g in _plan_geometries(_chain_plan(geom), layout.spatial_shape(x.shape)):
        x, offset = _local_routed(x, layout, g, mode)
        # each pass's winners and tangent computed once: fused, XLA:CPU recomputes the fold per tap
        x, offset = materialize(x), materialize(offset)
        tx = materialize(_local_route(tx, offset, layout, g))
    return tx


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3, 4))
def _pool(x, layout: Layout, geom: WindowGeometry, mode: str, scheme: str):
    """:func:`_local_pool` partitioned on spatially sharded inputs as one map (one halo exchange per
    direction, the shards at the ends padding as the unsharded map does), its derivative a
    :func:`jaxpool._linear.linear` pair of :func:`_pool_tangent` and its exact transpose, each
    exchanging halos of the input with the tangent's or cotangent's (:mod:`jaxpool._halo`): the
    values and gradients of the unsharded run, bit for bit. Reverse mode keeps the input (the pair's
    operand, as the checkpointed form did) and recomputes the selections from it. For schemes whose
    passes cannot each be partitioned (``"runs"``: the runs outnumber the input's rows) or that
    keep no offsets (``"doubling"``); with indices, :func:`_positioned_pool`."""
    local = functools.partial(_local_pool, mode=mode, scheme=scheme)
    return _halo.windowed(local, x, layout, geom, _fill_value(x.dtype, mode), exact_edges=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _positioned_pool(x, layout: Layout, geom: WindowGeometry, mode: str):
    """(extremum, the winner's flat input position) of large windows (the doubling scheme carrying
    positions, :func:`_separable_extremum`) as one map partitioned on spatially sharded inputs: the
    positions are an input of their own, exchanged with ``x``'s halos, so that each shard's winners
    carry the positions of the whole input. The derivative is :func:`_pool`'s (the same winners)."""
    flat = jnp.broadcast_to(_flat_positions(layout, geom), x.shape)

    def local(v, p, layout, g):
        return _separable_extremum(v, layout, g, mode, positions=p)

    top = np.iinfo(np.int32).max
    return tuple(_halo.windowed(local, x, layout, geom, _fill_value(x.dtype, mode), exact_edges=True, inputs=((flat, top),)))


@_positioned_pool.defjvp
def _positioned_pool_jvp(layout, geom, mode, primals, tangents):
    (x,), (tx,) = primals, tangents
    y, where = _positioned_pool(x, layout, geom, mode)
    ty = _selected_tangent(tx, x, layout, geom, mode, "doubling")
    return (y, where), (ty, jnp.zeros(where.shape, jax.dtypes.float0))


def _selected_tangent(tx, x, layout: Layout, geom: WindowGeometry, mode: str, scheme: str):
    """:func:`_pool_tangent` and its exact transpose as a :func:`jaxpool._linear.linear` pair, each
    exchanging halos of ``x`` with the tangent's or cotangent's: :func:`_pool`'s derivative."""
    tangent, fill = functools.partial(_pool_tangent, mode=mode, scheme=scheme), _fill_value(x.dtype, mode)
    return _linear.linear(
        lambda t, v: _halo.windowed(tangent, t, layout, geom, inputs=((v, fill),), exact_edges=True),
        lambda ct, v: _halo.spilled(_halo.transposed(tangent), ct, layout, geom, inputs=((v, fill),), exact=True),
        tx,
        x,
    )


@_pool.defjvp
def _pool_jvp(layout, geom, mode, scheme, primals, tangents):
    (x,), (tx,) = primals, tangents
    return _pool(x, layout, geom, mode, scheme), _selected_tangent(tx, x, layout, geom, mode, scheme)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _routed_pool(x, layout: Layout, geom: WindowGeometry, mode: str):
    """(extremum, in-window offset of the winner) with the max-index derivative: the tangent (and,
    transposed, the cotangent) of each output is its winner's. Reverse mode saves only the offsets
    (one byte per output for windows of up to 256 elements). On a spatially sharded ``x``, one halo
    exchange per direction of each sharded axis (:func:`jaxpool._halo.windowed`; the shards at the
    input's ends pad as the unsharded map does, so padding never takes a real element's place)."""
    if _partitioned(geom):
        fill = _fill_value(x.dtype, mode)
        local = functools.partial(_local_routed, mode=mode)
        return _halo.windowed(local, x, layout, geom, fill, exact_edges=True)
    return _local_routed(x, layout, geom, mode)


def _partitioned(geom: WindowGeometry, drifting: bool = True) -> bool:
    """Whether :func:`_routed_pool` and :func:`route_offsets` exchange their own halos on sharded
    inputs (:mod:`jaxpool._halo`); tiling windows need none, and XLA partitions them locally.
    Without ``drifting``: only where blocks of whole strides own their outputs, the condition for
    :func:`extremum` to run a chain or the doubling scheme as one map (:func:`_pool`, whose
    one-device program differs from the per-pass chain's)."""
    return _halo.splits(geom, drifting) and _lowering.choose(geom) != "tiling"


def _local_routed(x, layout: Layout, geom: WindowGeometry, mode: str):
    """:func:`_routed_pool`'s value on one device (or one shard's block)."""
    kind = _lowering.choose(geom)
    if kind == "blocks":
        return _blocks.extremum(x, layout, geom, mode, _fill_value(x.dtype, mode))
    if kind == "edges":
        select_values = _lowering.parts_select_values(geom)
        return _edges.by_parts(functools.partial(_part_extremum, mode=mode, select_values=select_values), x, layout, geom)
    fold = _tiling_extremum if kind == "tiling" else _taps_extremum
    return fold(x, layout, geom, mode)


def _part_extremum(x, layout: Layout, geom: WindowGeometry, mode: str, select_values: bool):
    """One :func:`jaxpool._edges.by_parts` part of an ``"edges"`` window: (extremum, offset). Parts
    tile or fold taps, so their offsets are the whole window's: the parts' offsets concatenated
    are the full geometry's, which :func:`route_offsets` routes in one pass."""
    if _lowering.choose(geom) in ("chained", "taps"):  # a chain keeps no joint offset: fold all taps
        return _taps_extremum(x, layout, geom, mode, select_values=select_values)
    return _local_routed(x, layout, geom, mode)


@_routed_pool.defjvp
def _routed_pool_jvp(layout, geom, mode, primals, tangents):
    (x,), (tx,) = primals, tangents
    y, offset = _routed_pool(x, layout, geom, mode)
    offset = materialize(offset)
    return (y, offset), (route_offsets(tx, offset, layout, geom), jnp.zeros(offset.shape, jax.dtypes.float0))


def route_offsets(tx, offset, layout: Layout, geom: WindowGeometry):
    """The tangent of each output is that of the element at its window ``offset`` (0 where the
    offset is ``window_size``, i.e. none). Linear in ``tx``; JAX transposes it into the backward pass.
    checkpoint: the linearized program keeps only ``offset`` and recomputes the selects from it.
    Callers pass ``offset`` through :func:`jaxpool._fusion.materialize` — XLA:CPU would otherwise fuse
    (recompute) the forward fold into every select — and return that held offset as their primal
    output too: a barrier's operand read elsewhere is copied first.
    On a spatially sharded ``tx``, a :func:`jaxpool._linear.linear` pair of :func:`_local_route`
    and its transpose, each exchanging one halo per direction (:mod:`jaxpool._halo`)."""
    if not _partitioned(geom):
        return jax.checkpoint(lambda t, o: _local_route(t, o, layout, geom))(tx, offset)
    return _linear.linear(
        lambda t, o: _halo.windowed(_local_route, t, layout, geom, operands=(o,)),
        lambda ct, o: _halo.spilled(_halo.transposed(_local_route), ct, layout, geom, operands=(o,), exact=True),
        tx,
        offset,
    )


def _local_route(tx, offset, layout: Layout, geom: WindowGeometry):
    """:func:`route_offsets` on one device (or one shard's block, whose windows have the same offsets)."""
    route = _blocks.route if _lowering.routes_blocks(geom) else _taps_route
    if _lowering.routes_disjoint(geom):
        route = _disjoint_route
    return jnp.asarray(route(tx, offset, layout, geom), tx.dtype)


def _chained_extremum(x, layout: Layout, geom: WindowGeometry, mode: str):
    """One :func:`_routed_pool` per axis (:mod:`jaxpool._lowering`, ``"chained"``), in
    :func:`jaxpool._lowering.pass_order`.

    Exact: the first maximum of a window in row-major order is, along the first axis, the first
    maximum of the rows' first maxima (the last NaN likewise; passes in another order rank their
    candidates, :mod:`jaxpool._rowmajor`), and each pass pads only its own axis, so padding never
    beats a real element. Each pass saves its own offsets and routes its own derivative; JAX
    chains them in both modes. A pass whose taps, times those of the passes before it since the
    last barrier, exceed :data:`jaxpool._lowering.FUSED_PASS_TAPS` first computes its input once
    with its derivatives (:func:`jaxpool._fusion.materialize`): fused, each of its backward taps
    would recompute all of the earlier passes' (5x5/1: 25 taps per element, not 10). Other passes
    after a pass do so only under differentiation (:func:`jaxpool._fusion.differentiated_once`):
    inference fuses them. Two inner axes that fold stride-2 phase views together
    (:func:`jaxpool._lowering.joint_inner_pass`) are one pass, the first."""
    return chain_passes(x, layout, _chain_plan(geom), mode)


def _chain_plan(geom: WindowGeometry) -> list:
    """:func:`_chained_extremum`'s passes, ``(axis, geometry of the current spatial shape)`` pairs;
    an axis of :func:`jaxpool._lowering.run_blocks` is two (runs, then blocks of runs)."""
    inner = _lowering.joint_inner_pass(geom)
    if inner:
        passes = [(inner[0], lambda shape: geom.axes_only(inner, shape))]
        order = [i for i in reversed(range(geom.ndim)) if i not in inner]
    else:
        passes, order = [], _lowering.pass_order({i: geom.axis_only(i, geom.in_shape) for i in range(geom.ndim)})
    runs = {i: _lowering.run_blocks(geom, i) for i in order}
    if any(m > 1 for m in runs.values()):
        order = sorted(order, reverse=True)  # last axis first: two passes along one axis rank nothing
    for i in order:
        if runs[i] > 1:
            passes += [(i, lambda shape, i=i: geom.block_passes(i, runs[i], shape)[0])]
            passes += [(i, lambda shape, i=i: geom.block_passes(i, runs[i], _before(shape, geom, i))[1])]
        else:
            passes += [(i, lambda shape, i=i: geom.axis_only(i, shape))]
    return passes


def _plan_geometries(passes, shape) -> list:
    """The geometries of ``passes`` (:func:`_chain_plan`) from the spatial ``shape`` on."""
    geoms = []
    for _, make in passes:
        geoms.append(make(shape))
        shape = geoms[-1].out_shape
    return geoms


def _before(shape, geom: WindowGeometry, i: int) -> tuple[int, ...]:
    """``shape`` (after the first pass of :meth:`WindowGeometry.block_passes` along ``i``) with axis
    ``i`` back to the input's length."""
    return tuple(geom.in_shape[i] if j == i else n for j, n in enumerate(shape))


def chain_passes(x, layout: Layout, passes, mode: str):
    """Runs single-axis routed passes in order: ``passes`` are ``(axis, geometry of the current
    spatial shape)`` pairs. The barrier rule of :func:`_chained_extremum`. Passes over an axis after
    an inner one rank their candidates (:func:`_ranked_pass`) to keep PyTorch's row-major winner."""
    geoms = list(zip((i for i, _ in passes), _plan_geometries(passes, layout.spatial_shape(x.shape))))
    ranked = any(a < b for (a, _), (b, _) in zip(geoms, geoms[1:]))
    windows = {i: g.window[i] for i, g in geoms}
    total = math.prod(windows.values())
    fused, rank, scale = 1, None, 1
    for i, g in geoms:
        if not g.pooled_axes:
            continue
        taps = _lowering.route_taps(g)
        if _lowering.keeps_apart(fused, taps):
            x, fused = materialize(x), 1
        elif fused > 1 and jnp.issubdtype(x.dtype, jnp.inexact):  # fused only where nothing differentiates
            x = differentiated_once(x)
        stride = math.prod(w for j, w in windows.items() if j > i)  # of this axis in a row-major rank
        if not ranked or jnp.issubdtype(x.dtype, jnp.integer):
            x = _routed(x, layout, g, mode)[0]
        elif rank is None:
            x, rank = _routed(x, layout, g, mode)  # the offset: a rank in units of ``stride``
            scale = stride
        else:
            x, _, rank = _ranked_pass(x, rank, layout, g, mode, total, stride, scale)
            scale = 1
        fused *= taps
    return x


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _ranked_pass(x, rank, layout: Layout, geom: WindowGeometry, mode: str, total: int, stride: int, scale: int):
    """A pass after one over an inner axis: ``(extremum, in-window offset, winner's row-major
    rank)`` (:func:`jaxpool._rowmajor.winner`; ``rank * scale``: each element's), with the
    max-index derivative of its offsets."""
    y = _routed_pool.fun(x, layout, geom, mode)[0]
    offset, rank = _rowmajor.winner(apart(x), rank, scale, total, stride, layout, geom, mode, _fill_value(x.dtype, mode))
    return y, offset, rank


@_ranked_pass.defjvp
def _ranked_pass_jvp(layout: Layout, geom: WindowGeometry, mode: str, total: int, stride: int, scale: int, primals, tangents):
    (x, rank), (tx, _) = primals, tangents
    y, offset, rank = _ranked_pass(x, rank, layout, geom, mode, total, stride, scale)
    offset = materialize(offset)
    zeros = (jnp.zeros(offset.shape, jax.dtypes.float0), jnp.zeros(rank.shape, jax.dtypes.float0))
    return (y, offset, rank), (route_offsets(tx, offset, layout, geom), *zeros)


def _routed(x, layout: Layout, geom: WindowGeometry, mode: str):
    """:func:`_routed_pool`; integers have no derivative, so they skip its custom rule."""
    fold = _routed_pool.fun if jnp.issubdtype(x.dtype, jnp.integer) else _routed_pool
    return fold(x, layout, geom, mode)


def extremum(x, layout: Layout, geom: WindowGeometry, mode: str, *, indices: bool = True):
    """``(y, winner)``: the pooled extremum and either the winner's in-window offset (``"offset"``)
    or its flat input position (``"position"``; ``None`` unless ``indices``, when cheaper), per
    :func:`jaxpool._lowering.choose`."""
    kind = _lowering.choose(geom, indices=indices)
    acc = _upcast16(x)
    if _lowering.upcasts_apart(geom, x.dtype, kind):
        acc = materialize(acc)
    scheme = "runs" if kind == "chained" and _lowering.splits_runs(geom) else "doubling"
    one_map = _partitioned(geom, drifting=False)
    if kind == "chained" and not (scheme == "runs" and one_map):
        return _chained_extremum(acc, layout, geom, mode).astype(x.dtype), (None, "offset")
    if (kind == "separable" and not indices or kind == "chained") and one_map:
        pool = _pool.fun if jnp.issubdtype(acc.dtype, jnp.integer) else _pool
        return pool(acc, layout, geom, mode, scheme).astype(x.dtype), (None, "position")
    if kind == "separable" and indices:
        pool = _positioned_pool.fun if jnp.issubdtype(acc.dtype, jnp.integer) else _positioned_pool
        y, where = pool(acc, layout, geom, mode)
        return y.astype(x.dtype), (where, "position")
    if kind == "separable":
        # checkpoint: reverse mode keeps the input (as flax.linen's reduce_window does) and recomputes
        # the log2(k) selection masks, instead of keeping every mask.
        separable = functools.partial(_separable_extremum, layout=layout, geom=geom, mode=mode, positions=False)
        y, where = jax.checkpoint(separable)(acc)
        return y.astype(x.dtype), (where, "position")
    y, offset = _routed(acc, layout, geom, mode)
    return y.astype(x.dtype), (offset, "offset")


def _xla_pool(x, layout: Layout, geom: WindowGeometry, mode: str):
    """``lax.reduce_window`` max/min, differentiated by XLA itself."""
    padding = layout.full(tuple(zip(geom.pad_lo, (h + v for h, v in zip(geom.pad_hi, geom.overhang)))), (0, 0))
    return lax.reduce_window(
        x,
        np.array(_fill_value(x.dtype, mode), x.dtype),
        lax.max if mode == "max" else lax.min,
        layout.full(geom.window, 1),
        layout.full(geom.strides, 1),
        padding,
        window_dilation=layout.full(geom.dilation, 1),
    )


def flat_indices(winner, layout: Layout, geom: WindowGeometry):
    """int32 indices over the unpadded spatial volume (PyTorch's) from :func:`extremum`'s winner;
    -1 for a window with no input element (all padding: it has no argmax, and max_unpool drops it)."""
    where, kind = winner
    if kind == "position":
        flat = where
    else:
        offset = where.astype(jnp.int32)
        flat = jnp.zeros((), jnp.int32)
        for i in range(geom.ndim):
            inner = math.prod(geom.window[i + 1 :])
            t = (offset // inner) % geom.window[i]
            start = layout.along(np.arange(geom.out_shape[i], dtype=np.int32) * geom.strides[i] - geom.pad_lo[i], i)
            flat = flat * geom.in_shape[i] + start + t * geom.dilation[i]
    empty = np.zeros((1,) * layout.ndim, bool)
    for i in range(geom.ndim):
        empty = empty | layout.along(np.asarray(~geom.tap_inside(i).any(axis=1)), i)
    return jnp.where(empty, -1, flat) if empty.any() else flat


def tap_offsets(flat, layout: Layout, geom: WindowGeometry):
    """The inverse of :func:`flat_indices`: each output's flat index as its in-window offset
    (:func:`route_offsets`' form) and whether it names a tap of that output's window. NumPy in,
    NumPy out (a concrete check); otherwise int32 JAX arrays."""
    xp = np if isinstance(flat, np.ndarray) else jnp
    flat = flat.astype(np.int64 if xp is np else jnp.int32)
    offset, inside = xp.zeros((), flat.dtype), (flat >= 0) & (flat < math.prod(geom.in_shape))
    for i in range(geom.ndim):
        row = flat // math.prod(geom.in_shape[i + 1 :]) % geom.in_shape[i]
        start = layout.along(np.arange(geom.out_shape[i]) * geom.strides[i] - geom.pad_lo[i], i)
        t, between = xp.divmod(row - start, geom.dilation[i])
        inside = inside & (t >= 0) & (t < geom.window[i]) & (between == 0)
        offset = offset * geom.window[i] + t
    return offset, inside


def _extremum_pool(x, window_shape, strides, padding, dilation, ceil_mode, data_format, backward, mode, indices=False) -> Any:
    x = as_pool_input(x)
    window = window_tuple(window_shape)
    layout = layout_of(x, len(window), data_format)
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    if _symbolic.is_symbolic(layout.spatial_shape(x.shape)):
        if indices:
            raise _symbolic.unsupported("max_pool(return_indices=True)")
        computation = lax.max if mode == "max" else lax.min
        init = _fill_value(x.dtype, mode)
        y = _symbolic.window_reduce(
            x, layout, window, strides, padding, dilation, ceil_mode, op=f"{mode}_pool", init=init, computation=computation
        )
        return y, None, layout, None
    geom = window_geometry(layout.spatial_shape(x.shape), window, strides, padding, dilation, ceil_mode)
    if backward == "xla":
        y = _xla_pool(x, layout, geom, mode)
        winner = extremum(lax.stop_gradient(x), layout, geom, mode)[1] if indices else None
        return y, winner, layout, geom
    y, winner = extremum(x, layout, geom, mode, indices=indices)
    return y, winner, layout, geom


@overload
def max_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    dilation: int | Sequence[int] | None = None,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
    data_format: str = "channels_last",
    backward: str = "argmax",
) -> jax.Array: ...


@overload
def max_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    dilation: int | Sequence[int] | None = None,
    ceil_mode: bool = False,
    return_indices: Literal[True],
    data_format: str = "channels_last",
    backward: str = "argmax",
) -> tuple[jax.Array, jax.Array]: ...


@overload
def max_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    dilation: int | Sequence[int] | None = None,
    ceil_mode: bool = False,
    return_indices: bool = False,
    data_format: str = "channels_last",
    backward: str = "argmax",
) -> jax.Array | tuple[jax.Array, jax.Array]: ...


@results_once
def max_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    dilation: int | Sequence[int] | None = None,
    ceil_mode: bool = False,
    return_indices: bool = False,
    data_format: str = "channels_last",
    backward: str = "argmax",
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Max pooling over N spatial dimensions (N = ``len(window_shape)``), PyTorch's semantics.

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first);
        ``*batch`` may be empty. Float or integer dtype.
      window_shape: N window sizes.
      strides: N strides; ``None`` means equal to ``window_shape`` (PyTorch/Keras; Flax means 1).
      padding: ``"VALID"``, ``"SAME"``, an int, N ints (symmetric, PyTorch) or N ``(low, high)``
        pairs (Flax). Padding never wins: it is ``-inf`` (or the integer minimum) and masked.
      dilation: N spacings between window elements (default 1).
      ceil_mode: round output sizes up; the last window must start inside the input or left padding.
      return_indices: also return int32 indices of the maxima, flattened over the unpadded spatial
        volume per (batch, channel) — PyTorch's, usable by :func:`jaxpool.max_unpool`. A dilated
        window that holds padding only (``-inf``) has index -1, which ``max_unpool`` drops; PyTorch
        returns an index past that window's first tap there, possibly outside the input.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      backward: ``"argmax"`` (default): the max-index derivative, which routes each tangent and
        cotangent to the first maximum (a NaN if present) without scatter, saving one small integer
        per output; every transformation (``grad``, ``jvp``, ``jacfwd``, ``hessian``, ``vmap``). ``"xla"``:
        ``lax.reduce_window`` differentiated by XLA (``select_and_scatter_add``; supports ``jvp``,
        but JAX has no reverse-mode rule when ``dilation > 1``; XLA's own tie and NaN choices).

    Returns:
      ``y`` of shape ``(*batch, *out, C)`` (or channels_first), and with ``return_indices`` the
      int32 indices of the same shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # (batch, H, W, C), channels_last
      >>> jaxpool.max_pool(x, (2, 2))[0, ..., 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)
      >>> y, idx = jaxpool.max_pool(x, (2, 2), return_indices=True)
      >>> idx[0, ..., 0]  # flat positions in the unpadded 4x4 map, as PyTorch's
      Array([[ 5,  7],
             [13, 15]], dtype=int32)
      >>> jaxpool.max_pool(x, (3, 3), strides=2, padding=1).shape
      (1, 2, 2, 1)
      >>> jaxpool.max_pool(x.reshape(1, 1, 4, 4), (2, 2), data_format="channels_first").shape
      (1, 1, 2, 2)
    """
    check_bool(return_indices, "return_indices")
    y, offset, layout, geom = _extremum_pool(
        x, window_shape, strides, padding, dilation, ceil_mode, data_format, backward, "max", return_indices
    )
    return (y, flat_indices(offset, layout, geom)) if return_indices else y


@results_once
def min_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    dilation: int | Sequence[int] | None = None,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
    backward: str = "argmax",
) -> jax.Array:
    """Min pooling: :func:`max_pool` with the minimum (ties to the first minimum, NaN wins).

    Exact for integers (padding is the dtype's maximum, never negated), unlike ``-max_pool(-x)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # (batch, H, W, C), channels_last
      >>> jaxpool.min_pool(x, (2, 2))[0, ..., 0]
      Array([[ 0.,  2.],
             [ 8., 10.]], dtype=float32)
    """
    return _extremum_pool(x, window_shape, strides, padding, dilation, ceil_mode, data_format, backward, "min")[0]
