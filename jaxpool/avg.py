"""Average and power-average (LP) pooling.

Window sums are lowered by :func:`jaxpool._lowering.choose` (one reduce for tiling windows, a fused
tap sum for small ones, axis-by-axis doubling for large ones) from plain JAX ops, so JAX
differentiates them in forward and reverse mode; the backward pass is shifted adds (no
``reduce_window`` transpose, no scatter). 16-bit floats and integers are summed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool import _edges, _fusion, _halo, _linear, _lowering, _sliding, _symbolic, _taps
from jaxpool._fusion import results_once
from jaxpool._geometry import PaddingLike, WindowGeometry, check_bool, not_a_window, window_geometry, window_tuple
from jaxpool._layout import Layout, accumulation_dtype, as_pool_input, layout_of, result_dtype
from jaxpool.max import max_pool


def window_sum(x, layout: Layout, geom: WindowGeometry):
    """Sum of each window's in-input elements (zero padding), in ``x``'s dtype: :func:`_local_sum`,
    which on a spatially sharded ``x`` exchanges one halo per direction of each sharded axis, in
    every derivative too (:mod:`jaxpool._halo`; :func:`_halo_sum`). One device runs the local
    sum's programs, forward and backward."""
    if _lowering.choose(geom, "sum") == "tiling" or not _halo.splits(geom, drifting=True):
        return _local_sum(x, layout, geom)
    return _halo_sum(x, layout, geom)


def _halo_sum(x, layout: Layout, geom: WindowGeometry, differentiated: bool = False):
    """:func:`_local_sum` of ``x`` (``differentiated``: its value where JAX differentiates it) by
    :func:`jaxpool._halo.windowed`, differentiated by hand: the value again (``differentiated``)
    and the tangent map, a :func:`jaxpool._linear.linear` pair of the local sum's own tangent and
    its transpose, each partitioned."""

    value = _differentiated_sum if differentiated else _local_sum

    @jax.custom_jvp
    def total(v):  # linear, so that code applying the sum to tangents (stochastic_pool) transposes it
        return _linear.linear(
            lambda a: _halo.windowed(value, a, layout, geom),
            lambda ct: _halo.spilled(_halo.transposed(value), ct, layout, geom),
            v,
        )

    @total.defjvp
    def _total_jvp(primals, tangents):
        tangent = _linear.linear(
            lambda t: _halo.windowed(_local_tangent, t, layout, geom),
            lambda ct: _halo.spilled(_local_cotangent, ct, layout, geom),
            tangents[0],
        )
        return _halo_sum(primals[0], layout, geom, differentiated=True), tangent

    return total(x)


def _differentiated_sum(x, layout: Layout, geom: WindowGeometry):
    """:func:`_local_sum`'s value where JAX differentiates it (its custom JVP's primal)."""
    return jax.jvp(lambda v: _local_sum(v, layout, geom), (x,), (x,))[0]


def _local_tangent(t, layout: Layout, geom: WindowGeometry):
    """:func:`_local_sum`'s tangent map (its custom JVP's tangent form)."""
    return jax.jvp(lambda v: _local_sum(v, layout, geom), (jnp.zeros_like(t),), (t,))[1]


def _local_cotangent(ct, layout: Layout, geom: WindowGeometry):
    """The transpose of :func:`_local_tangent`: :func:`_local_sum`'s pullback at zero (the forward
    values, unused, XLA drops)."""
    zeros = jnp.zeros(layout.with_spatial(ct.shape, geom.in_shape), ct.dtype)
    return jax.vjp(lambda v: _local_sum(v, layout, geom), zeros)[1](ct)[0]


def _local_sum(x, layout: Layout, geom: WindowGeometry):
    """:func:`window_sum` on one device (or one shard's block), lowered per
    :func:`jaxpool._lowering.choose`. Plain JAX ops (reshapes, slices, adds): JAX differentiates
    it in both modes, and the transpose is phase-interleaved shifted adds — no ``reduce_window``
    transpose, no scatter. Axis-by-axis sums of short windows compute the cotangent between the
    passes once (:func:`jaxpool._lowering.keeps_apart`): fused, XLA:CPU re-read every tap of one
    pass for each tap of the other (forward+backward in one process, 5x5/3 pad 1 on (32, 56, 56,
    64) 42 -> 7.8 ms, 5x5/1 pad 2 on (8, 56, 56, 64) 23 -> 3.8 ms, 7x7/1 pad 3 27 -> 4.2 ms)."""
    kind = _lowering.choose(geom, "sum")
    if kind == "edges":
        return _phase_derivative(lambda x: _edges.by_parts(_part_sum, x, layout, geom)[0], x, layout, geom)
    if kind == "tiling":
        return _sliding.tiling_sum(x, layout, geom)
    if kind == "taps" and geom.bins is None and _lowering.slices_unpadded(geom):
        return _phase_derivative(lambda x: _unpadded_tap_sum(x, layout, geom), x, layout, geom)
    if _lowering.differentiates_by_passes(geom):
        return _passes_sum(x, layout, geom)
    if _lowering.sums_by_passes(geom):
        return _phase_derivative(lambda x: _passes_sum(x, layout, geom), x, layout, geom, differentiated=_phase_tap_sum)
    if kind == "taps" and geom.bins is None:  # taps outside the input read the zero padding
        return _phase_tap_sum(x, layout, geom)
    if kind == "taps" and _lowering.slices_unpadded(geom):  # masked bins, from unpadded slices
        return _phase_derivative(lambda x: _masked_tap_sum(x, layout, geom, unpadded=True), x, layout, geom, _masked_tap_sum)
    if kind == "taps":
        return _masked_tap_sum(x, layout, geom)
    fused = 1  # taps per element fused since the last barrier (see _lowering.keeps_apart)
    for i in reversed(range(geom.ndim)):
        taps = geom.window[i] if geom.window[i] <= _lowering.AXIS_TAPS else 1
        if _lowering.keeps_apart(fused, taps):
            x, fused = _fusion.cotangent_once(x), 1
        fused *= taps
        x = _axis_sum(x, layout, geom, i)
    return x


def _axis_sum(x, layout: Layout, geom: WindowGeometry, i: int) -> jax.Array:
    """The sums of ``geom``'s windows along spatial axis ``i`` alone (one separable pass), lowered by
    :func:`jaxpool._sliding.along_axis`. A tap fold whose phase view would reshape a padded copy of
    the input (:func:`jaxpool._taps.pads_a_copy`: a length that is not a multiple of a stride of 3
    or more, split into phases) takes its value from strided slices of the unpadded input instead,
    and keeps the phase view's derivative (:func:`_phase_derivative`): avg 8x8/7 on (32, 50, 50,
    64) (adaptive avg 50 -> 7) forward+backward 0.48x in one process (benchmarks/ab_commit.py), the
    5 ms pad 50 -> 56 gone."""

    k = geom.window[i]

    def phase(v, layout: Layout = layout, geom: WindowGeometry = geom):
        return _sliding.along_axis((v,), _add, layout, geom, i, fills=(0,), padded=False, block_reduce=_block_sum)[0]

    def sliced(v):
        return _added([_taps.unpadded_tap(v, layout, geom, {i: t}, 0, {i: geom.pad_lo[i]}) for t in range(k)])

    if 1 < k <= _lowering.AXIS_TAPS and _lowering.slices_unpadded(geom, (i,)) and _taps.pads_a_copy(layout, geom, x.shape, (i,)):
        return _phase_derivative(sliced, x, layout, geom, phase)
    return phase(x)


def _masked_tap_sum(x, layout: Layout, geom: WindowGeometry, unpadded: bool = False) -> jax.Array:
    """Window sums of ``geom`` with the taps outside each window's bin (``geom.bins``) masked: phase-view
    taps (:class:`jaxpool._taps.Taps`), or with ``unpadded`` strided slices of the unpadded input
    (:func:`jaxpool._taps.unpadded_tap`): the phase view of an axis that is not a multiple of the
    stride is a padded copy of the input, which XLA:CPU writes before the taps (adaptive avg 40 -> 6
    on (32, 40, 40, 64), windows of 10 every 6: a 1.7-3.2 ms pad of a 4.5 ms forward+backward)."""
    taps = _taps.Taps(x, layout, geom) if not unpadded else None
    zero = jnp.zeros((), x.dtype)
    terms = []
    for _, offs in _taps.window_taps(geom):
        tap = taps(offs) if taps is not None else _taps.unpadded_tap(x, layout, geom, offs, 0)
        inside = _taps.tap_inside(layout, geom, offs)
        terms.append(tap if inside is None else jnp.where(inside, tap, zero))
    return _added(terms)


def _added(terms: list[jax.Array]) -> jax.Array:
    """``terms`` added in order."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def _part_sum(x, layout: Layout, geom: WindowGeometry) -> tuple:
    """One :func:`jaxpool._edges.by_parts` part of an ``"edges"`` window sum."""
    return (window_sum(x, layout, geom),)


def _passes_sum(x, layout: Layout, geom: WindowGeometry):
    """Window sums of ``geom`` as one phase-view tap sum per pooled axis, last axis first, each
    pass's input computed once (:func:`jaxpool._fusion.materialize`; fused, XLA:CPU re-read every
    tap of one pass for each tap of the next: avg 5x5/2 pad 2 inference 6x slower)."""
    shape = layout.spatial_shape(x.shape)
    for n, i in enumerate(reversed(geom.pooled_axes)):
        axis = geom.axis_only(i, shape)
        taps = _taps.Taps(_fusion.materialize(x) if n else x, layout, axis)
        x, shape = _added([taps(offs) for _, offs in _taps.window_taps(axis)]), axis.out_shape
    return x


def _unpadded_tap_sum(x, layout: Layout, geom: WindowGeometry):
    """Window sums from strided slices of the unpadded input, each padded with zeros."""
    return sum(_taps.unpadded_tap(x, layout, geom, offs, 0) for _, offs in _taps.window_taps(geom))


def _phase_derivative(value, x, layout: Layout, geom: WindowGeometry, tangent=None, differentiated=None):
    """``value(x)``, a window sum of ``geom`` computed in a form XLA:CPU runs fast forward, with the
    derivative of :func:`_phase_tap_sum` (or ``tangent``: :func:`_masked_tap_sum` for masked bins)
    over the whole geometry (a linear tangent map that JAX transposes into the phase-interleaved
    backward pass, one loop writing the input's gradient). With ``differentiated`` (a window sum of
    ``(x, layout, geom)``), the value is that where JAX differentiates: :func:`_passes_sum`, fast
    in inference, holds an intermediate as large as half the input, whose page faults made
    forward+backward 1.06-1.15x slower on (64, 56, 56, 64).

    Two forms use it. Windows strided by 3 or more (:func:`jaxpool._lowering.slices_unpadded`): the
    value from strided slices of the unpadded input (no padded copy, nor a reshape of a ragged
    axis, to materialise); in one process (ab_commit.py), avg 3x3/3 pad 1 on (32, 56, 56, 64)
    forward 4.3 -> 0.96 ms (PyTorch 1.37), forward+backward 9.8 -> 4.3 ms (6.1); 3x3/4 pad 1 on 57
    25 -> 9.2 ms; 4x4/3 on 16 (adaptive 16 -> 5) 0.61 -> 0.40 ms. ``"edges"`` windows: the value
    part by part (:func:`jaxpool._edges.by_parts`), the gradient no longer the parts' gradients
    padded and added (XLA:CPU runs a fused pad of the phase interleave 5-8x slower than the
    interleave itself, and apart it is an input-sized temporary): forward+backward in one process
    0.45-0.47x the time with the parts' derivatives for avg 3x3/2 pad 1 on (32, 57, 57, 64),
    0.22-0.33x for 3x3/2 on 55."""

    @jax.custom_jvp
    def total(x):
        return value(x)

    @total.defjvp
    def _total_jvp(primals, tangents):
        y = differentiated(primals[0], layout, geom) if differentiated else total(primals[0])
        return y, (tangent or _phase_tap_sum)(tangents[0], layout, geom)

    return total(x)


def _phase_tap_sum(x, layout: Layout, geom: WindowGeometry):
    """Every window's sum as a sum of phase-view taps (:class:`jaxpool._taps.Taps`), zero padding."""
    return _taps.tap_sum(x, layout, geom)


def _block_sum(values: tuple, axis: int, blocks: int, s: int) -> tuple:
    """Whole blocks of strided windows (:func:`jaxpool._sliding.blocked`) summed by one reduction
    each (:func:`jaxpool._sliding.block_sums`), whose transpose is a broadcast —
    :func:`jaxpool._sliding.tree`'s halvings transpose into one pad per level and width (avg 12x12/11
    on (32, 56, 56, 64), adaptive 56 -> 5, forward+backward 0.55x in one process; adaptive 512 -> 7
    0.58x). XLA's reductions keep float32 sums accurate (4097-long windows every 4000: 1e-7
    relative, tests/test_cost_guards.py)."""
    return _sliding.block_sums(values, axis, blocks, s)


def _add(a, b):
    return (a[0] + b[0],)


def _prepare(x, window_shape, strides, padding, ceil_mode, data_format, dilation=None):
    x = as_pool_input(x)
    window = window_tuple(window_shape)
    layout = layout_of(x, len(window), data_format)
    geom = window_geometry(layout.spatial_shape(x.shape), window, strides, padding, dilation, ceil_mode)
    return x, layout, geom


@results_once
def avg_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    data_format: str = "channels_last",
) -> jax.Array:
    """Average pooling over N spatial dimensions, PyTorch's semantics.

    Layout, ``window_shape``, ``strides`` (``None`` = window), ``padding`` and ``ceil_mode`` are as in
    :func:`jaxpool.max_pool`.

    Args:
      count_include_pad: divide by the window clipped to the explicitly padded input (True, PyTorch's
        default) or by the number of real input elements (False; Keras' "same" behaviour). The
        ``ceil_mode`` overhang past the padding is never counted.
      divisor_override: a positive int that replaces the divisor everywhere.

    Returns:
      ``(*batch, *out, C)`` (or channels_first) in ``x``'s float dtype (float32 for integers);
      float16/bfloat16 are accumulated in float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # (batch, H, W, C), channels_last
      >>> jaxpool.avg_pool(x, (2, 2))[0, ..., 0]
      Array([[ 2.5,  4.5],
             [10.5, 12.5]], dtype=float32)
      >>> ones = jnp.ones((1, 2, 2, 1))
      >>> jaxpool.avg_pool(ones, (2, 2), strides=1, padding=1)[0, ..., 0]  # padding counts in the divisor
      Array([[0.25, 0.5 , 0.25],
             [0.5 , 1.  , 0.5 ],
             [0.25, 0.5 , 0.25]], dtype=float32)
      >>> jaxpool.avg_pool(ones, (2, 2), strides=1, padding=1, count_include_pad=False)[0, ..., 0]
      Array([[1., 1., 1.],
             [1., 1., 1.],
             [1., 1., 1.]], dtype=float32)
    """
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
            raise TypeError(f"divisor_override must be a positive int or None, got {divisor_override!r}")
        if divisor_override <= 0:
            raise ValueError(f"divisor_override must be a positive int, got {divisor_override}")
    x = as_pool_input(x)
    window = window_tuple(window_shape)
    layout = layout_of(x, len(window), data_format)
    check_bool(count_include_pad, "count_include_pad")
    if _symbolic.is_symbolic(layout.spatial_shape(x.shape)):
        acc, out = accumulation_dtype(x.dtype), result_dtype(x.dtype)
        return _symbolic.average(x, layout, window, strides, padding, ceil_mode, count_include_pad, divisor_override, acc, out)
    geom = window_geometry(layout.spatial_shape(x.shape), window, strides, padding, None, ceil_mode)
    acc = accumulation_dtype(x.dtype)
    total = window_sum(x.astype(acc), layout, geom)
    if divisor_override is not None:
        scale = np.asarray(1.0 / divisor_override, acc)
    else:
        counts = [geom.divisor(i, count_include_pad) for i in range(geom.ndim)]
        if all((c == c[0]).all() for c in counts):
            scale = np.asarray(1.0 / math.prod(int(c[0]) for c in counts), acc)
        else:
            scale = np.ones((1,) * layout.ndim)
            for i, c in enumerate(counts):
                scale = scale * layout.along(1.0 / c.astype(np.float64), i)
            scale = scale.astype(acc)
    return jnp.asarray(total * scale).astype(result_dtype(x.dtype))


@results_once
def lp_pool(
    x: jax.Array,
    norm_type: float,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Power-average (LP) pooling: ``(sum over the window of x**p) ** (1/p)``.

    Sermanet, Chintala & LeCun 2012, "Convolutional neural networks applied to house numbers digit
    classification"; PyTorch's ``lp_pool``. ``p = 1`` is sum pooling, ``p -> inf`` max pooling
    (``norm_type=float("inf")`` calls :func:`jaxpool.max_pool`). Arguments as :func:`jaxpool.avg_pool`.

    Where PyTorch differs: a negative window sum (odd ``p`` with negative inputs) gives the real root
    ``-|S|**(1/p)`` (PyTorch: NaN); a ``ceil_mode`` window that overhangs the input sums only its real
    elements (PyTorch rescales that partial sum by window size / clipped count). Where the sum is 0
    the gradient is 0, not NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.full((1, 2, 2, 1), 3.0)
      >>> jaxpool.lp_pool(x, 2, (2, 2))[0, ..., 0]  # sqrt(4 * 3**2)
      Array([[6.]], dtype=float32)
    """
    not_a_window(norm_type, "norm_type", f"lp_pool(x, 2.0, window_shape={norm_type!r}) (PyTorch's order: norm_type first)")
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.integer, np.floating)):
        raise TypeError(f"norm_type must be a positive number, got {norm_type!r}")
    if not norm_type > 0:
        raise ValueError(f"norm_type must be positive, got {norm_type}")
    if norm_type == np.inf:
        return max_pool(x, window_shape, strides, padding, ceil_mode=ceil_mode, data_format=data_format)
    x, layout, geom = _prepare(x, window_shape, strides, padding, ceil_mode, data_format)
    acc = accumulation_dtype(x.dtype)
    # An integer p is integer_pow (multiplications; pow is exp(p log x), several times slower in
    # both directions); p = 2 takes the root with sqrt.
    exponent = int(norm_type) if float(norm_type).is_integer() else norm_type
    total = window_sum(jnp.power(x.astype(acc), exponent), layout, geom)
    magnitude = jnp.abs(total)
    nonzero = magnitude != 0  # NaN included: a NaN window stays NaN, as PyTorch's
    safe = jnp.where(nonzero, magnitude, jnp.ones((), acc))
    root = jnp.sqrt(safe) if exponent == 2 else jnp.power(safe, 1.0 / norm_type)
    return jnp.where(nonzero, jnp.sign(total) * root, 0).astype(result_dtype(x.dtype))
