"""Control over what XLA fuses.

XLA:CPU fuses elementwise producers into every consumer, recomputing them per use, and it strips
``lax.optimization_barrier`` before fusion. Max pooling's backward reads each saved window offset
from several taps; fused, the whole forward argmax fold is recomputed for every one of them
(measured: 3x3/2 max-pool forward+backward on (32, 56, 56, 64) went from ~100 ms to ~5 ms once the
offsets were materialised). :func:`materialize` computes an array once, on CPU only.
Conversely, XLA shares (and so materialises) any array that two separate loops read; code that
reads ``x`` through :func:`apart` gets its own loop over ``x`` instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import custom_batching, lax


def _cpu_barrier(a):
    # A predicate XLA cannot fold (it does not constant-fold RNG ops) and that every device computes
    # for itself (so a sharded ``a`` needs no collective). Both branches return ``a`` — the second
    # as max(a, min(a, c)) — but XLA cannot prove it, so the conditional, which XLA never fuses
    # across, stays; its cost is one 32-bit random draw.
    _, bits = lax.rng_bit_generator(jnp.zeros((4,), jnp.uint32), (1,), dtype=jnp.uint32)
    word = bits[0]
    return lax.cond(word < jnp.uint32(2**31), lambda v: v, lambda v: jnp.maximum(v, jnp.minimum(v, word.astype(v.dtype))), a)


@custom_batching.custom_vmap
def materialize(a):
    """Returns ``a``, computed once rather than fused into (and recomputed by) its consumers.

    Only XLA:CPU gets the barrier; on GPU/TPU (whose fusion heuristics do not duplicate this
    work, and where a device-side predicate would cost a host round trip) it is the identity.
    """
    return lax.platform_dependent(a, cpu=_cpu_barrier, default=lambda v: v)


@materialize.def_vmap
def _materialize_vmap(axis_size, in_batched, a):
    # Barrier on the whole batched array: under vmap a per-example predicate would turn the
    # conditional into a select, which XLA fuses again.
    return materialize(a), in_batched[0]


@jax.custom_jvp
def computed_once(a):
    """:func:`materialize` with an identity derivative (the tangent itself is not barriered), so
    that code using it stays differentiable in every mode, to any order."""
    return materialize(a)


@computed_once.defjvp
def _computed_once_jvp(primals, tangents):
    return computed_once(primals[0]), tangents[0]


def apart(a):
    """``a``, as an array that XLA:CPU's common-subexpression elimination cannot identify with ``a``.

    Two computations over the same taps of ``x`` (a fold's extremum and its winner) end up in
    separate loops on XLA:CPU; built from one set of taps, XLA materialises every tap for both to
    read (3x3/2 on (32, 56, 56, 64): five 6.6 MB temporaries, forward+backward 2.5-4x slower).
    Built from ``x`` and ``apart(x)``, each loop reads ``x`` itself. An optimization barrier, on CPU
    only: XLA:CPU drops it after common-subexpression elimination, so it costs nothing at run time;
    GPU/TPU fuse both computations into one loop anyway.
    """
    return lax.platform_dependent(a, cpu=lax.optimization_barrier, default=lambda v: v)
