"""SoftPool: each window's softmax-weighted average of its elements.

Stability: ``sum(e^x * x) / sum(e^x)`` is unchanged by subtracting any constant per window, so each
window subtracts its own maximum (its largest weight is then exactly 1: no overflow, and no 0 / 0
from underflow). A single global maximum is not enough: a window whose values lie ~90 below it
(float32) underflows to 0 / 0. Per-window maxima differ between overlapping windows, so they cannot
be subtracted from the input once; instead the window is folded one spatial axis at a time over
:mod:`jaxpool._taps`, each partial window carrying ``(max, sum e^(x - max), sum x e^(x - max))``
and rescaling to the larger maximum when merged (the "online softmax" of Milakov & Gimelshein 2018).
That is separable (sum, not product, of the window sizes in taps) and works for any window. The
maxima carry ``stop_gradient``: the result does not depend on them, so the gradient stays exact.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp
from jax import lax

from jaxpool import _taps
from jaxpool._fusion import results_once
from jaxpool._geometry import PaddingLike, WindowGeometry
from jaxpool._layout import Layout, accumulation_dtype, result_dtype
from jaxpool.avg import _prepare


def _merge_axis(partial, layout: Layout, geom: WindowGeometry, i: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Merges partial windows ``(top, weight, weighted)`` along spatial axis ``i`` into windows.

    Padding is ``(-inf, 0, 0)``: it contributes no weight. Every window holds a real element (the
    geometry guarantees it), so each merged maximum is finite for finite input.
    """
    fills = (-jnp.inf, 0, 0)
    padded = [_taps.pad_input(a, layout, geom, fill, axes=(i,)) for a, fill in zip(partial, fills)]
    taps = [[_taps.tap(a, layout, geom, {i: t}) for a in padded] for t in range(geom.window[i])]
    top = lax.stop_gradient(functools.reduce(jnp.maximum, [t[0] for t in taps]))
    scales = [jnp.exp(t[0] - top) for t in taps]
    # cast: window[i] >= 1 terms, so sum() never returns its start value, the int 0.
    weight = cast(jax.Array, sum(s * t[1] for s, t in zip(scales, taps)))
    weighted = cast(jax.Array, sum(s * t[2] for s, t in zip(scales, taps)))
    return top, weight, weighted


@results_once
def soft_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    data_format: str = "channels_last",
) -> jax.Array:
    """SoftPool: ``sum_i softmax(x_window)_i * x_i = sum(e^x * x) / sum(e^x)`` over each window.

    Stergiou, Poppe & Kalliatakis 2021, "Refining activation downsampling with SoftPool". Between
    average pooling (flat inputs) and max pooling (one dominant element); every element receives
    gradient, ``dy/dx_i = softmax_i * (1 + x_i - y)``.

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first).
      window_shape, strides, padding: as :func:`jaxpool.avg_pool` (``strides=None`` = window).
        Padding is excluded: it has zero weight, so a window partly in padding is the SoftPool of
        its real elements.

    Returns:
      ``(*batch, *out, C)`` (or channels_first) in ``x``'s float dtype (float32 for integers);
      float16/bfloat16 are computed in float32. NaN propagates; ``±inf`` inputs give NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.array([1.0, 3.0]).reshape(1, 1, 2, 1)  # one window of two elements
      >>> round(float(jaxpool.soft_pool(x, (1, 2))[0, 0, 0, 0]), 4)  # (e*1 + e**3*3) / (e + e**3)
      2.7616
    """
    x, layout, geom = _prepare(x, window_shape, strides, padding, False, data_format)
    values = x.astype(accumulation_dtype(x.dtype))
    partial = (values, jnp.ones_like(values), values)
    for i in range(geom.ndim):
        partial = _merge_axis(partial, layout, geom, i)
    _, weight, weighted = partial
    return (weighted / weight).astype(result_dtype(x.dtype))
