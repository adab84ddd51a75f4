"""Median pooling: each window's (lower) median, by sorting the window's taps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxpool import _taps
from jaxpool._fusion import results_once
from jaxpool._geometry import PaddingLike
from jaxpool.avg import _prepare
from jaxpool.max import _fill_value


@results_once
def median_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    data_format: str = "channels_last",
) -> jax.Array:
    """Windowed median (a median filter when ``strides=1``): robust to outliers and salt-and-pepper noise.

    The running median of Tukey 1974 ("Nonlinear (nonsuperposable) methods for smoothing data"), in
    N-d as in Huang, Yang & Tang 1979 ("A fast two-dimensional median filtering algorithm"). Rules:

    * Even counts take the **lower** median (the ``(n - 1) // 2``-th smallest), like ``torch.median``,
      so the result is always an input element (exact in any dtype; integers stay integers).
    * **Padding is excluded**: a window partly in padding takes the median of its real elements
      (no zero or reflected values are invented), so ``padding`` only changes which windows exist.
    * NaN propagates (as ``torch.median``): a window holding a NaN gives NaN.
    * The gradient goes to the median element; among equal values, to the one at the median rank of
      a stable sort (window scan order breaks ties); in a NaN window, to its first NaN.

    The window's elements are stacked on a new axis and sorted: ``window_size`` x output memory, fine
    for small windows.

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first).
      window_shape, strides, padding: as :func:`jaxpool.max_pool` (``strides=None`` = window).

    Returns:
      ``(*batch, *out, C)`` (or channels_first), ``x``'s dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.array([1.0, 100.0, 2.0, 4.0, 3.0, 5.0]).reshape(1, 1, 6, 1)
      >>> jaxpool.median_pool(x, (1, 3))[0, 0, :, 0]  # the outlier 100 is gone
      Array([2., 4.], dtype=float32)
    """
    x, layout, geom = _prepare(x, window_shape, strides, padding, False, data_format)
    # Padding sorts last (+inf / the integer maximum), so each window's real elements come first.
    xp = _taps.pad_input(x, layout, geom, _fill_value(x.dtype, "min"))
    stacked = jnp.stack([_taps.tap(xp, layout, geom, offs) for _, offs in _taps.window_taps(geom)], axis=-1)
    counts = math.prod(layout.along(geom.divisor(i, count_include_pad=False), i) for i in range(geom.ndim))
    rank = jnp.asarray((counts - 1) // 2, jnp.int32)
    if jnp.issubdtype(x.dtype, jnp.floating):
        nans = jnp.isnan(stacked).sum(axis=-1, dtype=jnp.int32)
        rank = jnp.where(nans > 0, geom.window_size - nans, rank)  # NaNs sort after everything
    order = jnp.argsort(stacked, axis=-1, stable=True)
    pick = jnp.take_along_axis(order, jnp.broadcast_to(rank, order.shape[:-1])[..., None], axis=-1)
    return jnp.take_along_axis(stacked, pick, axis=-1)[..., 0]
