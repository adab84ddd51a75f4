"""Max and min pooling, with the max-index ("max id") backward rule.

The forward pass folds the window's taps (:mod:`jaxpool._taps`) and keeps, per output, the offset of
the winning element inside its window — one byte when the window has at most 256 elements. The
backward pass (a ``jax.custom_vjp``) sends each cotangent to that element without any scatter: for
tiling windows (stride == window) a one-hot broadcast and a reshape; for overlapping or gapped
windows a sum over taps of interior-padded, masked cotangents. This is the classic max-pooling
gradient (LeCun et al. 1998; Ranzato et al. 2007), with PyTorch's choice of element on ties
(the first in row-major window order) and NaN (a NaN wins and takes the gradient).

``backward="xla"`` computes the same forward with ``lax.reduce_window`` and leaves differentiation
to XLA (``select_and_scatter_add`` in reverse mode; supports ``jax.jvp``/``jax.jacfwd``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool import _taps
from jaxpool._fusion import materialize
from jaxpool._geometry import PaddingLike, WindowGeometry, check_bool, window_geometry, window_tuple
from jaxpool._layout import Layout, accumulation_dtype, as_pool_input, layout_of

BACKWARDS = ("argmax", "xla")
# Windows with at most this many elements fold all taps in one fused loop; larger ones fold axis by
# axis (sum instead of product of the window sizes in taps).
JOINT_FOLD_LIMIT = 64


def _fill_value(dtype, mode: str):
    """The identity of max/min in ``dtype``: -inf/+inf for floats, the integer limits otherwise."""
    if jnp.issubdtype(dtype, jnp.floating):
        return -np.inf if mode == "max" else np.inf
    info = jnp.iinfo(dtype)
    return info.min if mode == "max" else info.max


def _extremum_and_offset(x, layout: Layout, geom: WindowGeometry, mode: str):
    """Returns the pooled extremum and the row-major offset of the winner inside its window."""
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32:
        # Exact: upcasting preserves order, ties and NaN. Folding 16-bit floats directly makes
        # XLA:CPU insert converts that split the fold into one materialised array per tap.
        y, offset = _extremum_and_offset(x.astype(jnp.float32), layout, geom, mode)
        return y.astype(x.dtype), offset
    dtype = _taps.offset_dtype(geom.window_size)
    xp = _taps.pad_input(x, layout, geom, _fill_value(x.dtype, mode))
    if geom.window_size <= JOINT_FOLD_LIMIT:
        candidates = (
            (_taps.tap(xp, layout, geom, offs), _taps.tap_inside(layout, geom, offs), flat)
            for flat, offs in _taps.window_taps(geom)
        )
        return _taps.select_fold(candidates, mode, dtype)
    # Axis by axis, innermost first, so that the first maximum in row-major order wins.
    offset, multiplier = None, 1
    for i in reversed(range(geom.ndim)):
        candidates = [
            (
                _taps.tap(xp, layout, geom, {i: t}),
                _taps.tap_inside(layout, geom, {i: t}),
                t * multiplier + (0 if offset is None else _taps.tap(offset, layout, geom, {i: t})),
            )
            for t in range(geom.window[i])
        ]
        xp, offset = _taps.select_fold(candidates, mode, dtype)
        multiplier *= geom.window[i]
    return xp, offset


def _route_to_offsets(g, offset, layout: Layout, geom: WindowGeometry):
    """The max-index VJP: each cotangent goes to its window's winning element; no scatter.

    Overlapping windows add several cotangents into one element, in float32 for 16-bit floats.
    """
    offset = materialize(offset)
    acc = g.dtype if geom.is_tiling else accumulation_dtype(g.dtype)
    g = g.astype(acc)
    zero = jnp.zeros((), acc)
    if geom.is_tiling and geom.window_size > JOINT_FOLD_LIMIT:
        expand = lambda a: jnp.expand_dims(a, tuple(axis + 1 + k for k, axis in enumerate(sorted(layout.spatial_axes))))
        dxp = _taps.spread_tiles(lambda flat: jnp.where(expand(offset) == flat, expand(g), zero), layout, geom)
    else:
        dxp = _taps.spread(lambda flat, _: jnp.where(offset == flat, g, zero), layout, geom)
    return _taps.unpad(dxp, layout, geom)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _routed_pool(x, layout: Layout, geom: WindowGeometry, mode: str):
    return _extremum_and_offset(x, layout, geom, mode)


def _routed_pool_fwd(x, layout, geom, mode):
    y, offset = _extremum_and_offset(x, layout, geom, mode)
    return (y, offset), offset


def _routed_pool_bwd(layout, geom, mode, offset, cotangents):
    g = cotangents[0]
    return (_route_to_offsets(g, offset, layout, geom).astype(g.dtype),)


_routed_pool.defvjp(_routed_pool_fwd, _routed_pool_bwd)


def _xla_pool(x, layout: Layout, geom: WindowGeometry, mode: str):
    """``lax.reduce_window`` max/min, differentiated by XLA itself."""
    padding = layout.full(tuple(zip(geom.pad_lo, (h + v for h, v in zip(geom.pad_hi, geom.overhang)))), (0, 0))
    return lax.reduce_window(
        x,
        np.array(_fill_value(x.dtype, mode), x.dtype),
        lax.max if mode == "max" else lax.min,
        layout.full(geom.window, 1),
        layout.full(geom.strides, 1),
        padding,
        window_dilation=layout.full(geom.dilation, 1),
    )


def flat_indices(offset, layout: Layout, geom: WindowGeometry):
    """Converts within-window offsets to int32 indices over the unpadded spatial volume (PyTorch's)."""
    offset = offset.astype(jnp.int32)
    flat = jnp.zeros((), jnp.int32)
    for i in range(geom.ndim):
        inner = math.prod(geom.window[i + 1 :])
        t = (offset // inner) % geom.window[i]
        start = layout.along(np.arange(geom.out_shape[i], dtype=np.int32) * geom.strides[i] - geom.pad_lo[i], i)
        flat = flat * geom.in_shape[i] + start + t * geom.dilation[i]
    return flat


def _extremum_pool(x, window_shape, strides, padding, dilation, ceil_mode, data_format, backward, mode):
    x = as_pool_input(x)
    window = window_tuple(window_shape)
    layout = layout_of(x, len(window), data_format)
    geom = window_geometry(layout.spatial_shape(x.shape), window, strides, padding, dilation, ceil_mode)
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    if backward == "xla":
        y = _xla_pool(x, layout, geom, mode)
        offset = lax.stop_gradient(_extremum_and_offset(lax.stop_gradient(x), layout, geom, mode)[1])
    elif jnp.issubdtype(x.dtype, jnp.integer):
        y, offset = _extremum_and_offset(x, layout, geom, mode)
    else:
        y, offset = _routed_pool(x, layout, geom, mode)
    return y, offset, layout, geom


def max_pool(
    x,
    window_shape,
    strides=None,
    padding: PaddingLike = "VALID",
    *,
    dilation=None,
    ceil_mode: bool = False,
    return_indices: bool = False,
    data_format: str = "channels_last",
    backward: str = "argmax",
):
    """Max pooling over N spatial dimensions (N = ``len(window_shape)``), PyTorch's semantics.

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first);
        ``*batch`` may be empty. Float or integer dtype.
      window_shape: N window sizes.
      strides: N strides; ``None`` means equal to ``window_shape`` (PyTorch/Keras; Flax means 1).
      padding: ``"VALID"``, ``"SAME"``, an int, N ints (symmetric, PyTorch) or N ``(low, high)``
        pairs (Flax). Padding never wins: it is ``-inf`` (or the integer minimum) and masked.
      dilation: N spacings between window elements (default 1).
      ceil_mode: round output sizes up; the last window must start inside the input or left padding.
      return_indices: also return int32 indices of the maxima, flattened over the unpadded spatial
        volume per (batch, channel) — PyTorch's, usable by :func:`jaxpool.max_unpool`.
      data_format: ``"channels_last"`` or ``"channels_first"``.
      backward: ``"argmax"`` (default): a ``custom_vjp`` that stores one small integer per output
        and routes each cotangent to the first maximum (a NaN if present), without scatter; supports
        ``grad``/``vjp``/``vmap``/``jit`` and reverse-over-reverse, not forward mode. ``"xla"``:
        ``lax.reduce_window`` differentiated by XLA (``select_and_scatter_add``; supports ``jvp``,
        but JAX has no reverse-mode rule when ``dilation > 1``; XLA's own tie and NaN choices).

    Returns:
      ``y`` of shape ``(*batch, *out, C)`` (or channels_first), and with ``return_indices`` the
      int32 indices of the same shape.
    """
    check_bool(return_indices, "return_indices")
    y, offset, layout, geom = _extremum_pool(x, window_shape, strides, padding, dilation, ceil_mode, data_format, backward, "max")
    return (y, flat_indices(offset, layout, geom)) if return_indices else y


def min_pool(
    x,
    window_shape,
    strides=None,
    padding: PaddingLike = "VALID",
    *,
    dilation=None,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
    backward: str = "argmax",
):
    """Min pooling: :func:`max_pool` with the minimum (ties to the first minimum, NaN wins).

    Exact for integers (padding is the dtype's maximum, never negated), unlike ``-max_pool(-x)``.
    """
    return _extremum_pool(x, window_shape, strides, padding, dilation, ceil_mode, data_format, backward, "min")[0]
