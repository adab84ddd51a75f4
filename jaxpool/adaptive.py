"""Adaptive, global and spatial pyramid pooling: a fixed output size for any input size.

Adaptive bins are PyTorch's: bin ``i`` of ``out`` over ``n`` inputs spans
``[floor(i*n/out), ceil((i+1)*n/out))`` — bins may overlap, and ``out > n`` repeats inputs. When
every axis divides evenly the bins are a plain tiling pool (:func:`jaxpool.max_pool` /
:func:`jaxpool.avg_pool`, with their fast backward rules). Otherwise averages are one small
averaging matrix per axis, and maxima an axis-by-axis fold over each bin's elements.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxpool import _taps
from jaxpool._geometry import adaptive_bins, adaptive_output_shape, int_tuple
from jaxpool._layout import Layout, accumulation_dtype, as_pool_input, layout_of, result_dtype
from jaxpool._validate import check_addressable, check_bool, check_choice, check_num_spatial_dims
from jaxpool.avg import avg_pool
from jaxpool.max import _extremum_pool, _fill_value, flat_indices


def _resolve(x, output_size, data_format):
    if not isinstance(output_size, Sequence) or isinstance(output_size, str):
        raise TypeError(
            f"output_size must be a tuple with one size (or None) per spatial dimension, e.g. (7, 7); got {output_size!r}"
        )
    if len(output_size) == 0:
        raise ValueError("output_size must name at least one spatial dimension, got ()")
    x = as_pool_input(x)
    layout = layout_of(x, len(output_size), data_format, "output_size")
    in_shape = layout.spatial_shape(x.shape)
    out_shape = adaptive_output_shape(in_shape, output_size)
    check_addressable(layout.with_spatial(x.shape, out_shape), "output_size", output_size)
    even = all(n % o == 0 for n, o in zip(in_shape, out_shape))
    window = tuple(n // o for n, o in zip(in_shape, out_shape)) if even else None
    return x, layout, in_shape, out_shape, window


def _bin_taps(x, layout: Layout, i: int, size: int, out: int):
    """Bins along spatial axis ``i`` as taps: tap ``t`` holds each bin's ``t``-th element.

    Yields ``(values, inside, positions)``; bins shorter than ``t + 1`` repeat their last element
    and are marked outside by the static mask ``inside`` (``None`` when every bin is long enough).
    """
    starts, ends = adaptive_bins(size, out)
    lengths = ends - starts
    for t in range(int(lengths.max())):
        positions = starts + np.minimum(t, lengths - 1)
        inside = None if (t < lengths).all() else layout.along(t < lengths, i)
        yield jnp.take(x, positions, axis=layout.spatial_axes[i]), inside, positions


def adaptive_avg_pool(x, output_size, *, data_format: str = "channels_last"):
    """Average over PyTorch's adaptive bins so that the spatial output is ``output_size``.

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)``; N = ``len(output_size)``.
      output_size: N positive sizes; ``None`` keeps that input size. May exceed the input size.
      data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
      ``(*batch, *output_size, C)`` (or channels_first), float dtype as :func:`jaxpool.avg_pool`.
    """
    x, layout, in_shape, out_shape, window = _resolve(x, output_size, data_format)
    if window is not None:
        return avg_pool(x, window, data_format=data_format)
    acc = accumulation_dtype(x.dtype)
    y = x.astype(acc)
    for i in range(layout.n_spatial):
        total = sum(
            v if inside is None else jnp.where(inside, v, 0)
            for v, inside, _ in _bin_taps(y, layout, i, in_shape[i], out_shape[i])
        )
        starts, ends = adaptive_bins(in_shape[i], out_shape[i])
        y = total / layout.along((ends - starts).astype(acc), i)
    return y.astype(result_dtype(x.dtype))


def _uneven_max(x, layout: Layout, in_shape, out_shape):
    """Axis-by-axis fold over uneven bins (innermost axis first, so row-major first maxima win)."""
    index = None
    for i in reversed(range(len(in_shape))):
        stride = math.prod(in_shape[i + 1 :])
        axis = layout.spatial_axes[i]
        carried = (lambda pos: 0) if index is None else (lambda pos, index=index, axis=axis: jnp.take(index, pos, axis=axis))
        candidates = [
            (values, inside, layout.along(pos * stride, i) + carried(pos))
            for values, inside, pos in _bin_taps(x, layout, i, in_shape[i], out_shape[i])
        ]
        x, index = _taps.select_fold(candidates, "max", jnp.int32)
    return x, index


def adaptive_max_pool(x, output_size, *, return_indices: bool = False, data_format: str = "channels_last"):
    """Maximum over PyTorch's adaptive bins (ties to the first, NaN wins), like :func:`adaptive_avg_pool`.

    With ``return_indices``, also int32 indices over the input's spatial volume, as
    :func:`jaxpool.max_pool`. Evenly dividing sizes use max_pool's scatter-free backward rule; uneven
    bins are gathered, so their gradient is a scatter-add.
    """
    check_bool(return_indices, "return_indices")
    x, layout, in_shape, out_shape, window = _resolve(x, output_size, data_format)
    if window is not None:
        y, offset, layout, geom = _extremum_pool(x, window, None, "VALID", None, False, data_format, "argmax", "max")
        index = flat_indices(offset, layout, geom) if return_indices else None
    else:
        y, index = _uneven_max(x, layout, in_shape, out_shape)
    return (y, index) if return_indices else y


def _global_layout(x, num_spatial_dims, data_format, keepdims=False):
    """Checks the global ops' arguments; an empty spatial axis is refused (PyTorch's adaptive max pools
    refuse it too; a mean over nothing would be a silent NaN)."""
    n = check_num_spatial_dims(num_spatial_dims)
    check_bool(keepdims, "keepdims")
    x = as_pool_input(x)
    layout = layout_of(x, n, data_format, "num_spatial_dims")
    if 0 in layout.spatial_shape(x.shape):
        raise ValueError(
            f"x has an empty spatial axis (shape {x.shape}, spatial {layout.spatial_shape(x.shape)} with "
            f"num_spatial_dims={n}, {data_format}); global pooling needs at least one position"
        )
    return x, layout


def _channel_mask(mask, x, layout: Layout):
    """Validates a boolean ``(*batch, *spatial)`` mask and inserts the channel axis; ``None`` passes."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be a boolean array over (*batch, *spatial) positions, got dtype {mask.dtype}")
    positions = tuple(d for axis, d in enumerate(x.shape) if axis != layout.channel_axis)
    try:
        mask = jnp.broadcast_to(mask, positions)
    except ValueError:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to x's (*batch, *spatial) positions {positions}"
        ) from None
    return jnp.expand_dims(mask, layout.channel_axis)


def global_avg_pool(x, *, num_spatial_dims: int = 2, keepdims: bool = False, data_format: str = "channels_last", mask=None):
    """Mean over all spatial positions: ``(*batch, *spatial, C) -> (*batch, C)``.

    Network in Network's classifier (Lin, Chen & Yan 2013). ``keepdims`` keeps size-1 spatial axes.
    16-bit floats and integers are accumulated in float32.

    ``mask``: optional boolean ``(*batch, *spatial)`` (broadcastable) marking real positions, for
    variable-length inputs (padded sequences, point sets): the mean of the real positions only; a row
    with none gives 0 (never NaN), and masked values — even NaN — never reach the result or gradient.
    """
    x, layout = _global_layout(x, num_spatial_dims, data_format, keepdims)
    acc = accumulation_dtype(x.dtype)
    mask = _channel_mask(mask, x, layout)
    if mask is None:
        y = jnp.mean(x, axis=layout.spatial_axes, dtype=acc, keepdims=keepdims)
    else:
        total = jnp.sum(jnp.where(mask, x.astype(acc), 0), axis=layout.spatial_axes, keepdims=keepdims)
        count = jnp.sum(mask, axis=layout.spatial_axes, keepdims=keepdims, dtype=acc)
        y = jnp.where(count > 0, total / jnp.maximum(count, 1), 0)
    return y.astype(result_dtype(x.dtype))


def global_max_pool(x, *, num_spatial_dims: int = 2, keepdims: bool = False, data_format: str = "channels_last", mask=None):
    """Maximum over all spatial positions, with :func:`jaxpool.max_pool`'s tie, NaN and gradient rules.

    ``mask`` as in :func:`global_avg_pool` (e.g. VoxelNet's per-voxel max over its points): the
    maximum of the real positions; a row with none gives 0, never ``-inf``, and a zero gradient.
    """
    x, layout = _global_layout(x, num_spatial_dims, data_format, keepdims)
    mask = _channel_mask(mask, x, layout)
    masked = x if mask is None else jnp.where(mask, x, jnp.asarray(_fill_value(x.dtype, "max"), x.dtype))
    window = layout.spatial_shape(x.shape)
    y = _extremum_pool(masked, window, None, "VALID", None, False, data_format, "argmax", "max")[0]
    if mask is not None:
        y = jnp.where(jnp.any(mask, axis=layout.spatial_axes, keepdims=True), y, jnp.zeros((), y.dtype))
    return y if keepdims else jnp.squeeze(y, axis=layout.spatial_axes)


def spatial_pyramid_pool(
    x,
    levels=(1, 2, 4),
    *,
    method: str = "max",
    num_spatial_dims: int = 2,
    data_format: str = "channels_last",
):
    """Spatial pyramid pooling (He, Zhang, Ren & Sun 2014, SPP-net): fixed-length features from any size.

    Each level ``l`` pools the input adaptively to ``l`` bins per spatial axis (an int, or a tuple of
    N bin counts); the levels are flattened and concatenated in order.

    Args:
      x: ``(*batch, *spatial, C)`` or ``(*batch, C, *spatial)`` with N = ``num_spatial_dims``.
      levels: non-empty sequence of bin counts.
      method: ``"max"`` (the paper's) or ``"avg"``.

    Returns:
      ``(*batch, C * sum(prod(level)))``. channels_last flattens each level bin-major/channel-minor,
      channels_first channel-major.
    """
    check_choice(method, ("max", "avg"), "method")
    if not isinstance(levels, Sequence) or isinstance(levels, str) or len(levels) == 0:
        raise ValueError(f"levels must be a non-empty sequence of bin counts, e.g. (1, 2, 4); got {levels!r}")
    x, layout = _global_layout(x, num_spatial_dims, data_format)
    pool = adaptive_max_pool if method == "max" else adaptive_avg_pool
    n = layout.n_spatial
    features = []
    for level in levels:
        size = int_tuple(level, n, "levels")
        check_addressable(layout.with_spatial(x.shape, size), "levels", levels)
        pooled = pool(x, size, data_format=data_format)
        batch = pooled.shape[: layout.n_batch]
        features.append(pooled.reshape(batch + (math.prod(pooled.shape[layout.n_batch :]),)))  # no -1: batch may be 0
    return jnp.concatenate(features, axis=-1)
