"""Every op ``python -m jaxpool.compare`` knows: how jaxpool and each peer that has the op compute it.

One :class:`OpSpec` per op. Its peers are ``jaxpool[xla]`` (``backward="xla"``: max/min only),
``flax`` (``flax.linen``'s ``max_pool`` / ``avg_pool`` / ``min_pool``), ``reduce_window`` (the
textbook ``lax.reduce_window`` formulation, differentiated by JAX) and ``torch`` (``torch.nn.functional``
where PyTorch has the op); a builder returns None where a peer lacks the op or this configuration.
``window`` is the op's float64 definition over one window (:mod:`jaxpool.compare.windows`), or None
where the compare tool has no reference (errors are then reported as null). Random ops run with
fixed randomness (``deterministic=True``, or given samples); learned ops with fixed weights.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxpool
from jaxpool.compare import windows
from jaxpool.compare.config import Config

Pool = Callable[[jax.Array], jax.Array]
Builder = Callable[[Config], "Pool | None"]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """How to compute one op: jaxpool's call, its peers' (None: the peer lacks it) and its float64 reference."""

    jaxpool: Builder
    kind: str = (
        "window"  # "window" (window, strides, padding), "adaptive" (output size = the window's), "global", "blur", "other"
    )
    window: Callable | None = None
    xla: Builder | None = None
    flax: Builder | None = None
    reduce_window: Builder | None = None
    torch: Callable | None = None  # (torch, config) -> pool on NCHW tensors, or None
    positive: bool = False  # inputs |x| + 0.1 (ops defined on non-negative activations)
    padding: bool = True  # whether the op takes the configuration's padding

    @property
    def probed(self) -> bool:
        """Whether the tie / NaN gradient probe applies (windowed ops with a reference)."""
        return self.kind == "window" and self.window is not None and self.padding


def _rw(x, init, reducer, c: Config, pads=None):
    """``lax.reduce_window`` over the spatial axes of channels_last ``x`` with ``c``'s window."""
    pads = c.pads if pads is None else pads
    window, strides = (1, *c.window, 1), (1, *c.strides, 1)
    return lax.reduce_window(x, np.array(init, x.dtype), reducer, window, strides, ((0, 0), *pads, (0, 0)))


def _rw_sum(x, c: Config):
    return _rw(x, 0.0, lax.add, c)


def _rw_max(x, c: Config):
    return _rw(x, -np.inf, lax.max, c)


def _rw_count(x, c: Config):
    """Real (unpadded) elements per window."""
    return _rw_sum(jnp.ones_like(x), c)


def _size(c: Config):
    return 1.0 / math.prod(c.window)


def _spatial(c: Config) -> tuple[int, ...]:
    return c.shape[1:-1]


def _out_spatial(c: Config) -> tuple[int, ...]:
    """The windowed output size, used as adaptive pooling's output size."""
    return c.geometry.out_shape


def weights(c: Config) -> np.ndarray | None:
    """The fixed weights: gated's gate, tree's two leaves and gate (seeded by the window), blur's binomial filter."""
    if c.op == "blur":
        return functools.reduce(np.multiply.outer, [windows.binomial(windows.BLUR_SIZE)] * len(c.window))
    if c.op not in ("gated", "tree"):
        return None
    rng = np.random.default_rng(sum(c.window))
    return rng.normal(0.0, 0.5, (1 if c.op == "gated" else 3, *c.window))


def samples(c: Config) -> np.ndarray:
    """Fractional max pooling's fixed samples ``u`` in ``[0, 1)``, ``(N, C, n)`` as PyTorch's ``_random_samples``."""
    return np.random.default_rng(0).uniform(0.0, 1.0, (c.shape[0], c.shape[-1], len(c.window))).astype(np.float32)


def _torch_nd(torch, name: str, c: Config):
    """``torch.nn.functional.<name>{n}d`` or None beyond 3-d / asymmetric padding."""
    n = len(c.window)
    if n > 3 or c.symmetric_padding is None:
        return None
    return getattr(torch.nn.functional, f"{name}{n}d", None)


def _torch_windowed(name: str, negate: bool = False):
    """PyTorch's windowed pooling (``negate``: min pooling as ``-max_pool(-x)``)."""

    def build(torch, c: Config):
        fn = _torch_nd(torch, name, c)
        if fn is None:
            return None
        if negate:
            return lambda x: -fn(-x, c.window, c.strides, c.symmetric_padding)
        return lambda x: fn(x, c.window, c.strides, c.symmetric_padding)

    return build


def _torch_lp(torch, c: Config):
    fn, pads = _torch_nd(torch, "lp_pool", c), c.symmetric_padding
    if fn is None or pads is None or any(pads):
        return None  # PyTorch's lp_pool has no padding
    return lambda x: fn(x, windows.LP_P, c.window, c.strides)


def _torch_avgmax(torch, c: Config):
    avg, mx = _torch_nd(torch, "avg_pool", c), _torch_nd(torch, "max_pool", c)
    if avg is None or mx is None:
        return None
    return lambda x: (avg(x, c.window, c.strides, c.symmetric_padding) + mx(x, c.window, c.strides, c.symmetric_padding)) / 2


def _torch_adaptive(name: str, size=None):
    def build(torch, c: Config):
        n = len(c.window)
        fn = getattr(torch.nn.functional, f"{name}{n}d", None) if n <= 3 else None
        out = (1,) * n if size == "global" else _out_spatial(c)
        return None if fn is None else lambda x: fn(x, out)

    return build


def _torch_global_avgmax(torch, c: Config):
    avg, mx = _torch_adaptive("adaptive_avg_pool", "global")(torch, c), _torch_adaptive("adaptive_max_pool", "global")(torch, c)
    return None if avg is None or mx is None else lambda x: (avg(x) + mx(x)) / 2


def _torch_fractional(torch, c: Config):
    n = len(c.window)
    fn = getattr(torch.nn.functional, f"fractional_max_pool{n}d", None) if n in (2, 3) else None
    if fn is None:
        return None
    u = torch.from_numpy(samples(c))
    return lambda x: fn(x, c.window, output_size=_out_spatial(c), _random_samples=u.to(x.dtype))


def _torch_spp(torch, c: Config):
    """Levels 1, 2, 4 of adaptive max pooling, each flattened bin-major / channel-minor (jaxpool's channels_last order)."""
    if len(c.window) != 2:
        return None
    pool = torch.nn.functional.adaptive_max_pool2d
    return lambda x: torch.cat([pool(x, level).permute(0, 2, 3, 1).flatten(1) for level in (1, 2, 4)], dim=1)


def _torch_unpool(torch, c: Config):
    pool, unpool = _torch_nd(torch, "max_pool", c), _torch_nd(torch, "max_unpool", c)
    if pool is None or unpool is None:
        return None
    return lambda x: unpool(*pool(x, c.window, c.strides, return_indices=True), c.window, c.strides, output_size=_spatial(c))


def _jaxpool_extremum(name: str, backward: str) -> Builder:
    fn = getattr(jaxpool, f"{name}_pool")
    return lambda c: lambda x: fn(x, c.window, c.strides, c.pads, backward=backward)


def _flax(name: str) -> Builder | None:
    """``flax.linen.<name>_pool`` (None where this Flax lacks it); strides always explicit (Flax's default is 1)."""
    fn = getattr(nn, f"{name}_pool", None)
    return None if fn is None else lambda c: lambda x: fn(x, c.window, strides=c.strides, padding=c.pads)


def _global_rw(reducer: str) -> Builder:
    """Global pooling as one ``reduce_window`` over the whole spatial extent (keeps the spatial axes)."""

    def build(c: Config):
        whole = dataclasses.replace(c, window=_spatial(c), strides=_spatial(c), padding=0)
        if reducer == "avg":
            return lambda x: _rw(x, 0.0, lax.add, whole) * np.array(_size(whole), x.dtype)
        if reducer == "max":
            return lambda x: _rw(x, -np.inf, lax.max, whole)
        return lambda x: (_rw(x, 0.0, lax.add, whole) * np.array(_size(whole), x.dtype) + _rw(x, -np.inf, lax.max, whole)) / 2

    return build


def _keep(fn, **kw) -> Builder:
    """A global jaxpool op, keeping the spatial axes (size 1) so that its output matches the reference's."""
    return lambda c: lambda x: fn(x, num_spatial_dims=len(c.window), keepdims=True, **kw)


def _windowed(fn, *args, **kw) -> Builder:
    """``fn(x, *args, window, strides, padding, **kw)`` (args: fixed leading arguments, e.g. lp's norm)."""
    return lambda c: lambda x: fn(x, *args, c.window, c.strides, c.pads, **kw)


def _learned(fn) -> Builder:
    def build(c: Config):
        w = weights(c)
        if w is None:
            raise ValueError(f"op {c.op!r} has no fixed weights; _learned is for gated and tree")
        parts = (w[0],) if c.op == "gated" else (w[:2], w[2:])
        return lambda x: fn(x, *(jnp.asarray(p, x.dtype) for p in parts), c.window, c.strides, c.pads)

    return build


def _unpool(c: Config) -> Pool:
    def pool(x):
        y, idx = jaxpool.max_pool(x, c.window, c.strides, return_indices=True)
        return jaxpool.max_unpool(y, idx, _spatial(c))

    return pool


def _fractional(c: Config) -> Pool:
    u = samples(c)
    return lambda x: jaxpool.fractional_max_pool(x, c.window, output_size=_out_spatial(c), samples=jnp.asarray(u))


def _global(fn, window: Callable, reducer: str, torch: Callable | None = None) -> OpSpec:
    """A global op: its reference over the whole spatial extent, one ``reduce_window``, PyTorch's adaptive pool to 1."""
    torch = torch or _torch_adaptive(f"adaptive_{reducer}_pool", "global")
    return OpSpec(_keep(fn), kind="global", window=window, reduce_window=_global_rw(reducer), torch=torch, padding=False)


OPS: dict[str, OpSpec] = {
    "max": OpSpec(
        _jaxpool_extremum("max", "argmax"),
        window=functools.partial(windows.extremum, op="max"),
        xla=_jaxpool_extremum("max", "xla"),
        flax=_flax("max"),
        reduce_window=lambda c: lambda x: _rw_max(x, c),
        torch=_torch_windowed("max_pool"),
    ),
    "min": OpSpec(
        _jaxpool_extremum("min", "argmax"),
        window=functools.partial(windows.extremum, op="min"),
        xla=_jaxpool_extremum("min", "xla"),
        flax=_flax("min"),
        reduce_window=lambda c: lambda x: _rw(x, np.inf, lax.min, c),
        torch=_torch_windowed("max_pool", negate=True),
    ),
    "avg": OpSpec(
        _windowed(jaxpool.avg_pool),
        window=windows.average,
        flax=_flax("avg"),
        reduce_window=lambda c: lambda x: _rw_sum(x, c) * np.array(_size(c), x.dtype),
        torch=_torch_windowed("avg_pool"),
    ),
    "lp": OpSpec(
        _windowed(jaxpool.lp_pool, windows.LP_P),
        window=windows.lp,
        reduce_window=lambda c: lambda x: jnp.sqrt(_rw_sum(x * x, c)),
        torch=_torch_lp,
    ),
    "median": OpSpec(_windowed(jaxpool.median_pool), window=windows.median),
    "soft": OpSpec(
        _windowed(jaxpool.soft_pool),
        window=windows.soft,
        reduce_window=lambda c: lambda x: _rw_sum(jnp.exp(x) * x, c) / _rw_sum(jnp.exp(x), c),
    ),
    "gem": OpSpec(
        _windowed(jaxpool.gem_pool, windows.GEM_P),
        window=windows.gem,
        reduce_window=lambda c: (
            lambda x: (_rw_sum(jnp.maximum(x, windows.GEM_EPS) ** windows.GEM_P, c) / _rw_count(x, c)) ** (1 / windows.GEM_P)
        ),
        positive=True,
    ),
    "avgmax": OpSpec(
        _windowed(jaxpool.avgmax_pool),
        window=windows.avgmax,
        reduce_window=lambda c: lambda x: (_rw_sum(x, c) * np.array(_size(c), x.dtype) + _rw_max(x, c)) / 2,
        torch=_torch_avgmax,
    ),
    "stochastic": OpSpec(
        _windowed(jaxpool.stochastic_pool, deterministic=True),
        window=windows.stochastic_expectation,
        reduce_window=lambda c: lambda x: _rw_sum(x * x, c) / _rw_sum(x, c),
        positive=True,
    ),
    "mixed": OpSpec(_windowed(jaxpool.mixed_pool, deterministic=True), window=windows.avgmax),
    "gated": OpSpec(_learned(jaxpool.gated_pool), window=windows.gated),
    "tree": OpSpec(_learned(jaxpool.tree_pool), window=windows.tree),
    "fractional": OpSpec(_fractional, kind="other", torch=_torch_fractional, padding=False),
    "blur": OpSpec(
        lambda c: lambda x: jaxpool.blur_pool(x, c.window, c.strides, filter_size=windows.BLUR_SIZE),
        kind="blur",
        window=windows.linear,
        padding=False,
    ),
    "maxblur": OpSpec(_windowed(jaxpool.max_blur_pool), kind="other"),
    "adaptive_avg": OpSpec(
        lambda c: lambda x: jaxpool.adaptive_avg_pool(x, _out_spatial(c)),
        kind="adaptive",
        window=functools.partial(windows.average, include_pad=False),
        torch=_torch_adaptive("adaptive_avg_pool"),
        padding=False,
    ),
    "adaptive_max": OpSpec(
        lambda c: lambda x: jaxpool.adaptive_max_pool(x, _out_spatial(c)),
        kind="adaptive",
        window=windows.extremum,
        torch=_torch_adaptive("adaptive_max_pool"),
        padding=False,
    ),
    "global_avg": _global(jaxpool.global_avg_pool, functools.partial(windows.average, include_pad=False), "avg"),
    "global_max": _global(jaxpool.global_max_pool, windows.extremum, "max"),
    "global_avgmax": _global(jaxpool.global_avgmax_pool, windows.avgmax, "avgmax", _torch_global_avgmax),
    "spp": OpSpec(
        lambda c: lambda x: jaxpool.spatial_pyramid_pool(x, (1, 2, 4), num_spatial_dims=len(c.window)),
        kind="other",
        torch=_torch_spp,
        padding=False,
    ),
    "unpool": OpSpec(_unpool, kind="other", torch=_torch_unpool, padding=False),
}


def output_shape(c: Config) -> tuple[int, ...]:
    """The shape of jaxpool's output for ``c`` (abstract evaluation: nothing is computed)."""
    x = jax.ShapeDtypeStruct(c.shape, jnp.dtype(c.dtype))
    pool = OPS[c.op].jaxpool(c)
    if pool is None:
        raise ValueError(f"jaxpool has no {c.op} for {c.name}")
    return tuple(jax.eval_shape(pool, x).shape)
