"""How ``python -m jaxpool.compare`` runs and measures a JAX implementation (the implementations are in :mod:`.ops`)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool.compare.config import Config, Prepared, as_float64
from jaxpool.compare.hlo import compile_with_stats, residual_bytes

Pool = Callable[[jax.Array], jax.Array]


def _forward_backward(pool: Pool) -> Callable:
    """``(x, ct) -> (y, dx)``; the cotangent is an argument so that XLA cannot constant-fold it."""

    def fwd_bwd(x, ct):
        y, vjp_fn = jax.vjp(pool, x)
        return y, vjp_fn(ct)[0]

    return fwd_bwd


def prepare(pool: Pool, config: Config, x: np.ndarray, ct: np.ndarray, *, measure: bool = True) -> Prepared:
    """Compiles forward+backward (and with ``measure`` the forward), runs it once, gathers the stats."""
    xs, cts = jnp.asarray(x, config.dtype), jnp.asarray(ct, config.dtype)
    fwd_bwd = compile_with_stats(_forward_backward(pool), xs, cts)
    y, dx = fwd_bwd.call(xs, cts)
    if not measure:
        return Prepared(as_float64(y), as_float64(dx))
    fwd = compile_with_stats(pool, xs)
    modes = {"fwd": fwd, "fwd_bwd": fwd_bwd}
    stats = {
        "hlo": {m: c.hlo for m, c in modes.items()},
        "compile_s": {m: c.compile_s for m, c in modes.items()},
        "memory": {m: c.memory for m, c in modes.items()},
        "residual_bytes": residual_bytes(pool, xs),
    }
    thunks = {"fwd": lambda: jax.block_until_ready(fwd.call(xs)), "fwd_bwd": lambda: jax.block_until_ready(fwd_bwd.call(xs, cts))}
    return Prepared(as_float64(y), as_float64(dx), thunks, stats)
