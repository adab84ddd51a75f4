"""Moves test arrays between the reference's canonical layout and every jaxpool layout.

The NumPy reference works on ``(B, C, *spatial)``; jaxpool takes ``(*batch, *spatial, C)``
(channels_last) or ``(*batch, C, *spatial)`` (channels_first) with any number of batch axes.
"""

import math

import numpy as np

FORMATS = ("channels_last", "channels_first")
BATCH_SHAPES = ((), (2,), (2, 1))


def to_layout(x, data_format, batch_shape):
    """``(B, C, *S)`` with ``B == prod(batch_shape)`` -> jaxpool layout."""
    x = np.asarray(x)
    assert x.shape[0] == math.prod(batch_shape)
    if data_format == "channels_last":
        x = np.moveaxis(x, 1, -1)
    return x.reshape(tuple(batch_shape) + x.shape[1:])


def from_layout(y, data_format, batch_shape):
    """Inverse of :func:`to_layout`."""
    y = np.asarray(y)
    y = y.reshape((math.prod(batch_shape),) + y.shape[len(batch_shape) :])
    return np.moveaxis(y, -1, 1) if data_format == "channels_last" else y


def random_input(rng, shape, kind="ties", dtype=np.float32):
    """Floats with many ties (small integers), optionally with NaN / -inf sprinkled in."""
    if kind == "normal":
        return rng.normal(size=shape).astype(dtype)
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    if kind == "special":
        x[rng.random(shape) < 0.05] = np.nan
        x[rng.random(shape) < 0.05] = -np.inf
    return x
