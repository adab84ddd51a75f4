"""Control over what XLA fuses.

XLA:CPU fuses elementwise producers into every consumer, recomputing them per use, and it strips
``lax.optimization_barrier`` before fusion. Max pooling's backward reads each saved window offset
from several taps; fused, the whole forward argmax fold is recomputed for every one of them
(measured: 3x3/2 max-pool forward+backward on (32, 56, 56, 64) went from ~100 ms to ~5 ms once the
offsets were materialised). :func:`materialize` computes an array (and its derivatives, in both modes) once, on CPU only;
:func:`cotangent_once` the cotangent alone; :func:`differentiated_once` all three, but only under differentiation.
Conversely, XLA shares (and so materialises) any array that two separate loops read; code that
reads ``x`` through :func:`apart` gets its own loop over ``x`` instead.

An argument of the jitted program is already in memory, with nothing to fuse; the barrier, which
would copy it, leaves it alone (:func:`_is_program_argument`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import jax
import jax.extend
import jax.numpy as jnp
from jax import lax
from jax.interpreters import ad, batching, mlir

P = ParamSpec("P")
R = TypeVar("R")


def _unfoldable_word():
    # A value XLA cannot fold (it does not constant-fold RNG ops) and that every device computes
    # for itself (so a sharded operand needs no collective). Its cost is one 32-bit random draw.
    _, bits = lax.rng_bit_generator(jnp.zeros((4,), jnp.uint32), (1,), dtype=jnp.uint32)
    return bits[0]


def _cpu_barrier(a):
    # A while loop that XLA cannot prove runs zero times (its flag is a random word's equality with a
    # constant: 1 in 2**32) and whose body, should it run, multiplies ``a`` by that flag (then 1):
    # XLA never fuses across a loop, and the loop's state takes over ``a``'s buffer in place. A
    # conditional (both branches returning ``a``, the second unprovably) barred fusion as well, but
    # its identity branch copied ``a``: adaptive max 40 -> 6 on (32, 40, 40, 64) spent 12% of its
    # forward+backward in such copies.
    def body(state):
        flag, v = state
        return jnp.zeros_like(flag), v * flag.astype(v.dtype)

    once = _unfoldable_word() == jnp.uint32(0x9E3779B9)
    return lax.while_loop(lambda state: state[0], body, (once, a))[1]


def _is_program_argument(value) -> bool:
    """Whether the MLIR ``value`` is an argument of the program's public entry function (``main``):
    an array already in memory, with no producer to fuse. A loop cannot take over such a buffer (XLA
    copies it in), so the barrier skips it: a cotangent passed to a jitted ``vjp`` as an argument
    was copied once per call (max 2x2/2 on (32, 56, 56, 64), forward+backward 4.9 against 3.7 ms).
    Arguments of any other function (a nested ``jit``, a ``shard_map`` body) keep the barrier: XLA
    inlines those calls, and their callers may compute the argument."""
    while isinstance(value, mlir.ir.OpResult) and value.owner.operation.name == "stablehlo.optimization_barrier":
        value = value.owner.operands[value.result_number]  # stripped by XLA:CPU before fusion
    if not isinstance(value, mlir.ir.BlockArgument):
        return False
    function = value.owner.owner
    attributes = function.operation.attributes
    if function.operation.name != "func.func" or "sym_name" not in attributes:
        return False
    visibility = mlir.ir.StringAttr(attributes["sym_visibility"]).value if "sym_visibility" in attributes else "public"
    return mlir.ir.StringAttr(attributes["sym_name"]).value == "main" and visibility == "public"


def _lower_cpu_barrier(ctx, a):
    if _is_program_argument(a):
        return [a]
    return mlir.lower_fun(_cpu_barrier, multiple_results=False)(ctx, a)


# The identity as a linear primitive of its own, lowered on CPU to :func:`_cpu_barrier` and
# elsewhere to nothing; its tangent and its transpose are the barrier again (JAX cannot transpose
# the loop itself), so every derivative of :func:`materialize` is computed once too. Not cacheable:
# JAX would lower it once into a function of its own, and :func:`_is_program_argument` must see
# the operand where it is used.
_barrier_p = jax.extend.core.Primitive("jaxpool_barrier")
_barrier_p.def_impl(lambda a: a)
_barrier_p.def_abstract_eval(lambda a: a)
mlir.register_lowering(_barrier_p, lambda ctx, a: [a])
mlir.register_lowering(_barrier_p, _lower_cpu_barrier, platform="cpu", cacheable=False)
ad.deflinear2(_barrier_p, lambda ct, a: [_barrier_p.bind(ct)])
batching.defvectorized(_barrier_p)


def materialize(a):
    """Returns ``a``, computed once rather than fused into (and recomputed by) its consumers — and
    so are its tangent (forward mode) and its cotangent (reverse mode), in every mode, to any order.

    Max pooling's backward reads each saved window offset from several taps: fused, the forward
    fold would be recomputed for each. Between two routed max passes
    (:func:`jaxpool.max._chained_extremum`) XLA:CPU would fuse the second pass's backward into
    every tap of the first's, re-reading ``k1 * k2`` taps per element (5x5/1 on (8, 20, 20, 256):
    backward 6.4 ms fused, 0.8 ms with the cotangent computed once). Only XLA:CPU gets the
    barrier; on GPU/TPU (whose fusion heuristics do not duplicate this work) it is the identity.
    Under ``vmap`` the barrier holds the whole batched array. A linear primitive: reverse mode
    saves nothing for it.
    """
    return _barrier_p.bind(a)


@jax.custom_jvp
def computed_once(a):
    """:func:`materialize` with an identity derivative (the tangent itself is not barriered), so
    that code using it stays differentiable in every mode, to any order."""
    return materialize(a)


@computed_once.defjvp
def _computed_once_jvp(primals, tangents):
    return computed_once(primals[0]), tangents[0]


@jax.custom_jvp
def differentiated_once(a):
    """``a`` unchanged where nothing differentiates it (inference: its consumers may fuse it); under
    differentiation, in either mode, :func:`materialize` — the array, its tangent and (transposed)
    its cotangent each computed once.

    Between the axis passes of a chained max (:func:`jaxpool.max.chain_passes`) whose taps multiply
    to at most :data:`jaxpool._lowering.FUSED_PASS_TAPS`: fused, XLA:CPU wrote each padded input of
    the later pass (read by its extremum, its winner and its derivative at every tap) to memory
    anyway, and recomputed the earlier pass's fold for each; inference, which reads only the
    extremum, fuses them best. Forward+backward in one process, barrier / none: max 3x3/1 pad 1 on
    (8, 56, 56, 64) 0.70-0.77, on (32, 28, 28, 192) 0.67-0.79 (48.6 -> 28.9 MiB of temporaries),
    2x2x2/1 on (4, 16, 32, 32, 32) 0.58-0.68, 3x3x3/1 pad 1 0.75, 3x3x3/2 pad 1 on (4, 32, 64, 64,
    32) 0.90-0.93; a barrier in inference too made 2x2/1 2.8x slower.
    """
    return a


@differentiated_once.defjvp
def _differentiated_once_jvp(primals, tangents):
    return materialize(primals[0]), materialize(tangents[0])


def _once_if_float(a):
    return materialize(a) if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.inexact) else a


def results_once(op: Callable[P, R]) -> Callable[P, R]:
    r"""Decorates a public op: its float results are :func:`materialize`\ d, so that what the caller
    computes from them is not fused back into the pooling (and recomputed per window tap).

    Without it XLA:CPU fuses a caller's elementwise use of the result into the pooling loops: a
    loss ``sum(sin(y))`` made the backward read ``cos(y)`` at every tap, recomputing the whole
    forward window for each. Forward+backward of ``sum(sin(pool(x)))`` on (32, 56, 56, 64), before
    the barrier: max 3x3/2 pad 1 67 ms (given the cotangent: 5.9 ms); adaptive avg 62 -> 4 on (16,
    62, 62, 64) 21.7 ms, with it 1.3 ms. The result is still one array that XLA may keep wherever
    it likes; only the fusion across it stops (on CPU; elsewhere the identity).
    """

    @functools.wraps(op)
    def computed(*args: P.args, **kwargs: P.kwargs) -> R:
        return jax.tree.map(_once_if_float, op(*args, **kwargs))

    return computed


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


# The identity, as a primitive of its own: linear, vectorised, lowered to nothing; transposed into
# materialize. JAX has no public way to give a linear function its own transpose.
_cotangent_once_p = jax.extend.core.Primitive("jaxpool_cotangent_once")
_cotangent_once_p.def_impl(lambda a: a)
_cotangent_once_p.def_abstract_eval(lambda a: a)
mlir.register_lowering(_cotangent_once_p, lambda ctx, a: [a])
ad.deflinear2(_cotangent_once_p, lambda ct, a: [_barrier_p.bind(ct)])
batching.defvectorized(_cotangent_once_p)


def cotangent_once(a):
    """``a`` unchanged, in the forward pass and in forward mode; in reverse mode its cotangent is
    computed once (:func:`materialize`) instead of fused into its consumers.

    Between the axis passes of a separable window sum (:func:`jaxpool.avg.window_sum`): the
    backward pass writes the cotangent between the passes in its own loop instead of re-reading
    every tap of one pass for each tap of the other (5x5/3 pad 1 on (32, 56, 56, 64) forward+backward
    42 -> 7.8 ms), while the forward pass and the tangents still fuse (a barrier on the tangent
    made a jvp 6x slower).
    """
    return _cotangent_once_p.bind(a)
