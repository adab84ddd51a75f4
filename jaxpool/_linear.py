"""Linear maps with a transpose of our choosing.

JAX transposes a linear function op by op, and for window sums that gives XLA:CPU a poor program in
one direction or the other: the tap sum that runs fastest forward transposes into one pad of the
cotangent per distinct row shift, each materialised, while the transpose that pads the cotangent
once (:func:`jaxpool._taps.spread`) is, read forward, a framed sum that runs slower.
:func:`linear` evaluates ``forward`` and, in reverse mode, ``transpose``; it is a primitive that JAX differentiates in both
modes (its JVP is itself, its transpose the same primitive with the two maps swapped, so any order
of differentiation stays on these two programs) and vectorises by ``jax.vmap`` of both maps. It
lowers to ``forward``'s own ops (which :mod:`jaxpool._halo` may custom-partition for spatially
sharded inputs; lowered for ``jax.export``, the plain ops). JAX has no public ``custom_transpose``, hence the primitive.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.extend
import jax.numpy as jnp
from jax._src import dispatch
from jax.interpreters import ad, batching, mlir

from jaxpool import _halo

_linear_p = jax.extend.core.Primitive("jaxpool_linear")


def _abstract(a, *, forward, transpose):
    out = jax.eval_shape(forward, jax.ShapeDtypeStruct(a.shape, a.dtype))
    return a.update(shape=out.shape, dtype=out.dtype)


def _transpose_rule(ct, a, *, forward, transpose):
    if type(ct) is ad.Zero:
        return [ad.Zero(a.aval)]
    return [_linear_p.bind(ct, forward=transpose, transpose=forward)]


def _batch_rule(args, dims, *, forward, transpose):
    (a,), (dim,) = args, dims
    a = jnp.moveaxis(a, dim, 0)
    return _linear_p.bind(a, forward=jax.vmap(forward), transpose=jax.vmap(transpose)), 0


_linear_p.def_impl(lambda a, *, forward, transpose: forward(a))
_linear_p.def_abstract_eval(_abstract)


def _lowering(ctx, a, *, forward, transpose):
    with _halo.plain(ctx.module_context.lowering_parameters.for_export):
        return mlir.lower_fun(forward, multiple_results=False)(ctx, a)


mlir.register_lowering(_linear_p, _lowering)
ad.deflinear2(_linear_p, _transpose_rule)
batching.primitive_batchers[_linear_p] = _batch_rule
# Its maps may be custom-partitioned (jaxpool._halo), which JAX lowers only knowing the devices;
# JAX finds such primitives in a jaxpr, not inside the traced maps of our parameters.
dispatch.prim_requires_devices_during_lowering.add(_linear_p)


def linear(forward: Callable, transpose: Callable, a):
    """``forward(a)`` for a linear ``forward`` whose transpose (reverse mode) is ``transpose``.

    ``transpose`` maps a cotangent of ``forward(a)`` to one of ``a``; both are traced JAX functions
    of one array. Example: ``linear(lambda v: v[::2], lambda c: jnp.zeros(n).at[::2].set(c), a)``.
    """
    return _linear_p.bind(a, forward=forward, transpose=transpose)
