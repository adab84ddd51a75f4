"""The one place that chooses how each windowed reduction is lowered to XLA, from its geometry alone.

Every max/min/sum pooling (and everything built on them: avg, lp, GeM, adaptive, global, SPP,
stochastic inference) goes through :func:`choose`. The rule keeps trace time, compile time and HLO
size independent of the window size — a 512x512 global max compiles as fast as a 2x2 pool:

``"tiling"``
    stride == window, no dilation, no padding or ``ceil_mode`` overhang (global pooling, SPP
    levels, evenly dividing adaptive bins, ``2x2/2`` on even sizes): a reshape that gives every
    window its own axes and plain reductions (sums: one; max/min: the extremum and a winner score
    that encodes PyTorch's first argmax). The backward pass is one broadcast and select. O(1) HLO ops.
    Sums over few channels (channels-last, under 64 bytes) merge part of the last window axis into
    the channels, so that the reduction reads whole vectors (:func:`jaxpool._sliding.packed_sum`,
    also ``global_avg_pool``'s): global mean forward+backward of (1, 100000, 4) 0.48x, (1, 512, 512,
    4) 0.46x.
``"taps"``
    small windows (max/min: at most :data:`JOINT_TAPS` elements; sums: :data:`JOINT_SUM_TAPS`, or
    :data:`JOINT_STRIDED_SUM_TAPS` when every axis is strided and a multiple of its stride): one
    fused elementwise fold over the window's taps, the fastest form on every backend for small
    windows; max/min keep one byte per output (the winner's offset) for the backward pass. Strided
    sums are transposed in a form that pads the cotangent once (:func:`jaxpool._taps.tap_sum`);
    those of more than :data:`JOINT_SUM_TAPS` taps sum axis by axis in inference
    (:func:`sums_by_passes`) and, over two axes, in training too (:func:`differentiates_by_passes`).
``"separable"``
    larger windows (max/min: with indices, or an axis that ``"chained"`` passes cannot take —
    dilated and longer than :data:`CHAINED_TAPS`, or undilated and longer than 256 —; chained
    passes differentiate several times faster): one
    axis at a time; along each axis a fold over at most :data:`AXIS_TAPS` taps,
    or for longer axes a doubling (sparse-table) scheme — ``log2(k)`` elementwise passes for a
    window of ``k``, whatever ``k`` is (van Herk/Gil-Werman's idea of sharing partial results,
    with the pairwise summation's accuracy for sums). O(log k) HLO ops and work per element.

Uneven adaptive bins (``q, r = divmod(size, out)``, ``r > 0``): with ``r <= q`` (and ``r <= 16``)
every bin is a regular strided core (windows of ``q - r + 1`` every ``q``: short ones lowered as
above, up to :data:`CORE_TAPS` a fold of strided slices of the input, longer ones the last
``q - r + 1`` elements of each block of ``q``, a reshape of the input reduced in chunks of
:data:`CUT_TAPS` that read it in place, :mod:`jaxpool._chunks`) plus at most ``2r - 1``
masked edge taps (:func:`jaxpool.adaptive._core_and_fringes`: 1-D 100000
-> 7 in linear work, 20x faster than per-length doubling); otherwise (short bins) the separable
machinery at stride 1 and each bin's start picked by a broadcast, reshape and strided slice
(:func:`jaxpool._sliding.pick`), or for bins of at most four elements every element of each bin
picked that way and combined (maxima: bins of one or two; sums on inputs with several spatial
axes, :func:`jaxpool.adaptive._picks_sums`: adaptive avg 64 -> 40 and 13 -> 5 0.55-0.70x, 100 ->
77 0.30x forward+backward). Their derivative is two picks per axis whatever the bins
(:func:`jaxpool.adaptive._spread`: the first and the last bin holding each position; for maxima
only where it holds the bin's winner, from one saved offset per bin) — or, for at most 16 bins of
8 or more along an axis followed by narrow channels, one segment per bin
(:func:`jaxpool.adaptive._spread_segments`: 1-D 100000 -> 7 on 4 channels 0.57x). Maxima (without indices)
whose bins a window of at most 16 taps covers are one ``"taps"`` pass per axis over windows of
``q + r`` every ``q``, the taps outside each bin masked (:func:`jaxpool._geometry.binned_geometry`;
:func:`jaxpool.adaptive._max_by_axis`): forward+backward against the core and fringes, in one
process, (32, 40, 40, 64) 40 -> 6 74 -> 11 ms, (32, 23, 23, 64) 23 -> 5 13.6 -> 1.25 ms, (8, 100,
100, 64) 100 -> 7 67 -> 11 ms; their derivative routes whole blocks of the stride and the head
taps (:func:`routes_blocks`), not every tap. Sums over bins at least 3 apart covered by up to
24 taps are the same masked windows' ``"taps"`` sum, from strided slices of the unpadded input
(:func:`jaxpool.adaptive._binned`). No gather and no scatter in either direction.

``"blocks"`` (max/min along one axis)
    strided windows ``k = m s + h`` longer than :data:`AXIS_TAPS` (:func:`fits_blocks`): the axis cut into blocks
    of the stride, each reduced once, and every window folds ``m`` block results and ``h`` head
    taps (:mod:`jaxpool._blocks`). Linear work, O(m + h) HLO ops, and a 1-byte offset: adaptive
    512 -> 7 (74 every 73) forward+backward 4.4x -> 1.1x PyTorch. Blocks of at most
    :data:`CORE_TAPS` elements are folds over strided slices of the unpadded input
    (:func:`folds_blocks`): a padded window's reshape needed a padded copy of the input, a copy of
    its blocks and an input-sized winner score — forward+backward in one process, folds / reshape:
    adaptive max 50 -> 3 on (32, 50, 50, 64) (18 every 17, padded by 1) 0.13 (6.0x -> 0.87x
    PyTorch), 56 -> 3 0.30, 225 -> 7 on (8, 225, 225, 16) 0.70, 60 -> 7 on (32, 60, 60, 64) 0.82.
    Longer blocks: those wholly inside the input a reshape of a slice of it, reduced in chunks of
    :data:`CUT_TAPS` (:mod:`jaxpool._chunks`), the blocks at the ends over their part inside the
    input — no padded copy, no copy of the blocks (ranked passes, :mod:`jaxpool._rowmajor`, still
    reshape the padded input: theirs is an earlier pass's smaller output). Forward+backward,
    chunks / padded reshape: adaptive max 300 -> 7 on (8, 300, 300, 16) (44 every 43, padded by 1)
    0.38-0.39 (3.1x -> 1.2x PyTorch), (32, 4096, 64) -> 7 (586 every 585) 0.77-0.84, inference
    0.21 (4.5x -> 1.25x).
``"edges"``
    small stride-2 windows (``"taps"`` whose body folds phase views, :func:`fold_phases`) on sizes
    that are not a multiple of the stride: the outputs whose windows end inside the largest
    multiple of the stride (a slice of the input, whose phase view is a free reshape) and the last
    output or two over a slab one window wide, each lowered by its own geometry and concatenated
    (:mod:`jaxpool._edges`) — the value only: the derivative is one map over the whole geometry
    (for max, routed by the parts' concatenated offsets), which writes the input's gradient in
    one loop. The parts' values are a fold of ``lax.max`` unless the window is padded
    (:func:`parts_select_values`). Padding a ragged axis to a stride multiple in the forward pass
    makes XLA:CPU copy the input and its taps: 3x3/2 pad 1 on (32, 57, 57, 64) forward+backward 40 ms (3.6x
    PyTorch); the parts with their own derivatives 11-15 ms; with the whole-geometry derivative
    7.8-8.6 ms (max 55 and 57 pad 1, about 1.0x PyTorch).
``"chained"`` (max/min)
    windows over several axes (or over one, of more than :data:`JOINT_TAPS`), each at most
    :data:`CHAINED_TAPS` long, ``"blocks"`` or split into runs and blocks of runs
    (:func:`run_blocks`: up to 256), other than the phase-view folds of at most
    :data:`JOINT_PHASE_TAPS` elements below: one ``"taps"`` or ``"blocks"`` pass per axis (two
    for a split one), last axis first — or, for two axes whose first one is ``"blocks"``, that
    one first (:func:`pass_order`, :mod:`jaxpool._rowmajor`:
    adaptive 512 -> 7 0.4-0.6x), or for three axes whose two inner ones fold phase views of at
    most :data:`JOINT_PHASE_TAPS` taps, those two at once first (:func:`joint_inner_pass`) —,
    each with its own 1-byte offsets and max-index derivative
    (:func:`jaxpool.max._chained_extremum`). The backward pass routes through
    ``sum(k_i)`` taps instead of ``prod(k_i)``: measured in one process, forward+backward 3x3/1
    1.9x, 5x5/1 1.9x, 8x8/7 (adaptive 50 -> 7) 3.7x faster than the joint fold. The residual is
    one byte per element of each pass's output (3x3/1: 2 bytes per output instead of 1; flax keeps
    the 4-byte input). Indices (``return_indices``) use the joint fold. Passes whose taps multiply
    past :data:`FUSED_PASS_TAPS` are kept apart in every mode
    (:func:`jaxpool._fusion.materialize`): 5x5/1 on (8, 20, 20, 256)
    forward+backward 10.9 -> 5.9 ms, jvp 20.8 -> 3.1 ms; 3x3x3/1 35 -> 14 ms; other passes after
    the first only under differentiation (:func:`jaxpool._fusion.differentiated_once`: 3x3/1
    forward+backward 0.70-0.77x, 2x2x2/1 0.58-0.68x).

Max/min ``"taps"`` fold strided slices of the padded input, except stride-2 windows on even sizes,
which fold phase-view taps (:func:`fold_phases`), and windows strided by 3 or more, whose slices
are of the unpadded input, each padded (:func:`slices_unpadded`; sums too: their value from such
slices, their derivative from phase views, :func:`jaxpool.avg._unpadded_tap_sum`); every derivative
uses phase-view taps (:class:`jaxpool._taps.Taps`). The extremum and its offset are two folds, the second over
:func:`jaxpool._fusion.apart` of the input: sharing the taps, XLA:CPU would materialise them all.
(Two reads of the input: XLA:CPU fuses no sibling loops into one with two outputs, and its one-read
form, a variadic ``lax.reduce_window`` over the values and their offsets, ran 17-35x slower than
the maxima alone; nor is its plain ``reduce_window`` — YNNPACK's for windows that do not overlap —
faster than these folds anywhere: benchmarks/xla_reduce_window.py.)
16-bit floats are folded as their float32 upcast (exact: order, ties and NaN kept), converted
inside the fold — or, for padded phase-view folds on a host without 16-bit masked loads (x86
without AVX-512BW), where that loop would run scalar, written first (:func:`upcasts_apart`).
The extremum's fold is ``lax.max``/``lax.min`` (:func:`jaxpool._taps.extremum_fold`, 2-3x faster
on XLA:CPU), the offset's PyTorch's select rule (:func:`jaxpool._taps.select_fold`) — or, for
padded slices of the unpadded input, a chain of equality tests against the extremum computed once
(:func:`jaxpool._taps.first_match`): XLA:CPU wrote every padded tap that the select fold's
carried value read to memory first (adaptive max 90 -> 13 forward+backward 0.88-0.93x, max 5x5/3
pad 1 0.91-0.93x, 1-D 5/3 pad 1 0.79x without them). Windows that never overlap
(:func:`routes_disjoint`: no longer than their stride — tiling ones, and those with padding, a
ragged end or gaps) route their derivative through the input cut into windows, one select per
window (:func:`jaxpool.max._disjoint_route`), which the backward pass writes in one loop; other
windows route taps or blocks (:func:`routes_blocks`). Routes over four taps or more at strides up
to :data:`SPREAD_ROUTE_STRIDE` are transposed by :func:`jaxpool._taps.spread` (:func:`spreads_route`:
the cotangent and the offsets padded once into frames, per-phase sums of their slices, one
interleave); JAX's own transpose pads every tap's select into the phase view (an interior pad for
strides of 3 or more), which XLA:CPU fuses into one loop that tests each pad's bounds per element.
On an AVX2 machine (Zen 3 EPYC), forward+backward in separate processes, JAX's transpose -> spread:
3x3/2 on (32, 55, 55, 64) 17.8-27.6 -> 4.4-6.6 ms, 3x3/2 pad 1 on 57 27-38 -> 8.5-8.8, on 56 (a split
view, already per phase) 8.8-10.7 -> 6.9-7.5, 5x5/3 pad 1 31-42 -> 8-17, 5x5/1 pad 2 on (8, 20, 20,
256) 7.1-8.6 -> 2.2, 3x3x3/2 pad 1 on (4, 16, 32, 32, 32) 5.0-7.1 -> 3.3-4.5, adaptive max 13 -> 5 on
(64, 13, 13, 256) 12.5-16 -> 4.0-4.4, 13 -> 6 10.5-12.3 -> 3.1; routes of two or three taps stay
with JAX's (3x3/1 pad 1's passes 2.6 -> 3.6-5.3 ms, 1-D 3/2 pad 1 17-22 -> 23-25 as spread).

Small tiling windows keep the tap fold (2x2/2: one fused loop, a fixed summation order whatever
the batching, and for max the 1-byte offset); larger ones (sums above :data:`JOINT_SUM_TAPS`,
max/min above :data:`JOINT_TAPS` elements, e.g. 8x8 adaptive bins) and windows that span a whole
axis (global pooling) take ``"tiling"``. Timings are in
benchmarks/RESULTS_breadth.md.

Spatial sharding does not change the choice: window sums and routed maxima (each pass of a chain)
other than ``"tiling"`` whose axes split into blocks of whole strides (:func:`jaxpool._halo.splits`;
sums also where their outputs divide over the shards and the windows drift across the blocks)
are custom-partitioned around the chosen lowering (maxima over runs and blocks of runs, or the
doubling scheme, as one map: :func:`jaxpool.max._pool`; :func:`jaxpool.avg.window_sum`,
:func:`jaxpool.max._routed_pool`, :mod:`jaxpool._halo`: one halo exchange per direction of a
sharded axis, the one-device program per shard).
"""

from __future__ import annotations

import functools
import platform

import jax.numpy as jnp

from jaxpool import _edges, _taps
from jaxpool._geometry import WindowGeometry

# Windows with at most this many elements fold all their taps in one fused loop (max/min: one
# byte per output for the backward pass; sums are separable, so larger ones go axis by axis).
JOINT_TAPS = 64
JOINT_SUM_TAPS = 16
# Sums whose every pooled axis is strided, each a multiple of its stride, fold up to this many taps
# at once (transposed by jaxpool._taps.tap_sum): forward+backward in one process, joint / axis
# passes, avg 5x5/2 pad 2 on (32, 56, 56, 64) 0.31-0.55 (50 MiB of temporaries -> 7), on (64, 14,
# 14, 256) 0.73-0.93, on (16, 28, 28, 64) 0.95; 3x3x3/2 pad 1 on (4, 32, 32, 32, 32) 0.59, on (2,
# 32, 64, 64, 16) 0.79. Larger windows measured slower joint (6x6/2 on (16, 28, 28, 64) 2-2.4x, 7x7/2
# pad 3 on (8, 112, 112, 32) 1.4-1.5x), as did stride 1 (5x5/1 pad 2 2.8x) and ragged sizes (5x5/2
# pad 2 on 57: 3.4x), whose phase views do not split.
JOINT_STRIDED_SUM_TAPS = 27
# Phase-view folds (stride 2, even sizes) of windows over several axes with at most this many
# elements fold all taps at once; larger ones run one pass per axis ("chained").
JOINT_PHASE_TAPS = 9
# Along one axis, windows longer than this use the doubling scheme instead of a fold over taps.
AXIS_TAPS = 8
# Max/min windows over several axes whose every axis is at most this long (or "blocks") run one
# tap fold per axis ("chained", each routed by its 1-byte offsets) rather than the doubling scheme,
# whose derivative JAX takes through every level's selects (XLA:CPU ran those fusions at ~10 ns
# an element, 15-20x a copy). Forward+backward in one process (benchmarks/ab_commit.py), chained
# / doubling: max 9x9/1 pad 4 on (8, 32, 32, 64) 0.32 (0.58x PyTorch), 13x13/1 pad 6 0.37,
# 15x15/1 pad 7 on (2, 64, 64, 8) 0.12, 31x31/1 0.41, 31x31/1 pad 15 on (1, 512, 512, 4) 0.27,
# 9x9x9/1 pad 4 on (2, 16, 32, 32, 8) 0.03 (0.06x PyTorch). The fold's program grows with its
# taps: compile of jit(grad) on (2, 128, 128, 8) 0.6 s at 9x9 to 1.0-1.3 s at 33x33 (the
# doubling's 0.9-1.1 s), 2.4 s at 63x63, so longer axes keep the doubling.
CHAINED_TAPS = 32
# Longer undilated windows along one axis of a "chained" max/min (not "blocks") fold overlapping runs
# of ``a`` elements, then ``m`` of those runs every ``k // m`` (run_blocks, WindowGeometry.block_passes):
# ``a + m`` taps (33: 13, 63: 16, 255: 32) instead of ``k``, exact with PyTorch's first winner; one
# custom-partitioned map (jaxpool.max._pool: a pass's runs outnumber the input's rows). In one
# process, forward+backward, runs / doubling: 33x33/1 pad 16 on (2, 128, 128, 8) 0.05 (52 -> 2.8
# ms, PyTorch 62), 63x63/1 pad 31 0.03, 41x41/1 on (8, 64, 64, 16) 0.35; 255x255/1 pad 127 337 ->
# 6 ms. Compile of jit(grad) 1.0-1.4 s (the doubling's 1.1-1.3). Shorter windows measured faster
# as runs too (9x9/1 pad 4 on (8, 32, 32, 64) 0.56, 31x31/1 pad 15 0.48, but 3-D 9x9x9 1.09) and,
# as one partitioned map, moved 8 / 8 collective-permutes on shards of 4 rows where the per-pass
# folds move flax's 6 / 6: left as single folds.
RUN_TAPS = CHAINED_TAPS
# Windows that do not overlap (the cores of uneven adaptive bins, ``k <= s``) up to this many taps
# fold strided slices of the input: each element read once, and no copy — XLA:CPU materialises a
# slice of the input before a reduction over a reshaped axis (max over cores of 9 to 31 of ~16 MB:
# fold 0.6-1.4 ms, slice and reduce 1.2-2.0 ms; about equal from 32 taps on).
CORE_TAPS = 32
# Strided slices of a *cut* (a reshape of a slice of the input: the cores of uneven adaptive bins,
# the blocks of "blocks" windows) that one loop reads in place. XLA:CPU's loop fusion duplicates a
# producer's index computation at most 15 times (xla/service/fusion_node_indexing_evaluation.cc,
# kAllowedCodeDuplication), then copies the producer first: a fold of 16 or more strided slices of
# the cores of 69 of adaptive 500 -> 7 on (8, 500, 500, 8) copied 63 MB, 18-19 ms, where 2 to 15
# slices ran in 2-5 ms. Longer runs of a cut are reduced in chunks of this many (jaxpool._chunks).
CUT_TAPS = 15
# "chained" passes: XLA:CPU fuses consecutive passes' derivatives into one loop that re-reads the
# product of their taps per element; above this many, the next pass's input (and its tangent and
# cotangent) is computed once in every mode (5x5/1: 25, 2x slower fused); at most this many, only
# under differentiation (jaxpool._fusion.differentiated_once: 3x3/1 forward+backward 0.70-0.77x;
# inference fuses them, 2x2/1 2.8x faster than with the barrier).
FUSED_PASS_TAPS = 9


@functools.cache
def host_masks_16bit_loads() -> bool:
    """Whether XLA:CPU on this host vectorises a loop that loads 16-bit elements conditionally (a
    fold over padded taps of the input): LLVM turns such loads into masked vector loads, which x86
    has for 32- and 64-bit elements from AVX on but for 16-bit ones only with AVX-512BW; without
    them the whole loop runs scalar. Read from /proc/cpuinfo (LLVM, like XLA, targets the host's
    features); an x86 host whose flags cannot be read is taken to lack AVX-512BW. Other
    architectures: ``True`` (NEON has masked loads of no width, so nothing is lost to 16 bits)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    try:
        with open("/proc/cpuinfo") as info:
            return any("avx512bw" in line.split() for line in info if line.startswith("flags"))
    except OSError:
        return False


# Whether a padded max/min of 16-bit floats upcasts its input in a loop of its own (upcasts_apart);
# a module constant so that benchmarks and tests can set it either way.
UPCASTS_16BIT_APART = not host_masks_16bit_loads()


def is_narrow_float(dtype) -> bool:
    """Whether ``dtype`` is a floating type narrower than 32 bits (float16, bfloat16, 8-bit floats)."""
    return bool(jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32)


def upcasts_apart(geom: WindowGeometry, dtype, kind: str) -> bool:
    """Whether a max/min of 16-bit floats lowered as ``kind`` (:func:`choose`) writes its float32
    upcast to memory (:func:`jaxpool._fusion.materialize`) before folding, rather than converting
    each tap inside the fold: padded windows folded over stride-2 phase views (:func:`fold_phases`,
    or the body of ``"edges"``), whose shifted taps XLA:CPU loads conditionally, on a host without
    16-bit masked loads (:data:`UPCASTS_16BIT_APART`, :func:`host_masks_16bit_loads`). The fold then
    loads 32-bit floats, which vectorise. On a Zen 3 EPYC (AVX2), max 3x3/2 pad 1 on (32, 56, 56,
    64) bfloat16 spent 27.8 ms in its scalar winner fold and 9.2 in its extremum fold (float32: 2.8
    and 1.4); XLA alone (benchmarks/xla_16bit_taps.py) that extremum fold converting each tap 10.0
    ms, from the written upcast 4.0 (float32 2.4). Forward+backward in one process, upcast written /
    fused, bfloat16: 3x3/2 pad 1 0.48, on 57 0.58, 2x2/2 pad 1 0.66, 3x3x3/2 pad 1 on (4, 16, 32,
    32, 32) 0.29, 5x5/2 pad 2 0.95; but other padded folds lost (3x3/1 pad 1 1.31, 5x5/1 pad 2 on
    (8, 20, 20, 256) 1.12, 5x5/3 pad 1 3.7) and unpadded ones read in-bounds slices, which
    vectorise converted. An AVX-512 host (the earlier EPYC: bfloat16 3x3/2 pad 1 0.71x PyTorch,
    faster than its float32) keeps the fused convert."""
    phases = kind == "edges" or (kind != "tiling" and fold_phases(geom))
    return is_narrow_float(dtype) and geom.padded and phases and UPCASTS_16BIT_APART


def is_clean_tiling(geom: WindowGeometry) -> bool:
    """Windows tile the unpadded input exactly: stride == window, no dilation, no padding/overhang."""
    return geom.is_tiling and not geom.padded and all(o * k == n for o, k, n in zip(geom.out_shape, geom.window, geom.in_shape))


def routes_disjoint(geom: WindowGeometry) -> bool:
    """Whether a max/min's max-index derivative is one select per window over the input cut into
    windows (:func:`jaxpool.max._disjoint_route`), whose transpose writes the gradient in one loop:
    windows that never share an element — along every axis with several outputs, undilated and no
    longer than their stride (tiling windows, and those with padding, a ragged end or gaps). Not
    stride-2 phase-view windows other than tiling ones (:func:`fold_phases`): their tap route is
    sharding-friendly, while the cut's reshape of a padded axis made XLA's SPMD partitioner gather
    (max 2x2/2 pad 1 on 16 and 24, W-sharded over 4 devices), and on one device it gained little
    (0.83-1.03x)."""
    axes = zip(geom.out_shape, geom.window, geom.strides, geom.dilation)
    disjoint = all(k == 1 or (d == 1 and (o == 1 or k <= s)) for o, k, s, d in axes)
    return disjoint and (is_clean_tiling(geom) or not fold_phases(geom))


# Max unpooling given its window writes through the max-index route's transpose (below) where its
# outputs' repeats are found by comparing each index with those of at most this many later
# neighbours whose windows overlap (3x3/1: 12, 3x3x3/2: 13; 5x5/1: 40 do not).
UNPOOL_REPEAT_SHIFTS = 24


def unpools_by_route(geom: WindowGeometry, dtype) -> bool:
    """Whether :func:`jaxpool.max_unpool` given the window writes its values through the transpose
    of the max-index route (:func:`jaxpool.max.route_offsets`, scatter-free: one loop for disjoint
    windows, phase-interleaved adds for tap folds) instead of a scatter per (batch, channel):
    floating ``dtype`` (JAX transposes floats only), windows the route takes whole (disjoint ones,
    or at most :data:`JOINT_TAPS` elements) and at most :data:`UNPOOL_REPEAT_SHIFTS` later windows
    overlapping each. benchmarks/bench_breadth.py, max_pool and max_unpool forward+backward against
    PyTorch's: 2x2/2 on (8, 112, 112, 64) 0.31x (8.0 ms; without the window, one scatter, 0.58-1.26x),
    3x3/2 pad 1 on (32, 56, 56, 64) 0.50x (with the sign-mask route always run, as on several
    devices, it measured 1.2-1.9x on one: :func:`jaxpool.unpool._negative_zeros`)."""
    if not jnp.issubdtype(dtype, jnp.floating):
        return False
    whole = routes_disjoint(geom) or geom.window_size <= JOINT_TAPS
    return whole and len(geom.later_overlaps()) <= UNPOOL_REPEAT_SHIFTS


def matches_first(geom: WindowGeometry) -> bool:
    """Whether a ``"taps"`` max/min takes its winner as the first tap equal to the extremum
    (:func:`jaxpool._taps.first_match`) rather than PyTorch's select fold: padded windows whose taps
    are strided slices of the unpadded input (:func:`slices_unpadded`), each padded. The select fold
    reads each tap three times, so XLA:CPU writes the padded ones to memory first; unpadded taps
    fuse into it, and there it is the faster loop (adaptive max 28 -> 11 1.19-1.30x slower as
    equality chains)."""
    return geom.padded and not fold_phases(geom) and slices_unpadded(geom)


def fold_phases(geom: WindowGeometry) -> bool:
    """Whether a ``"taps"`` max/min folds phase-view taps (:class:`jaxpool._taps.Taps`) rather than
    strided slices of the padded input. Phase views win for stride-2 windows on even sizes (3x3/2
    pad 1: 2x faster on XLA:CPU, and under spatial sharding halo exchanges only, as many as
    flax's ``reduce_window``); XLA:CPU materialises them for larger strides (8x8/7: 26x slower)
    and odd sizes (padding to a stride multiple), where strided slices are fastest."""
    strides = [s if o > 1 else 1 for s, o in zip(geom.strides, geom.out_shape)]
    return max(strides) == 2 and all(n % s == 0 for n, s in zip(geom.in_shape, strides))


def slices_unpadded(geom: WindowGeometry, axes=None) -> bool:
    """Whether a forward tap fold (not :func:`fold_phases`) reads strided slices of the unpadded
    input, each padded to the output (:func:`jaxpool._taps.unpadded_tap`), rather than slices of
    one padded copy of the input: when every pooled axis in ``axes`` (default all) has a stride of
    at least 3. XLA:CPU materialises the padded copy, a fresh input-sized buffer per call (page
    faults under the default allocator), while per-tap pads of output-sized slices fuse into the
    fold. Measured in one process (ab_commit.py, default allocator), per-tap pads / padded copy:
    forward max 5x5/3 pad 1 on (32, 56, 56, 64) 0.14-0.18, 3x3/3 pad 1 0.19-0.21, avg 5x5/3 pad 1
    0.16; at stride 2 no gain (max 3x3/2 pad 1 on 57 0.83-0.95 forward) or a loss (avg 5x5x5/2 pad 2
    on (4, 16, 32, 32, 32) 1.3-1.7x forward+backward), at stride 1 1.45-5x slower (max 3x3/1 pad 1,
    avg 5x5/1 pad 2)."""
    axes = range(geom.ndim) if axes is None else axes
    return all(geom.strides[i] >= 3 for i in axes if geom.window[i] > 1 and geom.out_shape[i] > 1)


def fits_blocks(geom: WindowGeometry) -> bool:
    """Whether a max/min window along one axis only is ``"blocks"``: undilated, overlapping (``k > s``),
    longer than :data:`AXIS_TAPS`, and at most that many whole blocks of its stride plus a head that
    short. Adaptive 512 -> 7 (74 every 73): 4.4x -> 1.1x PyTorch. Shorter strided windows fold taps:
    those of ragged sizes at stride >= 3 read strided slices (:class:`jaxpool._taps.Taps`), which
    measured faster than blocks once they existed (forward+backward in one process, taps / blocks:
    adaptive max 13 -> 2 on (64, 13, 13, 256), a 7x7/6 SPP level, 0.62; 16 -> 5 (4x4/3) 0.63; max
    5x5/3 pad 1 on (32, 55, 55, 64) 0.81), and whose derivative XLA's SPMD partitioner splits into
    halo exchanges where cutting blocks reshapes a sharded axis (a gather)."""
    if len(geom.pooled_axes) != 1:
        return False
    (i,) = geom.pooled_axes
    k, s = geom.window[i], geom.strides[i]
    return geom.dilation[i] == 1 and AXIS_TAPS < k and k // s <= AXIS_TAPS and k % s <= AXIS_TAPS


def folds_blocks(geom: WindowGeometry) -> bool:
    """Whether a ``"blocks"`` window's blocks (of its stride) are reduced as folds over their
    elements, strided slices of the unpadded input (:func:`jaxpool._blocks._folded_blocks`):
    strides of at most :data:`CORE_TAPS`, the same bound as the folded cores of adaptive bins.
    Longer blocks are reduced in pieces of :data:`CUT_TAPS` (:func:`jaxpool._blocks._chunked_blocks`),
    or in ranked passes as a reshape of the padded input and plain reductions."""
    (i,) = geom.pooled_axes
    return geom.strides[i] <= CORE_TAPS


def route_taps(geom: WindowGeometry) -> int:
    """How many taps the max-index derivative of a one-axis max/min pass reads per output: the
    window's length, or for ``"blocks"`` (``k = m s + h``) its ``m`` blocks and ``h`` head taps.
    Other windows whose derivative routes blocks (:func:`routes_blocks`) count all ``k``: fused
    into the next pass's derivative, each block's select re-reads its ``s`` elements (counted as
    ``m + h``, 4x4/2 pad 1 on (32, 56, 56, 64) lost its barrier and ran 3-6x slower)."""
    if len(geom.pooled_axes) != 1:  # a joint pass (joint_inner_pass) routes every tap
        return geom.window_size
    (i,) = geom.pooled_axes
    k, s = geom.window[i], geom.strides[i]
    return sum(divmod(k, s)) if fits_blocks(geom) else k


def routes_blocks(geom: WindowGeometry) -> bool:
    """Whether the max-index derivative of a one-axis max/min pass routes whole blocks of the stride
    (:func:`jaxpool._blocks.route`: ``k = m s + h`` read as ``m`` blocks and ``h`` head taps) —
    always for ``"blocks"``, and for other undilated strided windows when that reads at most half
    the window's taps (the masked adaptive bins of :func:`jaxpool.adaptive._max_by_axis`, 8x8/7,
    4x4/2). The tap route's transpose is one interior pad per tap, each a pass over the gradient;
    the block route's is one broadcast, select and reshape per block. Forward+backward in one
    process (benchmarks/ab_commit.py), block route / tap route: adaptive max 100 -> 7 on (8, 100,
    100, 64) (16 taps every 14) 0.56-0.74, 40 -> 6 on (32, 40, 40, 64) 0.61-0.87, 28 -> 11 on (16,
    28, 28, 64) 0.73-1.08; windows it would read more than half of measured no better (13 -> 5,
    5 every 2: 0.87-1.11; max 5x5/2 pad 2, 3/2 pad 1, 3x3x3/2 pad 1: 0.86-1.11)."""
    if len(geom.pooled_axes) != 1:
        return False
    (i,) = geom.pooled_axes
    k, s = geom.window[i], geom.strides[i]
    return fits_blocks(geom) or (geom.dilation[i] == 1 and k > s and 2 * sum(divmod(k, s)) <= k)


# Max index routes of at least SPREAD_ROUTE_TAPS taps whose view strides are at most
# SPREAD_ROUTE_STRIDE are transposed by jaxpool._taps.spread (spreads_route).
SPREAD_ROUTE_STRIDE = 4
SPREAD_ROUTE_TAPS = 4


def spreads_route(geom: WindowGeometry) -> bool:
    """Whether a max index route over taps (:func:`jaxpool.max._taps_route`) is transposed by
    :func:`jaxpool._taps.spread` — the cotangent and the offsets padded once into a frame, each
    tap a select of their slices, per-phase sums, one interleave — rather than by JAX (a pad of
    each tap's select into the phase view, which XLA:CPU fuses into one loop that tests every
    pad's bounds per element): windows of at least :data:`SPREAD_ROUTE_TAPS` taps whose view
    strides are at most :data:`SPREAD_ROUTE_STRIDE` (the interleave stacks ``s`` phase pieces per
    axis). Measured in the module docstring."""
    strides = max((_taps.view_stride(geom, i) for i in geom.pooled_axes), default=1)
    return geom.window_size >= SPREAD_ROUTE_TAPS and strides <= SPREAD_ROUTE_STRIDE


def keeps_apart(fused_taps: int, taps: int) -> bool:
    """Whether a pass reading ``taps`` taps per element gets its input computed once, with its
    derivatives (:func:`jaxpool._fusion.materialize`), after passes that fused
    ``fused_taps`` taps per element since the last barrier: past :data:`FUSED_PASS_TAPS`."""
    return fused_taps > 1 and fused_taps * taps > FUSED_PASS_TAPS


def run_blocks(geom: WindowGeometry, i: int) -> int:
    """How many blocks of overlapping runs a ``"chained"`` max/min window reads along axis ``i``
    in a second pass (:meth:`jaxpool._geometry.WindowGeometry.block_passes`), or 1 for one pass:
    undilated windows longer than :data:`RUN_TAPS`, not ``"blocks"``, whose runs and blocks fold
    at most :data:`CHAINED_TAPS` taps together, their number chosen to fold the fewest."""
    k = geom.window[i]
    if geom.dilation[i] > 1 or k <= RUN_TAPS or fits_blocks(geom.axis_only(i, geom.in_shape)):
        return 1
    taps = {m: k - (m - 1) * (k // m) + m for m in range(2, k + 1)}
    best = min(taps, key=lambda m: (taps[m], m))
    return best if taps[best] <= CHAINED_TAPS else 1


def splits_runs(geom: WindowGeometry) -> bool:
    """Whether some axis of a ``"chained"`` window reads runs and blocks of runs (:func:`run_blocks`)."""
    return any(run_blocks(geom, i) > 1 for i in range(geom.ndim))


def chain_axes(geom: WindowGeometry) -> bool:
    """Whether a max/min runs one routed pass per axis (``"chained"``): windows over several axes
    (or one of more than :data:`JOINT_TAPS` taps), each at most :data:`CHAINED_TAPS` long,
    :func:`fits_blocks` or split by :func:`run_blocks`, that neither tile cleanly nor fold
    phase views of at most :data:`JOINT_PHASE_TAPS` taps (those fold all taps at once fastest:
    3x3/2; XLA:CPU runs larger joint phase-view folds many times slower than the passes, max 5x5/2
    pad 2 on (32, 56, 56, 64) forward+backward 160 -> 19 ms chained, PyTorch 12)."""
    several = sum(k > 1 for k in geom.window) > 1 or geom.window_size > JOINT_TAPS
    passes = all(
        k <= CHAINED_TAPS or fits_blocks(geom.axis_only(i, geom.in_shape)) or run_blocks(geom, i) > 1
        for i, k in enumerate(geom.window)
    )
    joint = fold_phases(geom) and geom.window_size <= JOINT_PHASE_TAPS
    return several and passes and not is_clean_tiling(geom) and not joint


def joint_inner_pass(geom: WindowGeometry) -> tuple[int, ...]:
    """The two innermost pooled axes of a ``"chained"`` window over three or more axes when their
    window folds phase views of at most :data:`JOINT_PHASE_TAPS` taps: the chain's first pass
    folds them at once (the 2-D ``"taps"`` fold of 3x3/2), then one pass per outer axis — exact
    with no ranking, the outer passes coming after the inner ones. ``()`` otherwise. One pass per
    axis made XLA:CPU write each axis's shifted (padded) odd phase to memory, the W pass's as
    large as half the input, and re-read it in a loop fusing the next pass; the joint pass reads
    the input once. In one process (benchmarks/ab_commit.py), joint inner pass / one per axis,
    3x3x3/2 pad 1: forward+backward on (4, 32, 64, 64, 32) 0.54 (1.08x PyTorch), (8, 16, 56, 56,
    16) 0.53, (4, 16, 32, 32, 32) 0.82, (2, 8, 16, 16, 64) 0.88, unpadded 0.64, on a depth of 15
    0.67; inference on (4, 32, 64, 64, 32) 0.23 (0.51x PyTorch). A joint fold of all 27 taps
    reads the input once too but ran 1.6x slower than the passes on small volumes (the bounds
    test of each padded tap) and 2.4x slower than this on the large one. Spatially sharded over H
    or W (4 devices), the joint pass is custom-partitioned as one (:mod:`jaxpool._halo`): 3
    collective-permutes forward+backward, flax's ``reduce_window`` 6."""
    pooled = geom.pooled_axes
    if len(pooled) < 3:
        return ()
    inner = geom.axes_only(pooled[-2:], geom.in_shape)
    return pooled[-2:] if fold_phases(inner) and inner.window_size <= JOINT_PHASE_TAPS else ()


def splits_edges(geom: WindowGeometry, reduction: str = "extremum", *, indices: bool = False) -> bool:
    """Whether a window is ``"edges"``: some strided axis is not a multiple of its stride, and the
    body (:func:`jaxpool._edges.body`) is a ``"taps"`` window that folds stride-2 phase views
    (:func:`fold_phases`), which a ragged axis would make XLA:CPU copy (3x3/2 pad 1 on 57: 40 ms ->
    11-15 ms forward+backward). Not for larger strides: there the ragged phase view splits into
    pieces (4x4/3 on 16: adaptive 16 -> 5), and split along two spatially sharded axes XLA's SPMD
    partitioner gathers the parts (``tests/test_spatial_sharding.py``)."""
    if not _edges.ragged_parts(geom) or is_clean_tiling(geom):
        return False
    body = _edges.body(geom)
    # a ragged size keeps sums to JOINT_SUM_TAPS: 5x5/2 pad 2 on 57 as edges measured 3.4x slower
    small = reduction == "extremum" or body.window_size <= JOINT_SUM_TAPS
    return small and fold_phases(body) and choose(body, reduction, indices=indices) == "taps"


def parts_select_values(geom: WindowGeometry) -> bool:
    """Whether the parts of an ``"edges"`` max/min take their extremum from PyTorch's select fold
    (:func:`jaxpool._taps.select_fold`) rather than a fold of ``lax.max``/``lax.min``: when the
    window is padded. Forward+backward in one process (benchmarks/ab_commit.py), ``lax.max`` /
    select fold: unpadded 3x3/2 on (32, 55, 55, 64) 0.76-0.91 (forward alone 0.62), (32, 35, 35,
    192) 0.93 (forward 0.86), (64, 13, 13, 256) 0.93, (32, 17, 17, 768) 0.93, (4, 15, 31, 31, 32)
    0.94, (32, 4095, 64) 0.98; padded 3x3/2 pad 1 on (32, 57, 57, 64) 1.17-1.37 (not understood)."""
    return geom.padded


def choose(geom: WindowGeometry, reduction: str = "extremum", *, indices: bool = False) -> str:
    """``"tiling"``, ``"edges"``, ``"taps"``, ``"blocks"`` (extremum), ``"chained"`` (extremum
    without ``indices``: the passes keep no joint offset) or ``"separable"`` for this geometry and
    ``reduction`` (``"extremum"`` or ``"sum"``; see the module docstring)."""
    if geom.bins is not None:  # masked taps: the fold's masks are the bins
        return "taps"
    if is_clean_tiling(geom):
        whole_axis = any(o == 1 and k > 1 for o, k in zip(geom.out_shape, geom.window))
        small = geom.window_size <= (JOINT_TAPS if reduction == "extremum" else JOINT_SUM_TAPS)
        if not small or whole_axis:
            return "tiling"
    if splits_edges(geom, reduction, indices=indices):
        return "edges"
    if reduction == "extremum" and fits_blocks(geom):
        return "blocks"
    if reduction == "extremum" and not indices and chain_axes(geom):
        return "chained"
    if geom.window_size <= (JOINT_TAPS if reduction == "extremum" else joint_sum_taps(geom)):
        return "taps"
    return "separable"


def sums_by_passes(geom: WindowGeometry) -> bool:
    """Whether a ``"taps"`` window sum over phase views (every pooled axis strided by 2, a multiple
    of it) takes its value in inference from one pass per axis (:func:`jaxpool.avg._passes_sum`),
    keeping the joint fold where JAX differentiates (:func:`jaxpool.avg._phase_derivative`):
    windows of more than :data:`JOINT_SUM_TAPS` taps. The joint fold's forward re-reads every
    input element as many times as windows hold it; the passes read it once per axis but hold
    half the input between them. Inference in one process, passes / joint fold: avg 5x5/2 pad 2
    on (32, 56, 56, 64) 0.47-0.55 (about PyTorch's time), (64, 56, 56, 64) 0.44, (16, 112, 112,
    64) 0.60, 3x3x3/2 pad 1 on (4, 16, 32, 32, 32) 0.76. Forward+backward with the passes' value
    gained on small inputs (0.60-0.85 on (32, 56, 56, 64)) but lost 1.06-1.15x on the larger ones
    (the intermediate's page faults), so training keeps the joint fold's value; smaller windows
    measured slower as passes (3x3/2 pad 1 1.22, 4x4/2 pad 1 1.25). Over two axes the passes are
    differentiated instead (:func:`differentiates_by_passes`)."""
    phases = geom.bins is None and not slices_unpadded(geom) and choose(geom, "sum") == "taps"
    return phases and geom.window_size > JOINT_SUM_TAPS


def differentiates_by_passes(geom: WindowGeometry) -> bool:
    """Whether a :func:`sums_by_passes` window sum over two axes is differentiated as its passes
    too (JAX transposes each pass: two phase-interleaved loops, about ``k / s`` taps per element
    each, where the joint fold's transpose reads ``k**2 / s**2``). Forward+backward in one process,
    passes / joint fold: avg 5x5/2 pad 2 on (32, 56, 56, 64) 0.61-0.70 (1.05 -> 0.93x PyTorch), (8,
    32, 32, 256) 0.43, (64, 56, 56, 64) 0.80, (16, 112, 112, 64) 0.94, 7x7/2 pad 3 on (8, 56, 56, 64)
    0.89. Three axes keep the joint fold's derivative (two intermediates): 3x3x3/2 pad 1 on (4, 16,
    32, 32, 32) 1.19-1.34, on (8, 16, 56, 56, 16) 2.84; 5x5x5/2 pad 2 0.98."""
    return sums_by_passes(geom) and len(geom.pooled_axes) == 2


def joint_sum_taps(geom: WindowGeometry) -> int:
    """How many taps a window sum folds at once: :data:`JOINT_STRIDED_SUM_TAPS` when every pooled
    axis is strided, else :data:`JOINT_SUM_TAPS`."""
    axes = [i for i in geom.pooled_axes if geom.out_shape[i] > 1]
    split = all(geom.strides[i] > 1 and geom.in_shape[i] % geom.strides[i] == 0 for i in axes)
    return JOINT_STRIDED_SUM_TAPS if split else JOINT_SUM_TAPS


def pass_order(passes: dict) -> list[int]:
    """The order of one-axis max/min passes (``{spatial axis: its geometry on the input}``): last
    axis first — exact with no bookkeeping (:func:`jaxpool.max.chain_passes`) — except for two
    pooled axes where the first one's window is longer than :data:`AXIS_TAPS` and shrinks its axis
    at least as much as the other's: that one first, its taps or blocks whole contiguous rows of the
    later axes, which XLA:CPU reduces several times faster than along the axis next to the
    channels; the second pass then ranks its candidates (:mod:`jaxpool._rowmajor`).
    Forward+backward in one process (benchmarks/ab_commit.py), first / last axis first: adaptive
    max 512 -> 7 on (1, 512, 512, 4) (74 every 73) 0.38-0.61, 40 -> 6 on (32, 40, 40, 64) 0.64-0.89,
    100 -> 7 on (8, 100, 100, 64) 0.76-0.99, max 12x12/10 on (8, 56, 56, 64) 0.77-0.85, 31x31/30 on
    (2, 128, 128, 8) 0.56; but 256 -> 3 on (2, 256, 256, 16) 1.17-1.21, left as measured. Windows of
    at most 8 taps measured no gain (adaptive 13 -> 5, 28 -> 11, 20 -> 7: 0.99-1.03) or a loss (13 ->
    6 on (64, 13, 13, 256) 1.22, max 5x5/3 pad 1 1.03-1.38), and so did three axes (adaptive
    16x40x40 -> 5x6x6 1.14): ranking the later passes' candidates costs more than it saves."""
    pooled = sorted((i for i, g in passes.items() if g.pooled_axes), reverse=True)
    if len(pooled) == 2:
        inner, outer = pooled
        shrink = {i: passes[i].in_shape[i] / passes[i].out_shape[i] for i in pooled}
        if fits_blocks(passes[outer]) and shrink[outer] >= shrink[inner]:
            return [outer, inner] + [i for i in sorted(passes, reverse=True) if i not in pooled]
    return sorted(passes, reverse=True)
