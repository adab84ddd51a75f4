"""Control over what XLA fuses.

XLA:CPU fuses elementwise producers into every consumer, recomputing them per use, and it strips
``lax.optimization_barrier`` before fusion. Max pooling's backward reads each saved window offset
from several taps; fused, the whole forward argmax fold is recomputed for every one of them
(measured: 3x3/2 max-pool forward+backward on (32, 56, 56, 64) went from ~100 ms to ~5 ms once the
offsets were materialised). :func:`materialize` computes an array once, on CPU only.
:func:`materialize_with_derivatives` does the same for an array and its derivatives in both modes,
:func:`cotangent_once` for the cotangent alone.
Conversely, XLA shares (and so materialises) any array that two separate loops read; code that
reads ``x`` through :func:`apart` gets its own loop over ``x`` instead.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
from jax import custom_batching, lax
from jax.interpreters import ad, batching, mlir


def _unfoldable_word():
    # A predicate XLA cannot fold (it does not constant-fold RNG ops) and that every device computes
    # for itself (so a sharded operand needs no collective). Its cost is one 32-bit random draw.
    _, bits = lax.rng_bit_generator(jnp.zeros((4,), jnp.uint32), (1,), dtype=jnp.uint32)
    return bits[0]


def _cpu_barrier(a):
    # Both branches return ``a`` — the second as max(a, min(a, c)) — but XLA cannot prove it, so
    # the conditional, which XLA never fuses across, stays.
    word = _unfoldable_word()
    return lax.cond(word < jnp.uint32(2**31), lambda v: v, lambda v: jnp.maximum(v, jnp.minimum(v, word.astype(v.dtype))), a)


def _linear_cpu_barrier(a):
    # As _cpu_barrier, but both branches are linear in ``a`` (the second multiplies by a 1 that XLA
    # cannot prove is 1), so JAX differentiates and transposes the conditional into conditionals.
    word = _unfoldable_word()
    one = (word >= jnp.uint32(2**31)).astype(a.dtype)
    return lax.cond(word < jnp.uint32(2**31), lambda v: v, lambda v: v * one, a)


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


def materialize_with_derivatives(a):
    """:func:`materialize` that also holds in the derivatives: the tangent (forward mode) and the
    cotangent (reverse mode) of ``a`` are computed once too, in every mode and to any order.

    Between two routed max passes (:func:`jaxpool.max._chained_extremum`) XLA:CPU otherwise fuses
    the second pass's backward into every tap of the first's, re-reading ``k1 * k2`` taps per
    element (5x5/1 on (8, 20, 20, 256): backward 6.4 ms fused, 0.8 ms with the cotangent computed
    once). Identity on GPU/TPU. Checkpointed: the predicate is drawn again in the backward pass
    rather than kept, so reverse mode saves nothing for it.
    """
    return jax.checkpoint(lambda v: lax.platform_dependent(v, cpu=_linear_cpu_barrier, default=lambda u: u))(a)


# The identity, as a primitive of its own: linear, vectorised, lowered to nothing; transposed into
# materialize_with_derivatives. JAX has no public way to give a linear function its own transpose.
_cotangent_once_p = jax.extend.core.Primitive("jaxpool_cotangent_once")
_cotangent_once_p.def_impl(lambda a: a)
_cotangent_once_p.def_abstract_eval(lambda a: a)
mlir.register_lowering(_cotangent_once_p, lambda ctx, a: [a])
ad.deflinear2(_cotangent_once_p, lambda ct, a: [materialize_with_derivatives(ct)])
batching.defvectorized(_cotangent_once_p)


def cotangent_once(a):
    """``a`` unchanged, in the forward pass and in forward mode; in reverse mode its cotangent is
    computed once (:func:`materialize_with_derivatives`) instead of fused into its consumers.

    Between the axis passes of a separable window sum (:func:`jaxpool.avg.window_sum`): the
    backward pass writes the cotangent between the passes in its own loop instead of re-reading
    every tap of one pass for each tap of the other (5x5/3 pad 1 on (32, 56, 56, 64) forward+backward
    42 -> 7.8 ms), while the forward pass and the tangents still fuse (a barrier on the tangent
    made a jvp 6x slower).
    """
    return _cotangent_once_p.bind(a)
