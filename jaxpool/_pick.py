"""The rows where PyTorch's adaptive bins start, and its exact transpose, as linear primitives.

Bin ``b`` of ``out`` over ``size`` inputs starts at ``floor(b * size / out)``. :func:`starts` takes
those rows of an array along one axis (:func:`jaxpool._sliding.pick`: broadcast, reshape, strided
slice — exact, no arithmetic). JAX's own transpose of that pick is an interior pad ``out / gcd``
times the axis, materialised, a reshape and a sum; a contraction with the 0/1 pick matrix is a dot
XLA:CPU runs 3-8 ms per call on (64, 13, 13, 256). Here the transpose is :func:`_unpick`: every row
reads the one cotangent row that picked it (``floor(((p + 1) out - 1) / size)``, the same broadcast,
reshape and strided slice over the small cotangent) and a static mask zeroes the rows no bin starts
at: one fused loop writing the gradient. Both are primitives, each the other's transpose, so forward
mode, reverse mode and every higher order use them; both vectorise. Only for ``out < size``, where
the starts are distinct.
"""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.interpreters import ad, batching, mlir

from jaxpool import _sliding
from jaxpool._geometry import adaptive_bins


def _pick(a, *, axis: int, size: int, out: int):
    return _sliding.pick(a, axis, size, out)


def _unpick(c, *, axis: int, size: int, out: int):
    """Row ``p`` of the result is ``c[b]`` when bin ``b`` starts at ``p``, else 0 (``out < size``).

    For a start ``p = floor(b size / out)``, ``b = floor(((p + 1) out - 1) / size)``: repeating every
    row of ``c`` ``size`` times puts ``c[b]`` at flat position ``(p + 1) out - 1``."""
    rows = lax.slice_in_dim(_sliding.repeat_rows(c, axis, size), out - 1, out * size, out, axis=axis)
    is_start = np.zeros(size, bool)
    is_start[adaptive_bins(size, out)[0]] = True
    mask = is_start.reshape([size if d == axis else 1 for d in range(c.ndim)])
    return jnp.where(mask, rows, jnp.zeros((), c.dtype))


def _linear_primitive(name: str, impl, length):
    """A primitive running ``impl`` that maps axis ``axis`` to ``length(size, out)`` rows."""
    prim = jax.extend.core.Primitive(name)
    prim.def_impl(impl)

    def abstract(a, *, axis, size, out):
        shape = list(a.shape)
        shape[axis] = length(size, out)
        return a.update(shape=tuple(shape))

    def batch(args, dims, *, axis, size, out):
        (a,), (d,) = args, dims
        return prim.bind(jnp.moveaxis(a, d, 0), axis=axis + 1, size=size, out=out), 0

    prim.def_abstract_eval(abstract)
    mlir.register_lowering(prim, mlir.lower_fun(impl, multiple_results=False))
    batching.primitive_batchers[prim] = batch
    return prim


_pick_p = _linear_primitive("jaxpool_pick_bin_starts", _pick, lambda size, out: out)
_unpick_p = _linear_primitive("jaxpool_unpick_bin_starts", _unpick, lambda size, out: size)
ad.deflinear2(_pick_p, lambda ct, a, **params: [_unpick_p.bind(ct, **params)])
ad.deflinear2(_unpick_p, lambda ct, c, **params: [_pick_p.bind(ct, **params)])


def starts(a: jax.Array, axis: int, size: int, out: int) -> jax.Array:
    """Rows ``floor(b * size / out)``, ``b < out``, of ``a`` (``size`` rows along ``axis``, ``out < size``).

    Example:
      >>> import jax.numpy as jnp
      >>> starts(jnp.arange(13), 0, 13, 5)  # bins of 13 -> 5 start at 0, 2, 5, 7, 10
      Array([ 0,  2,  5,  7, 10], dtype=int32)
    """
    if not 0 < out < size or a.shape[axis] != size:
        raise ValueError(f"starts needs 0 < out < size rows, got out={out}, size={size}, shape {a.shape} along {axis}")
    return _pick_p.bind(a, axis=axis, size=size, out=out)
