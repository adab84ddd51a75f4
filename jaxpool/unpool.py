"""Max unpooling: the partial inverse of max pooling (Zeiler & Fergus 2014, "Visualizing and
understanding convolutional networks"; PyTorch's ``max_unpool``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from jaxpool._fusion import results_once
from jaxpool._geometry import int_tuple
from jaxpool._layout import as_pool_input, layout_of
from jaxpool._validate import check_addressable


@results_once
def max_unpool(y: jax.Array, indices: jax.Array, output_size: Sequence[int], *, data_format: str = "channels_last") -> jax.Array:
    """Writes pooled values back to the positions their indices name; zeros elsewhere.

    Args:
      y: pooled values ``(*batch, *pooled, C)`` (or channels_first); N = ``len(output_size)``.
      indices: integer array of ``y``'s shape, indices over the output's spatial volume per
        (batch, channel), as returned by ``max_pool(..., return_indices=True)``.
      output_size: the N spatial sizes of the result (the pooled input's spatial shape).
      data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
      ``(*batch, *output_size, C)`` (or channels_first). Where indices repeat (overlapping windows)
      one of the values is kept, as in PyTorch; the gradient then reaches only the kept value (the
      derivative of this forward), where PyTorch's reaches every copy. Out-of-range indices raise ``ValueError`` when
      ``indices`` is concrete (a constant too, under ``jit``); traced ones out of range are dropped.
      Empty batch or channel axes give an empty result. Differentiable in ``y``.
    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # (batch, H, W, C), channels_last
      >>> y, idx = jaxpool.max_pool(x, (2, 2), return_indices=True)
      >>> jaxpool.max_unpool(y, idx, (4, 4))[0, ..., 0]
      Array([[ 0.,  0.,  0.,  0.],
             [ 0.,  5.,  0.,  7.],
             [ 0.,  0.,  0.,  0.],
             [ 0., 13.,  0., 15.]], dtype=float32)
    """
    y = as_pool_input(y, "y")
    if not isinstance(output_size, (tuple, list)) or len(output_size) == 0:
        raise TypeError(f"output_size must be a tuple of spatial sizes, e.g. (28, 28); got {output_size!r}")
    out_shape = int_tuple(output_size, len(output_size), "output_size")
    layout = layout_of(y, len(out_shape), data_format, "output_size")
    check_addressable(layout.with_spatial(y.shape, out_shape), "output_size", output_size)
    concrete = None if isinstance(indices, Tracer) else np.asarray(indices)  # under jit jnp.asarray traces it
    indices = jnp.asarray(indices)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"indices must have an integer dtype, got {indices.dtype}")
    if indices.shape != y.shape:
        raise ValueError(f"indices must have y's shape {y.shape}, got {indices.shape}")
    volume = math.prod(out_shape)
    if concrete is not None:
        if concrete.size and (concrete.min() < 0 or concrete.max() >= volume):
            raise ValueError(
                f"indices must lie in [0, {volume}) for output_size {out_shape}; got range "
                f"[{concrete.min()}, {concrete.max()}] — pass the input's spatial shape as output_size"
            )
    # (*batch, C, *pooled) with the pooled positions flattened per (batch, channel).
    if not layout.channels_first:
        y, indices = (jnp.moveaxis(a, -1, layout.n_batch) for a in (y, indices))
    lead = y.shape[: layout.n_batch + 1]
    pooled = math.prod(y.shape[layout.n_batch + 1 :])
    values = y.reshape(lead + (pooled,))  # no -1: lead may hold a 0 (empty batch or channels)
    flat = indices.reshape(lead + (pooled,))
    # One scatter per (batch, channel), vmapped once per leading axis: they stay batch axes of the
    # scatter, so an input sharded over batch or channels is unpooled shard by shard, with no
    # collective (flattening batch and channels into one axis made XLA gather a channel sharding).
    # Negative indices are out of range too: no NumPy-style wrap-around (-1 would write the last element).
    scatter_row = lambda v, i: jnp.zeros((volume,), v.dtype).at[i].set(v, mode="drop", wrap_negative_indices=False)  # noqa: E731
    for _ in lead:
        scatter_row = jax.vmap(scatter_row)
    out = scatter_row(values, flat)
    out = out.reshape(lead + out_shape)
    return out if layout.channels_first else jnp.moveaxis(out, layout.n_batch, -1)
