"""Linear maps with a transpose of our choosing.

JAX transposes a linear function op by op, and for window sums that gives XLA:CPU a poor program in
one direction or the other: the tap sum that runs fastest forward transposes into one pad of the
cotangent per distinct row shift, each materialised, while the transpose that pads the cotangent
once (:func:`jaxpool._taps.spread`) is, read forward, a framed sum that runs slower.
:func:`linear` evaluates ``forward`` and, in reverse mode, ``transpose``; it is a primitive that JAX differentiates in both
modes (its JVP is itself, its transpose the same primitive with the two maps swapped, so any order
of differentiation stays on these two programs) and vectorises by ``jax.vmap`` of both maps. It
lowers to ``forward``'s own ops (which :mod:`jaxpool._halo` may custom-partition for spatially
sharded inputs). Further operands (a max-index route's offsets) are constants of both maps. JAX
has no public ``custom_transpose``, hence the primitive.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.extend
import jax.numpy as jnp
from jax._src import dispatch
from jax.interpreters import ad, batching, mlir

_linear_p = jax.extend.core.Primitive("jaxpool_linear")


# Parameters of the primitive: ``forward``, ``transpose`` and ``shapes``, the ``(shape, dtype)`` of
# ``forward``'s output and of its input ``a`` (``transpose``'s output): abstract evaluation reads
# them instead of tracing a map on every bind.


def _abstract(a, *operands, forward, transpose, shapes):
    (shape, dtype), _ = shapes
    return a.update(shape=shape, dtype=dtype)


def _jvp_rule(primals, tangents, **params):
    (a, *operands), (ta, *_) = primals, tangents  # the operands are constants: no tangent
    out = _linear_p.bind(a, *operands, **params)
    if type(ta) is ad.Zero:
        return out, ad.Zero(jax.typeof(out).to_tangent_aval())
    return out, _linear_p.bind(ta, *operands, **params)


def _transpose_rule(ct, a, *operands, forward, transpose, shapes):
    if any(ad.is_undefined_primal(v) for v in operands):
        raise ValueError("jaxpool._linear.linear is linear in its first argument only")
    zeros = [None] * len(operands)
    if type(ct) is ad.Zero:
        return [ad.Zero(a.aval), *zeros]
    return [_linear_p.bind(ct, *operands, forward=transpose, transpose=forward, shapes=shapes[::-1]), *zeros]


def _batch_rule(args, dims, *, forward, transpose, shapes):
    size = next(v.shape[d] for v, d in zip(args, dims) if d is not None)
    args = [batching.bdim_at_front(v, d, size) for v, d in zip(args, dims)]
    batched = tuple(((size, *shape), dtype) for shape, dtype in shapes)
    return _linear_p.bind(*args, forward=jax.vmap(forward), transpose=jax.vmap(transpose), shapes=batched), 0


_linear_p.def_impl(lambda *args, forward, transpose, shapes: forward(*args))
_linear_p.def_abstract_eval(_abstract)
mlir.register_lowering(
    _linear_p, lambda ctx, *args, forward, transpose, shapes: mlir.lower_fun(forward, multiple_results=False)(ctx, *args)
)
ad.primitive_jvps[_linear_p] = _jvp_rule
ad.primitive_transposes[_linear_p] = _transpose_rule
batching.primitive_batchers[_linear_p] = _batch_rule
# Its maps may be custom-partitioned (jaxpool._halo), which JAX lowers only knowing the devices;
# JAX finds such primitives in a jaxpr, not inside the traced maps of our parameters.
dispatch.prim_requires_devices_during_lowering.add(_linear_p)


def linear(forward: Callable, transpose: Callable, a, *operands):
    """``forward(a, *operands)``, linear in ``a``, whose transpose (reverse mode) is ``transpose``.

    ``transpose(ct, *operands)`` maps a cotangent of ``forward(a, *operands)`` to one of ``a``;
    ``operands`` (e.g. the saved argmax offsets of a max-index route) are constants of both maps,
    never differentiated. Both are traced JAX functions. Example:
    ``linear(lambda v: v[::2], lambda c: jnp.zeros(n).at[::2].set(c), a)``.
    """
    out = jax.eval_shape(forward, a, *operands)  # traced once here, not at every bind
    shapes = ((tuple(out.shape), out.dtype), (tuple(jnp.shape(a)), jnp.result_type(a)))
    return _linear_p.bind(a, *operands, forward=forward, transpose=transpose, shapes=shapes)
