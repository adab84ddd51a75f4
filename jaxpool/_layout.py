"""Where the spatial and channel axes are, and which input dtypes an op accepts.

``channels_last`` (Flax/TPU default): ``(*batch, *spatial, C)``; ``channels_first`` (PyTorch):
``(*batch, C, *spatial)``. ``*batch`` may be empty or several axes. Ops work on the array in place —
no transposes — by pointing windows at the spatial axes.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxpool._validate import check_choice

DATA_FORMATS = ("channels_last", "channels_first")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Axis bookkeeping for an array of rank ``ndim`` with ``n_spatial`` spatial axes."""

    ndim: int
    n_spatial: int
    channels_first: bool

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        start = self.ndim - self.n_spatial - (0 if self.channels_first else 1)
        return tuple(range(start, start + self.n_spatial))

    @property
    def channel_axis(self) -> int:
        return self.ndim - self.n_spatial - 1 if self.channels_first else self.ndim - 1

    @property
    def n_batch(self) -> int:
        return self.ndim - self.n_spatial - 1

    def spatial_shape(self, shape) -> tuple[int, ...]:
        return tuple(shape[a] for a in self.spatial_axes)

    def full(self, per_spatial, fill):
        """Expands an N-tuple over spatial axes to the full rank, ``fill`` elsewhere."""
        values = [fill] * self.ndim
        for axis, v in zip(self.spatial_axes, per_spatial):
            values[axis] = v
        return tuple(values)

    def with_spatial(self, shape, spatial) -> tuple[int, ...]:
        """``shape`` with its spatial sizes replaced by ``spatial``."""
        shape = list(shape)
        for axis, size in zip(self.spatial_axes, spatial):
            shape[axis] = size
        return tuple(shape)

    def along(self, vector: np.ndarray, spatial_index: int) -> np.ndarray:
        """Reshapes a 1-D vector so that it broadcasts along spatial axis ``spatial_index``."""
        shape = [1] * self.ndim
        shape[self.spatial_axes[spatial_index]] = vector.shape[0]
        return vector.reshape(shape)


def layout_of(x, n_spatial: int, data_format: str, rank_from: str = "window_shape") -> Layout:
    """Checks ``data_format`` and that ``x`` has channel + ``n_spatial`` spatial axes.

    ``rank_from`` names the argument whose length gave ``n_spatial``, for the error message.
    """
    check_choice(data_format, DATA_FORMATS, "data_format")
    if x.ndim < n_spatial + 1:
        raise ValueError(
            f"{rank_from} asks for {n_spatial} spatial axes, but x has shape {x.shape}: it needs the spatial axes and a "
            f"channel axis (at least {n_spatial + 1} dimensions, {data_format}); give {rank_from} one entry per spatial "
            "axis, or add a channel axis with x[..., None]"
        )
    return Layout(x.ndim, n_spatial, data_format == "channels_first")


def as_pool_input(x, name: str = "x"):
    """Converts ``x`` to a JAX array and rejects dtypes that cannot be pooled."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} has complex dtype {x.dtype}; pool the real and imaginary parts separately")
    if x.dtype == jnp.bool_:
        raise TypeError(f"{name} has dtype bool; cast it, e.g. x.astype(jnp.int8) or x.astype(jnp.float32)")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"{name} must have a float or integer dtype, got {x.dtype}")
    return x


def accumulation_dtype(dtype) -> np.dtype:
    """Dtype to sum in: float32 for 16-bit floats and integers, the dtype itself otherwise."""
    if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits > 16:
        return np.dtype(dtype)
    return np.dtype(jnp.float32)


def result_dtype(dtype) -> np.dtype:
    """Average-type ops return the input float dtype; integers average to float32 (like ``jnp.mean``)."""
    return np.dtype(dtype) if jnp.issubdtype(dtype, jnp.floating) else np.dtype(jnp.float32)
