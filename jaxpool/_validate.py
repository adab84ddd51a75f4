"""Checks of every user-facing argument's type and range, shared by all public ops.

One place decides what a flag, a size, a count of spatial axes, a probability or a choice may be,
and words the error: each message names the argument as the user wrote it and says the fix. The
checks run on Python values and static shapes only, so errors surface at trace time, eagerly and
under ``jit`` alike. Geometry that depends on the input's shape (output sizes, padding against the
window) is checked in :mod:`jaxpool._geometry`, with these helpers.

* Flags are ``bool`` (or ``numpy.bool_``): a string such as ``"False"`` would be truthy, an array
  cannot be branched on.
* Sizes are Python or NumPy integers (or concrete integer JAX scalars), never ``bool``, float or a
  traced value, and fit in int64.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any, TypeGuard

import numpy as np
from jax.core import Tracer

INT64_MAX = 2**63 - 1
# The most elements an array may have: its byte size (8-byte elements at most) must fit in int64, as
# XLA and NumPy require.
MAX_ELEMENTS = INT64_MAX // 8


def is_sequence(value) -> TypeGuard[Sequence[Any]]:
    """A tuple/list of per-axis entries (a string is not one)."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def check_bool(value, name: str) -> None:
    """A flag argument must be a Python or NumPy bool (not a string, a traced array, or 0/1)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def as_int(value, name: str) -> int:
    """One integer entry of argument ``name``: an int that fits in int64 (bools, floats and traced values refused)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must contain integers, got the bool {value!r}; write the size, e.g. 2")
    if isinstance(value, Tracer):
        raise TypeError(f"{name} must contain static Python ints (they fix array shapes), got a traced value {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must contain integers, got {value!r} ({type(value).__name__})") from None
    if abs(result) > INT64_MAX:
        raise ValueError(f"{name} entries must fit in int64 (below 2**63), got {result}")
    return result


def int_tuple(value, n: int, name: str, *, minimum: int = 1, allow_scalar: bool = True) -> tuple[int, ...]:
    """Normalises an int or a length-``n`` sequence of ints to a tuple, checking ``>= minimum``."""
    if is_sequence(value):
        if len(value) != n:
            raise ValueError(f"{name} must have one entry per spatial dimension ({n}), got {tuple(value)!r}")
        result = tuple(as_int(v, name) for v in value)
    elif allow_scalar and not isinstance(value, str):
        result = (as_int(value, name),) * n
    else:
        raise TypeError(f"{name} must be a sequence of {n} ints, got {value!r}")
    if any(v < minimum for v in result):
        raise ValueError(f"{name} entries must be >= {minimum}, got {result!r}")
    return result


def window_tuple(window_shape, name: str = "window_shape") -> tuple[int, ...]:
    """Validates a window: a non-empty sequence of positive ints (its length is N)."""
    if not is_sequence(window_shape):
        raise TypeError(f"{name} must be a tuple of ints, one per spatial dimension, e.g. (2, 2); got {window_shape!r}")
    if len(window_shape) == 0:
        raise ValueError(f"{name} must name at least one spatial dimension, got ()")
    return int_tuple(window_shape, len(window_shape), name)


def check_num_spatial_dims(value, *, allow_none: bool = False) -> int | None:
    """``num_spatial_dims``: a positive int (or ``None`` where the op can infer it)."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"num_spatial_dims must be a positive int{extra} (the number of spatial axes), got {value!r}")
    return int(value)


def check_choice(value, choices: Sequence[str], name: str) -> str:
    """A string option that must be one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def real_number(value, name: str, *, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False):
    """A real Python/NumPy number (not bool, not NaN) in the range ``low..high``; ends open as flagged."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    number = float(value)
    above = number > low if low_open else number >= low
    below = number < high if high_open else number <= high
    if not (above and below):  # NaN fails both
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def check_unit_samples(samples, name: str = "samples") -> None:
    """Concrete uniforms must be finite and in ``[0, 1)`` (traced ones cannot be inspected)."""
    if isinstance(samples, Tracer):
        return
    values = np.asarray(samples)
    if values.dtype.kind not in "fiu":
        return  # the caller rejects the dtype
    if values.size and not ((values >= 0) & (values < 1)).all():  # NaN fails too
        bad = values[~((values >= 0) & (values < 1))].ravel()[0]
        raise ValueError(f"{name} must be uniforms in [0, 1) (finite), got a value {bad!r}; draw them with jax.random.uniform")


def check_addressable(shape: Sequence[int], name: str, value) -> None:
    """The array shape that argument ``name`` (``value``) leads to must be addressable (byte size in int64).
    Symbolic sizes (``jax.export``) are left out: only the concrete ones can be checked."""
    shape = [d for d in shape if isinstance(d, (int, np.integer))]
    if math.prod(shape) > MAX_ELEMENTS or any(d > MAX_ELEMENTS for d in shape):
        raise ValueError(
            f"{name}={value!r} leads to an array of shape {tuple(shape)}, more elements than an array can address "
            f"(2**60); use a smaller {name}"
        )
