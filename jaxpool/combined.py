"""Combined average and max pooling: their mean, their sum, or both side by side.

timm's (Wightman, pytorch-image-models, ``timm.layers.adaptive_avgmax_pool``) ``avgmax`` pooling,
``0.5 * (avg + max)``, and ``catavgmax`` pooling, ``concatenate([avg, max])`` along the channel axis
(average first, so twice the channels), plus the plain sum ``avg + max``. Built on
:func:`jaxpool.avg_pool` / :func:`jaxpool.max_pool` and :func:`jaxpool.global_avg_pool` /
:func:`jaxpool.global_max_pool`, so layouts, padding, masks and backward rules are theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxpool._fusion import results_once
from jaxpool._geometry import PaddingLike, window_tuple
from jaxpool._layout import accumulation_dtype, as_pool_input, layout_of, result_dtype
from jaxpool.adaptive import global_avg_pool, global_max_pool
from jaxpool.avg import avg_pool
from jaxpool.max import max_pool

COMBINES = ("mean", "sum", "cat")


def _pool_input(x, combine):
    """Checks ``combine``; the input to pool: float32 for 16-bit floats and integers unless ``"cat"``,
    so that the mean and sum round once."""
    if not isinstance(combine, str) or combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES} (0.5 * (avg + max), avg + max, or [avg, max]), got {combine!r}")
    x = as_pool_input(x)
    return x, x if combine == "cat" else x.astype(accumulation_dtype(x.dtype))


def _combine(avg, mx, combine: str, channel_axis: int, dtype):
    """``0.5 * (avg + max)``, ``avg + max``, or ``[avg, max]`` along ``channel_axis``, in ``dtype``."""
    if combine == "cat":
        return jnp.concatenate([avg.astype(dtype), mx.astype(dtype)], axis=channel_axis)
    total = avg + mx.astype(avg.dtype)
    return (0.5 * total if combine == "mean" else total).astype(dtype)


@results_once
def avgmax_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    combine: str = "mean",
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    data_format: str = "channels_last",
) -> jax.Array:
    """Average and max pooling over the same windows, combined (timm's avgmax / catavgmax).

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first).
      window_shape, strides, padding, ceil_mode, data_format: as :func:`jaxpool.max_pool`
        (``strides=None`` means the window).
      combine: ``"mean"`` (default): ``0.5 * (avg + max)``, timm's avgmax; ``"sum"``: ``avg + max``;
        ``"cat"``: ``[avg, max]`` concatenated along the channel axis, timm's catavgmax.
      count_include_pad: the average's divisor, as :func:`jaxpool.avg_pool` (the max ignores padding).

    Returns:
      ``(*batch, *out, C)`` (or channels_first), ``2C`` channels for ``"cat"``; ``x``'s float dtype
      (float32 for integers). ``"mean"``/``"sum"`` of 16-bit floats are computed in float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.array([1.0, 3.0]).reshape(1, 1, 2, 1)  # one window of two elements
      >>> jaxpool.avgmax_pool(x, (1, 2))[0, 0, 0, 0]  # (avg 2 + max 3) / 2
      Array(2.5, dtype=float32)
      >>> jaxpool.avgmax_pool(x, (1, 2), combine="cat")[0, 0, 0]  # [avg, max] along channels
      Array([2., 3.], dtype=float32)
    """
    x, src = _pool_input(x, combine)
    avg = avg_pool(
        src, window_shape, strides, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad, data_format=data_format
    )
    mx = max_pool(src, window_shape, strides, padding, ceil_mode=ceil_mode, data_format=data_format)
    channel_axis = layout_of(avg, len(window_tuple(window_shape)), data_format).channel_axis
    return _combine(avg, mx, combine, channel_axis, result_dtype(x.dtype))


@results_once
def global_avgmax_pool(
    x: jax.Array,
    *,
    combine: str = "mean",
    num_spatial_dims: int = 2,
    keepdims: bool = False,
    mask: jax.Array | None = None,
    data_format: str = "channels_last",
) -> jax.Array:
    """Global average and max pooling, combined as :func:`avgmax_pool` (timm's ``avgmax``/``catavgmax`` head).

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)`` with N = ``num_spatial_dims``.
      combine: ``"mean"``, ``"sum"`` or ``"cat"`` as :func:`avgmax_pool`.
      num_spatial_dims, keepdims, mask, data_format: as :func:`jaxpool.global_avg_pool` and
        :func:`jaxpool.global_max_pool` (a fully masked row gives 0 for both parts).

    Returns:
      ``(*batch, C)`` (``(*batch, 2C)`` for ``"cat"``), with size-1 spatial axes where ``keepdims``;
      dtype as :func:`avgmax_pool`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.array([1.0, 3.0]).reshape(1, 1, 2, 1)  # one window of two elements
      >>> jaxpool.global_avgmax_pool(x)  # (avg 2 + max 3) / 2
      Array([[2.5]], dtype=float32)
    """
    x, src = _pool_input(x, combine)
    kw: dict[str, Any] = dict(num_spatial_dims=num_spatial_dims, keepdims=keepdims, mask=mask, data_format=data_format)
    avg = global_avg_pool(src, **kw)
    mx = global_max_pool(src, **kw)
    channel_axis = -1 - int(num_spatial_dims) if keepdims and data_format == "channels_first" else -1
    return _combine(avg, mx, combine, channel_axis, result_dtype(x.dtype))
