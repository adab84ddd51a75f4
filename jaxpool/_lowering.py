"""The one place that chooses how each windowed reduction is lowered to XLA, from its geometry alone.

Every max/min/sum pooling (and everything built on them: avg, lp, GeM, adaptive, global, SPP,
stochastic inference) goes through :func:`choose`. The rule keeps trace time, compile time and HLO
size independent of the window size — a 512x512 global max compiles as fast as a 2x2 pool:

``"tiling"``
    stride == window, no dilation, no padding or ``ceil_mode`` overhang (global pooling, SPP
    levels, evenly dividing adaptive bins, ``2x2/2`` on even sizes): a reshape that gives every
    window its own axes and plain reductions (sums: one; max/min: the extremum and a winner score
    that encodes PyTorch's first argmax). The backward pass is one broadcast and select. O(1) HLO ops.
``"taps"``
    small windows (max/min: at most :data:`JOINT_TAPS` elements; sums: :data:`JOINT_SUM_TAPS`): one
    fused elementwise fold over the window's taps, the fastest form on every backend for small
    windows; max/min keep one byte per output (the winner's offset) for the backward pass.
``"separable"``
    larger windows: one axis at a time; along each axis a fold over at most :data:`AXIS_TAPS` taps,
    or for longer axes a doubling (sparse-table) scheme — ``log2(k)`` elementwise passes for a
    window of ``k``, whatever ``k`` is (van Herk/Gil-Werman's idea of sharing partial results,
    with the pairwise summation's accuracy for sums). O(log k) HLO ops and work per element.

Uneven adaptive bins (``q, r = divmod(size, out)``, ``r > 0``): with ``r <= q`` (and ``r <= 16``)
every bin is a regular strided core (windows of ``q - r + 1`` every ``q``, lowered as above) plus at
most ``2r - 1`` masked edge taps (:func:`jaxpool.adaptive._core_and_fringes`: 1-D 100000 -> 7 in
linear work, 20x faster than per-length doubling); otherwise (short bins) the separable machinery at
stride 1 and each bin's start picked by a broadcast, reshape and strided slice
(:func:`jaxpool._sliding.pick`). No gather and no scatter in either direction.

``"chained"`` (max/min)
    windows over several axes of at most :data:`AXIS_TAPS` each, other than the phase-view folds
    below: one ``"taps"`` pass per axis, last axis first, each with its own 1-byte offsets and
    max-index derivative (:func:`jaxpool.max._chained_extremum`). The backward pass routes through
    ``sum(k_i)`` taps instead of ``prod(k_i)``: measured in one process, forward+backward 3x3/1
    1.9x, 5x5/1 1.9x, 8x8/7 (adaptive 50 -> 7) 3.7x faster than the joint fold. The residual is
    one byte per element of each pass's output (3x3/1: 2 bytes per output instead of 1; flax keeps
    the 4-byte input). Indices (``return_indices``) use the joint fold.

Max/min ``"taps"`` fold strided slices of the padded input, except stride-2 windows on even sizes,
which fold phase-view taps (:func:`fold_phases`); every derivative uses phase-view taps
(:class:`jaxpool._taps.Taps`). The extremum and its offset are two folds, the second over
:func:`jaxpool._fusion.apart` of the input: sharing the taps, XLA:CPU would materialise them all.

Small tiling windows keep the tap fold (2x2/2: one fused loop, a fixed summation order whatever
the batching, and for max the 1-byte offset); larger ones (sums above :data:`JOINT_SUM_TAPS`,
max/min above :data:`JOINT_TAPS` elements, e.g. 8x8 adaptive bins) and windows that span a whole
axis (global pooling) take ``"tiling"``. Timings are in
benchmarks/RESULTS_breadth.md.
"""

from __future__ import annotations

from jaxpool._geometry import WindowGeometry

# Windows with at most this many elements fold all their taps in one fused loop (max/min: one
# byte per output for the backward pass; sums are separable, so larger ones go axis by axis).
JOINT_TAPS = 64
JOINT_SUM_TAPS = 16
# Along one axis, windows longer than this use the doubling scheme instead of a fold over taps.
AXIS_TAPS = 8


def is_clean_tiling(geom: WindowGeometry) -> bool:
    """Windows tile the unpadded input exactly: stride == window, no dilation, no padding/overhang."""
    return (
        geom.is_tiling
        and not any(geom.pad_lo)
        and not any(geom.pad_hi)
        and not any(geom.overhang)
        and all(o * k == n for o, k, n in zip(geom.out_shape, geom.window, geom.in_shape))
    )


def fold_phases(geom: WindowGeometry) -> bool:
    """Whether a ``"taps"`` max/min folds phase-view taps (:class:`jaxpool._taps.Taps`) rather than
    strided slices of the padded input. Phase views win for stride-2 windows on even sizes (3x3/2
    pad 1: 2x faster on XLA:CPU, and under spatial sharding halo exchanges only, as many as
    flax's ``reduce_window``); XLA:CPU materialises them for larger strides (8x8/7: 26x slower)
    and odd sizes (padding to a stride multiple), where strided slices are fastest."""
    strides = [s if o > 1 else 1 for s, o in zip(geom.strides, geom.out_shape)]
    return max(strides) == 2 and all(n % s == 0 for n, s in zip(geom.in_shape, strides))


def chain_axes(geom: WindowGeometry) -> bool:
    """Whether a max/min runs one ``"taps"`` pass per axis (``"chained"``): windows over several axes
    of at most :data:`AXIS_TAPS` each that neither tile cleanly nor fold phase views (those fold all
    taps at once fastest)."""
    several = sum(k > 1 for k in geom.window) > 1
    return several and max(geom.window) <= AXIS_TAPS and not is_clean_tiling(geom) and not fold_phases(geom)


def choose(geom: WindowGeometry, reduction: str = "extremum", *, indices: bool = False) -> str:
    """``"tiling"``, ``"taps"``, ``"chained"`` (extremum without ``indices``: the passes keep no joint
    offset) or ``"separable"`` for this geometry and ``reduction`` (``"extremum"`` or ``"sum"``; see
    the module docstring)."""
    if is_clean_tiling(geom):
        whole_axis = any(o == 1 and k > 1 for o, k in zip(geom.out_shape, geom.window))
        small = geom.window_size <= (JOINT_TAPS if reduction == "extremum" else JOINT_SUM_TAPS)
        if not small or whole_axis:
            return "tiling"
    if reduction == "extremum" and not indices and chain_axes(geom):
        return "chained"
    if geom.window_size <= (JOINT_TAPS if reduction == "extremum" else JOINT_SUM_TAPS):
        return "taps"
    return "separable"
