"""Generalized-mean (GeM) pooling: a power mean between average (p = 1) and max (p -> inf) pooling.

Built on :func:`jaxpool.avg_pool` / :func:`jaxpool.global_avg_pool` (their window sums and
geometry), so it has their layouts, padding and float32 accumulation for 16-bit floats.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from jaxpool._fusion import results_once
from jaxpool._geometry import PaddingLike, not_a_window, window_tuple
from jaxpool._layout import accumulation_dtype, as_pool_input, result_dtype
from jaxpool._validate import check_num_spatial_dims, real_number
from jaxpool.adaptive import global_avg_pool, global_max_pool
from jaxpool.avg import avg_pool
from jaxpool.max import max_pool


def checked_exponent(p):
    """``p`` must be a real scalar, positive when concrete (a traced, learnable ``p`` cannot be checked)."""
    not_a_window(p, "p", f"gem_pool(x, window_shape={p!r}) or GeMPool(window_shape={p!r})")
    if isinstance(p, (bool, np.bool_, str)) or not (isinstance(p, (int, float, np.number)) or hasattr(p, "dtype")):
        raise TypeError(f"p must be a positive number or a scalar float array, got {p!r}")
    if not (jnp.issubdtype(jnp.result_type(p), jnp.floating) or jnp.issubdtype(jnp.result_type(p), jnp.integer)):
        raise TypeError(f"p must have a real (float or integer) dtype, got {jnp.result_type(p)}")
    if jnp.ndim(p) != 0:
        raise ValueError(f"p must be a scalar, got shape {jnp.shape(p)}")
    if not isinstance(p, Tracer) and not float(p) > 0:
        raise ValueError(f"p must be positive, got {p}")
    return p


def _global_spatial_dims(window_shape, num_spatial_dims):
    """N: ``len(window_shape)``, or ``num_spatial_dims`` (default 2) for global pooling; they must agree."""
    num_spatial_dims = check_num_spatial_dims(num_spatial_dims, allow_none=True)
    if window_shape is None:
        return 2 if num_spatial_dims is None else int(num_spatial_dims)
    n = len(window_tuple(window_shape))
    if num_spatial_dims is not None and num_spatial_dims != n:
        raise ValueError(f"num_spatial_dims={num_spatial_dims} contradicts window_shape {tuple(window_shape)} ({n} dims)")
    return n


@results_once
def gem_pool(
    x: jax.Array,
    p: float | jax.Array = 3.0,
    window_shape: Sequence[int] | None = None,
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    eps: float = 1e-6,
    num_spatial_dims: int | None = None,
    data_format: str = "channels_last",
) -> jax.Array:
    """Generalized-mean pooling: ``(mean over the window of max(x, eps) ** p) ** (1 / p)``.

    Radenović, Tolias & Chum 2018, "Fine-tuning CNN image retrieval with no human annotation" (GeM).
    ``p = 1`` is average pooling of the clamped input, ``p -> inf`` max pooling (``p=float("inf")``
    calls :func:`jaxpool.max_pool` / :func:`jaxpool.global_max_pool` on ``max(x, eps)``).

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first).
      p: the exponent: a positive number, or a scalar JAX array to learn it (``jax.grad`` flows to it).
        A concrete ``p <= 0`` raises ``ValueError``. Large ``p`` overflows float32 for inputs > 1
        (``x ** p`` is formed before the mean, as in the paper).
      window_shape: ``None`` (default) pools globally over ``num_spatial_dims`` spatial axes; else N
        window sizes, with ``strides`` (``None`` = window) and ``padding`` as :func:`jaxpool.avg_pool`.
        Padding is excluded: each window averages its real elements only.
      eps: positive floor applied before the power (keeps ``x ** p`` and its gradients finite).
      num_spatial_dims: number of spatial axes for global pooling (default 2); with ``window_shape``
        it may be left ``None`` (it must equal ``len(window_shape)`` if given).

    Returns:
      Global: ``(*batch, C)``; windowed: ``(*batch, *out, C)`` (or channels_first). The input's float
      dtype (float32 for integers); float16/bfloat16 are computed in float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.full((1, 4, 4, 2), 2.0)
      >>> jaxpool.gem_pool(x, p=1.0)  # global by default; p = 1 is the average
      Array([[2., 2.]], dtype=float32)
      >>> jaxpool.gem_pool(x, 3.0, (2, 2)).shape
      (1, 2, 2, 2)
    """
    x = as_pool_input(x)
    checked_exponent(p)
    real_number(eps, "eps", low=0, low_open=True, high_open=True)
    n = _global_spatial_dims(window_shape, num_spatial_dims)
    acc = accumulation_dtype(x.dtype)
    clamped = jnp.maximum(x.astype(acc), jnp.asarray(eps, acc))
    if not isinstance(p, Tracer) and float(p) == np.inf:
        if window_shape is None:
            return global_max_pool(clamped, num_spatial_dims=n, data_format=data_format).astype(result_dtype(x.dtype))
        return max_pool(clamped, window_shape, strides, padding, data_format=data_format).astype(result_dtype(x.dtype))
    p = jnp.asarray(p).astype(acc)
    powered = jnp.power(clamped, p)
    if window_shape is None:
        mean = global_avg_pool(powered, num_spatial_dims=n, data_format=data_format)
    else:
        mean = avg_pool(powered, window_shape, strides, padding, count_include_pad=False, data_format=data_format)
    return jnp.power(mean, 1 / p).astype(result_dtype(x.dtype))
