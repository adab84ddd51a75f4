"""What ``python -m jaxpool.compare`` compares: one pooling configuration, the default ladders, inputs."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from jaxpool._geometry import WindowGeometry, window_geometry

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Config:
    """One pooling problem: ``op`` (a name in :data:`jaxpool.compare.ops.OPS`) over a channels_last ``(N, *spatial, C)`` input.

    Adaptive ops take the windowed output size as their output size; global ops ignore the window.
    ``padding`` is ``"VALID"``, ``"SAME"``, an int or one int per spatial axis (symmetric, PyTorch's),
    or one ``(low, high)`` pair per spatial axis; :attr:`pads` resolves it to pairs.
    """

    op: str
    shape: tuple[int, ...]
    window: tuple[int, ...]
    strides: tuple[int, ...]
    padding: str | int | tuple = 0
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("shape", "window", "strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if isinstance(self.padding, (list, tuple)):
            object.__setattr__(self, "padding", tuple(tuple(p) if isinstance(p, (list, tuple)) else int(p) for p in self.padding))
        self._validate()

    def _validate(self):
        from jaxpool.compare.ops import OPS

        if self.op not in OPS:
            raise ValueError(f"op must be one of {tuple(OPS)}, got {self.op!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        n = len(self.window)
        if n == 0 or len(self.shape) != n + 2:
            raise ValueError(f"shape must be (N, *spatial, C) with {n} spatial axes for window {self.window}, got {self.shape}")
        if len(self.strides) != n:
            raise ValueError(f"strides {self.strides} must have one entry per window axis ({n})")
        if min(self.shape + self.window + self.strides) < 1:
            raise ValueError(f"shape, window and strides must be positive, got {self.shape}, {self.window}, {self.strides}")
        window_geometry(self.shape[1:-1], self.window, self.strides, self.padding)  # validates padding and fit
        self.out_shape  # noqa: B018 -- the op's own checks (e.g. fractional's output size), eagerly

    @property
    def geometry(self) -> WindowGeometry:
        """The resolved window geometry (no ``ceil_mode``), from jaxpool's one geometry module."""
        return window_geometry(self.shape[1:-1], self.window, self.strides, self.padding)

    @property
    def pads(self) -> tuple[tuple[int, int], ...]:
        """The padding as one ``(low, high)`` pair per spatial axis ("SAME" is TensorFlow's/Flax's)."""
        geometry = self.geometry
        return tuple(zip(geometry.pad_lo, geometry.pad_hi))

    @functools.cached_property
    def out_shape(self) -> tuple[int, ...]:
        """The shape of the op's output (``(N, *out, C)`` for windowed ops), from jaxpool's op."""
        from jaxpool.compare.ops import output_shape

        return output_shape(self)

    @property
    def spec(self):
        """The op's :class:`jaxpool.compare.ops.OpSpec`."""
        from jaxpool.compare.ops import OPS

        return OPS[self.op]

    @property
    def symmetric_padding(self) -> tuple[int, ...] | None:
        """PyTorch-style per-axis padding, or None when some axis pads its two ends differently."""
        pads = self.pads
        return tuple(lo for lo, _ in pads) if all(lo == hi for lo, hi in pads) else None

    @property
    def name(self) -> str:
        """A short label, e.g. ``max 8x32x32x32 3x3/2 p1 float32``."""
        sym = self.symmetric_padding
        if isinstance(self.padding, str):
            pad = self.padding.upper()
        elif sym is not None and len(set(sym)) == 1:
            pad = f"p{sym[0]}"
        else:
            pad = "p" + ",".join(f"{lo}-{hi}" for lo, hi in self.pads)
        strides = "x".join(map(str, self.strides)) if len(set(self.strides)) > 1 else str(self.strides[0])
        shape, window = "x".join(map(str, self.shape)), "x".join(map(str, self.window))
        kind = self.spec.kind
        if kind == "global":
            return f"{self.op} {shape} {self.dtype}"
        if kind == "adaptive":
            return f"{self.op} {shape} -> {'x'.join(map(str, self.geometry.out_shape))} {self.dtype}"
        return f"{self.op} {shape} {window}/{strides}{f' {pad}' if self.spec.padding else ''} {self.dtype}"

    def to_json(self) -> dict:
        """The configuration for JSON (``padding`` resolved to pairs, ``padding_spec`` as given)."""
        return {
            "name": self.name,
            "op": self.op,
            "shape": list(self.shape),
            "window": list(self.window),
            "strides": list(self.strides),
            "padding": [list(p) for p in self.pads],
            "padding_spec": self.padding,
            "dtype": self.dtype,
            "out_shape": list(self.out_shape),
        }

    def tie_probe(self) -> Config:
        """The same op, window and dtype on a two-window input (stride = window, no padding); see :func:`probe_input`."""
        shape = (1, *self.window[:-1], 2 * self.window[-1], 1)
        return dataclasses.replace(self, shape=shape, strides=self.window, padding=0)


def ladder(full: bool = False) -> list[Config]:
    """The default configurations: small float32 ones (quick), or benchmark-sized float32 and bfloat16 ones."""
    if not full:
        geometries = [((8, 32, 32, 32), (2, 2), 0), ((8, 32, 32, 32), (3, 3), 1)]
        return [Config(op, shape, w, (2, 2), p) for op in ("max", "avg") for shape, w, p in geometries]
    geometries = [((32, 56, 56, 64), (2, 2), 0), ((32, 56, 56, 64), (3, 3), 1), ((64, 32, 32, 96), (2, 2), 0)]
    dtypes = ("float32", "bfloat16")
    return [Config(op, shape, w, (2, 2), p, dt) for dt in dtypes for op in ("max", "avg") for shape, w, p in geometries]


def random_inputs(config: Config, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A standard-normal input (``|x| + 0.1`` for ops on non-negative activations) and cotangent, float32, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(config.shape, np.float32)
    if config.spec.positive:
        x = np.abs(x) + np.float32(0.1)
    return x, rng.standard_normal(config.out_shape, np.float32)


def probe_input(config: Config) -> tuple[np.ndarray, np.ndarray]:
    """For :meth:`Config.tie_probe`: window 0 holds equal values (a tie), window 1 distinct values and one NaN.

    In window 1 the best element (largest for max, smallest otherwise) comes first in row-major order,
    the others get worse, and the NaN sits at flat position ``n // 2``: a scan that lets the NaN win a
    comparison and then lose the next one ends on neither the NaN nor the best element.
    The cotangent is all ones.
    """
    n = math.prod(config.window)
    tie = np.ones(config.window)
    ranks = np.arange(n, dtype=np.float64)
    distinct = (n - 1 - ranks if config.op == "max" else ranks).reshape(config.window)
    distinct.flat[n // 2] = np.nan
    x = np.concatenate([tie, distinct], axis=-1).astype(np.float32)[None, ..., None]
    return x, np.ones(config.out_shape, np.float32)


def as_float64(a) -> np.ndarray:
    """Any array (JAX, NumPy, 16-bit floats included) as float64 NumPy."""
    return np.asarray(np.asarray(a).astype(np.float64))


def rounded(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` and back to float64: what every implementation actually receives."""
    return as_float64(jnp.asarray(a, dtype))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One implementation ready for one configuration, as every framework runner returns it.

    ``y``/``dx``: its forward output and input gradient on the compared input (float64, NHWC).
    ``thunks``: ``{"fwd": ..., "fwd_bwd": ...}``, each running one blocking call.
    ``stats``: compile-side measurements (``hlo``, ``compile_s``, ``memory``, ``residual_bytes``),
    None where they do not apply (PyTorch).
    """

    y: np.ndarray
    dx: np.ndarray
    thunks: dict[str, Callable[[], object]] = dataclasses.field(default_factory=dict)
    stats: dict | None = None
