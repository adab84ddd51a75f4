"""Control over what XLA fuses.

XLA:CPU fuses elementwise producers into every consumer, recomputing them per use, and it strips
``lax.optimization_barrier`` before fusion. Max pooling's backward reads each saved window offset
from several taps; fused, the whole forward argmax fold is recomputed for every one of them
(measured: 3x3/2 max-pool forward+backward on (32, 56, 56, 64) went from ~100 ms to ~5 ms once the
offsets were materialised). :func:`materialize` computes an array once, on CPU only.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import custom_batching, lax


def _cpu_barrier(a):
    first = a.reshape(-1)[0]
    # Both branches return ``a``, but XLA cannot prove it, so the conditional (which XLA never fuses
    # across) stays; its cost is one scalar read.
    return lax.cond(first < 1, lambda v: v, lambda v: jnp.maximum(v, jnp.minimum(v, first)), a)


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
