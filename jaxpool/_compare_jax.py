"""The JAX implementations compared by ``python -m jaxpool.compare``, and how each is run and measured."""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxpool
from jaxpool._compare_config import Config, Prepared, as_float64
from jaxpool._compare_hlo import compile_with_stats, residual_bytes

Pool = Callable[[jax.Array], jax.Array]


def jaxpool_pool(backward: str) -> Callable[[Config], Pool | None]:
    """jaxpool's op with ``backward="argmax"`` (its custom VJP) or ``"xla"`` (max/min only)."""

    def build(c: Config) -> Pool | None:
        if c.op == "avg":
            return None if backward == "xla" else lambda x: jaxpool.avg_pool(x, c.window, c.strides, c.pads)
        fn = jaxpool.max_pool if c.op == "max" else jaxpool.min_pool
        return lambda x: fn(x, c.window, c.strides, c.pads, backward=backward)

    return build


def flax_pool(c: Config) -> Pool | None:
    """``flax.linen``'s pooling (None where Flax lacks the op); strides always explicit (Flax's default is 1)."""
    fn = getattr(nn, f"{c.op}_pool", None)
    return None if fn is None else lambda x: fn(x, c.window, strides=c.strides, padding=c.pads)


def reduce_window_pool(c: Config) -> Pool:
    """The textbook formulation: one ``lax.reduce_window`` (divided by the window size for avg), JAX's autodiff."""
    init, reducer = {"max": (-np.inf, lax.max), "min": (np.inf, lax.min), "avg": (0.0, lax.add)}[c.op]
    scale = 1.0 / math.prod(c.window)

    def pool(x):
        window, strides, pads = (1, *c.window, 1), (1, *c.strides, 1), ((0, 0), *c.pads, (0, 0))
        y = lax.reduce_window(x, np.array(init, x.dtype), reducer, window, strides, pads)
        return y * np.array(scale, x.dtype) if c.op == "avg" else y

    return pool


def _forward_backward(pool: Pool) -> Callable:
    """``(x, ct) -> (y, dx)``; the cotangent is an argument so that XLA cannot constant-fold it."""

    def fwd_bwd(x, ct):
        y, vjp_fn = jax.vjp(pool, x)
        return y, vjp_fn(ct)[0]

    return fwd_bwd


def prepare(pool: Pool, config: Config, x: np.ndarray, ct: np.ndarray, *, measure: bool = True) -> Prepared:
    """Compiles forward+backward (and with ``measure`` the forward), runs it once, gathers the stats."""
    x, ct = jnp.asarray(x, config.dtype), jnp.asarray(ct, config.dtype)
    fwd_bwd = compile_with_stats(_forward_backward(pool), x, ct)
    y, dx = fwd_bwd.call(x, ct)
    if not measure:
        return Prepared(as_float64(y), as_float64(dx))
    fwd = compile_with_stats(pool, x)
    modes = {"fwd": fwd, "fwd_bwd": fwd_bwd}
    stats = {
        "hlo": {m: c.hlo for m, c in modes.items()},
        "compile_s": {m: c.compile_s for m, c in modes.items()},
        "memory": {m: c.memory for m, c in modes.items()},
        "residual_bytes": residual_bytes(pool, x),
    }
    thunks = {"fwd": lambda: jax.block_until_ready(fwd.call(x)), "fwd_bwd": lambda: jax.block_until_ready(fwd_bwd.call(x, ct))}
    return Prepared(as_float64(y), as_float64(dx), thunks, stats)
