"""Average and power-average (LP) pooling.

The window sum is separable: one axis at a time, a sum of that axis's strided taps. XLA fuses each
pass into one loop and differentiates it into interior-padded adds (no ``reduce_window``
transpose, no scatter), which keeps the backward pass of overlapping windows fast. 16-bit floats
and integers are summed in float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool import _taps
from jaxpool._geometry import PaddingLike, WindowGeometry, check_bool, window_geometry, window_tuple
from jaxpool._layout import Layout, accumulation_dtype, as_pool_input, layout_of, result_dtype
from jaxpool.max import JOINT_FOLD_LIMIT, max_pool


def _is_joint(geom: WindowGeometry) -> bool:
    """Small windows sum all taps in one fused loop; large ones axis by axis (sum, not product, of sizes)."""
    return geom.window_size <= JOINT_FOLD_LIMIT


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def window_sum(x, layout: Layout, geom: WindowGeometry):
    """Sum of each window's in-input elements (zero padding), in ``x``'s dtype."""
    if _is_joint(geom):
        xp = _taps.pad_input(x, layout, geom, 0)
        return sum(_taps.tap(xp, layout, geom, offs) for _, offs in _taps.window_taps(geom))
    for i in range(geom.ndim):
        xp = _taps.pad_input(x, layout, geom, 0, axes=(i,))
        x = sum(_taps.tap(xp, layout, geom, {i: t}) for t in range(geom.window[i]))
    return x


def _window_sum_fwd(x, layout, geom):
    return window_sum(x, layout, geom), None


def _window_sum_bwd(layout, geom, _, g):
    """Each input element receives the cotangents of the windows covering it."""
    if _is_joint(geom):
        return (_taps.unpad(_taps.spread(lambda flat, offs: g, layout, geom), layout, geom),)
    for i in reversed(range(geom.ndim)):
        g = _taps.unpad(_taps.spread(lambda flat, offs, g=g: g, layout, geom, axes=(i,)), layout, geom, axes=(i,))
    return (g,)


window_sum.defvjp(_window_sum_fwd, _window_sum_bwd)


def _prepare(x, window_shape, strides, padding, ceil_mode, data_format, dilation=None):
    x = as_pool_input(x)
    window = window_tuple(window_shape)
    layout = layout_of(x, len(window), data_format)
    geom = window_geometry(layout.spatial_shape(x.shape), window, strides, padding, dilation, ceil_mode)
    return x, layout, geom


def avg_pool(
    x,
    window_shape,
    strides=None,
    padding: PaddingLike = "VALID",
    *,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    data_format: str = "channels_last",
):
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
    """
    check_bool(count_include_pad, "count_include_pad")
    x, layout, geom = _prepare(x, window_shape, strides, padding, ceil_mode, data_format)
    if divisor_override is not None:
        if isinstance(divisor_override, bool) or not isinstance(divisor_override, (int, np.integer)):
            raise TypeError(f"divisor_override must be a positive int or None, got {divisor_override!r}")
        if divisor_override <= 0:
            raise ValueError(f"divisor_override must be a positive int, got {divisor_override}")
    acc = accumulation_dtype(x.dtype)
    total = window_sum(x.astype(acc), layout, geom)
    if divisor_override is not None:
        scale = np.asarray(1.0 / divisor_override, acc)
    else:
        counts = [geom.divisor(i, count_include_pad) for i in range(geom.ndim)]
        if all((c == c[0]).all() for c in counts):
            scale = np.asarray(1.0 / math.prod(int(c[0]) for c in counts), acc)
        else:
            scale = math.prod(layout.along(1.0 / c.astype(np.float64), i) for i, c in enumerate(counts)).astype(acc)
    return (total * scale).astype(result_dtype(x.dtype))


def lp_pool(
    x,
    norm_type: float,
    window_shape,
    strides=None,
    padding: PaddingLike = "VALID",
    *,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
):
    """Power-average (LP) pooling: ``(sum over the window of x**p) ** (1/p)``.

    Sermanet, Chintala & LeCun 2012, "Convolutional neural networks applied to house numbers digit
    classification"; PyTorch's ``lp_pool``. ``p = 1`` is sum pooling, ``p -> inf`` max pooling
    (``norm_type=float("inf")`` calls :func:`jaxpool.max_pool`). Arguments as :func:`jaxpool.avg_pool`.

    Where PyTorch differs: a negative window sum (odd ``p`` with negative inputs) gives the real root
    ``-|S|**(1/p)`` (PyTorch: NaN); a ``ceil_mode`` window that overhangs the input sums only its real
    elements (PyTorch rescales that partial sum by window size / clipped count). Where the sum is 0
    the gradient is 0, not NaN.
    """
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.integer, np.floating)):
        raise TypeError(f"norm_type must be a positive number, got {norm_type!r}")
    if not norm_type > 0:
        raise ValueError(f"norm_type must be positive, got {norm_type}")
    if norm_type == np.inf:
        return max_pool(x, window_shape, strides, padding, ceil_mode=ceil_mode, data_format=data_format)
    x, layout, geom = _prepare(x, window_shape, strides, padding, ceil_mode, data_format)
    acc = accumulation_dtype(x.dtype)
    total = window_sum(jnp.power(x.astype(acc), norm_type), layout, geom)
    magnitude = jnp.abs(total)
    nonzero = magnitude != 0  # NaN included: a NaN window stays NaN, as PyTorch's
    root = jnp.power(jnp.where(nonzero, magnitude, jnp.ones((), acc)), 1.0 / norm_type)
    return jnp.where(nonzero, jnp.sign(total) * root, 0).astype(result_dtype(x.dtype))
