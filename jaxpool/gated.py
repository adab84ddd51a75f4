"""Learned pooling: gated max-average pooling and tree pooling.

Lee, Gallagher & Tu 2016, "Generalizing pooling functions in convolutional neural networks: mixed,
gated, and tree" (AISTATS). Both learn window-shaped weight vectors ``w`` and apply them as linear
filters ``w . x = sum_t w_t x_t`` over each pooling window: one sum over the window's taps
(:mod:`jaxpool._taps`), in which explicit padding and the ``ceil_mode`` overhang are zeros. A gate
``sigmoid(w . x)`` mixes two pooled values, so the mixture responds to the window's contents.

Gradients flow to ``x`` and to the weights, without scatter: the gates and mixtures are JAX's
autodiff, max and average pooling use :func:`jaxpool.max_pool` / :func:`jaxpool.avg_pool`'s own
derivatives, and the dot products (:func:`_window_dots`) JAX's own derivative of phase-view taps;
so every transformation works, forward mode included. Float inputs only; 16-bit floats are
computed in float32 and rounded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp

from jaxpool import _taps
from jaxpool._fusion import results_once
from jaxpool._geometry import PaddingLike, WindowGeometry
from jaxpool._layout import Layout, accumulation_dtype
from jaxpool.avg import _prepare, avg_pool
from jaxpool.max import max_pool


def _prepare_float(x, window_shape, strides, padding, ceil_mode, data_format):
    x, layout, geom = _prepare(x, window_shape, strides, padding, ceil_mode, data_format)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"x must have a float dtype (learned pooling is differentiated), got {x.dtype}; cast it, e.g. x.astype(jnp.float32)"
        )
    return x, layout, geom


def _float_weights(weights, name: str):
    weights = jnp.asarray(weights)
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        raise TypeError(f"{name} must be a float array (learned parameters), got dtype {weights.dtype}")
    return weights


def _filter_columns(filters, per_channel: bool, layout: Layout, geom: WindowGeometry):
    """``(F, *window[, C])`` -> ``(F, K, 1, ..., 1)`` (``C`` on the channel axis), taps row-major."""
    count = filters.shape[0]
    shape = [count, geom.window_size] + [1] * layout.ndim
    if per_channel:
        shape[2 + layout.channel_axis] = -1
    return filters.reshape(shape)


def _window_dots(x, filters, per_channel: bool, layout: Layout, geom: WindowGeometry) -> tuple[jax.Array, ...]:
    """``sum_t filters[f, t] * x_t`` for each filter ``f``: F output-shaped dot products with every window.

    ``filters``: ``(F, *window)`` or, ``per_channel``, ``(F, *window, C)``. Padding taps are zeros.
    Phase-view taps (:class:`jaxpool._taps.Taps`): JAX differentiates it in both modes, and its
    transpose is shifted adds (``dx``) and one reduction per tap (``dw``), no scatter.
    """
    columns = _filter_columns(filters, per_channel, layout, geom)
    taps = _taps.Taps(x, layout, geom)
    values = [taps(offs) for _, offs in _taps.window_taps(geom)]
    # cast: a window has >= 1 taps, so sum() never returns its start value, the int 0.
    return tuple(cast(jax.Array, sum(columns[f, t] * v for t, v in enumerate(values))) for f in range(filters.shape[0]))


def _gate(logit, first, second):
    """``s * first + (1 - s) * second`` with ``s = sigmoid(logit)``: exactly ``first`` (``second``) when
    ``s`` saturates to 1 (0). Two equal infinities mix to that infinity (``0 * inf`` would give NaN)."""
    s = jax.nn.sigmoid(logit)
    mixed = s * first + (1 - s) * second
    return jnp.where(jnp.isinf(first) & (first == second), first, mixed)


@results_once
def gated_pool(
    x: jax.Array,
    gate_weights: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Gated max-average pooling (Lee, Gallagher & Tu 2016): a learned, responsive mix of max and average.

    ``y = s * max_pool(x) + (1 - s) * avg_pool(x)`` with ``s = sigmoid(sum_t w_t x_t)`` over each
    window. The gate's dot product sees explicit padding (and the ``ceil_mode`` overhang) as zeros;
    the max ignores padding (:func:`jaxpool.max_pool`); the average counts explicit padding in its
    divisor (``count_include_pad=True``, :func:`jaxpool.avg_pool`'s default and PyTorch's). A gate
    saturated at 1 gives ``max_pool`` exactly, at 0 ``avg_pool``.

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first), a
        float dtype.
      gate_weights: the gate ``w``: shape ``window_shape`` (one gate shared by all channels: the
        paper's layer-wise gate, ``prod(window_shape)`` parameters) or ``(*window_shape, C)`` (one
        gate per channel; ``C`` trails whatever ``data_format``). Float; learned, so ``jax.grad``
        flows to it.
      window_shape, strides, padding, ceil_mode, data_format: as :func:`jaxpool.max_pool`
        (``strides=None`` means the window).

    Returns:
      ``(*batch, *out, C)`` (or channels_first) in ``x``'s dtype; float16/bfloat16 are computed in
      float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.array([1.0, 3.0]).reshape(1, 1, 2, 1)  # one window of two elements
      >>> jaxpool.gated_pool(x, jnp.zeros((1, 2)), (1, 2))[0, 0, 0, 0]  # gate sigmoid(0) = 0.5: an even mix
      Array(2.5, dtype=float32)
    """
    x, layout, geom = _prepare_float(x, window_shape, strides, padding, ceil_mode, data_format)
    w = _float_weights(gate_weights, "gate_weights")
    channels = x.shape[layout.channel_axis]
    shared, per_channel = geom.window, geom.window + (channels,)
    if w.shape not in (shared, per_channel):
        raise ValueError(
            f"gate_weights must have shape window_shape {shared} (one gate for all channels) or "
            f"(*window_shape, C) {per_channel} (one per channel), got {w.shape}"
        )
    acc = accumulation_dtype(x.dtype)
    xa = x.astype(acc)
    (logit,) = _window_dots(xa, w[None].astype(acc), w.shape == per_channel, layout, geom)
    mx = max_pool(xa, geom.window, geom.strides, padding, ceil_mode=ceil_mode, data_format=data_format)
    avg = avg_pool(xa, geom.window, geom.strides, padding, ceil_mode=ceil_mode, data_format=data_format)
    return _gate(logit, mx, avg).astype(x.dtype)


def _tree_weights(leaf_weights, gate_weights, geom: WindowGeometry, channels: int):
    """Validates the tree's filters; returns ``(leaves, gates, per_channel)``."""
    leaves = _float_weights(leaf_weights, "leaf_weights")
    gates = _float_weights(gate_weights, "gate_weights")
    n = leaves.shape[0] if leaves.ndim else 0
    per_channel = leaves.shape[1:] == geom.window + (channels,)
    if not (leaves.shape[1:] == geom.window or per_channel) or n < 2 or n & (n - 1):
        raise ValueError(
            f"leaf_weights must have shape (n_leaves, *window_shape) = (n_leaves, {', '.join(map(str, geom.window))}) "
            f"or (n_leaves, *window_shape, C) with C = {channels}, n_leaves a power of two >= 2 (2 for a tree of "
            f"depth 2, 4 for depth 3); got {leaves.shape}"
        )
    expected = (n - 1,) + leaves.shape[1:]
    if gates.shape != expected:
        raise ValueError(
            f"gate_weights must have shape {expected}: one gate per internal node (n_leaves - 1 = {n - 1}), "
            f"{'per channel' if per_channel else 'shared by all channels'} like leaf_weights; got {gates.shape}"
        )
    return leaves, gates, per_channel


@results_once
def tree_pool(
    x: jax.Array,
    leaf_weights: jax.Array,
    gate_weights: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Tree pooling (Lee, Gallagher & Tu 2016): learned pooling filters fused by a binary tree of gates.

    A complete binary tree of depth ``d = log2(n_leaves) + 1`` (the paper uses 2 or 3 levels). Leaf
    ``m`` is a learned linear pooling filter ``f_m(x) = sum_t v_{m,t} x_t``; internal node ``k``
    (heap order: 0 is the root, its children are ``2k + 1`` and ``2k + 2``, and leaf ``m`` is node
    ``n_leaves - 1 + m``) mixes its children with its own gate::

        f_k(x) = sigmoid(w_k . x) * f_{2k+1}(x) + (1 - sigmoid(w_k . x)) * f_{2k+2}(x)

    and the output is the root's ``f_0``. Every dot product runs over the window's taps with explicit
    padding and the ``ceil_mode`` overhang as zeros. Depth 2 is one gate mixing two leaves.

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first), a
        float dtype.
      leaf_weights: ``(n_leaves, *window_shape)`` (filters shared by all channels) or
        ``(n_leaves, *window_shape, C)`` (per channel); ``n_leaves`` a power of two >= 2.
      gate_weights: ``(n_leaves - 1, *window_shape)`` in heap order, with the trailing ``C`` exactly
        when ``leaf_weights`` has it.
      window_shape, strides, padding, ceil_mode, data_format: as :func:`jaxpool.max_pool`
        (``strides=None`` means the window).

    Returns:
      ``(*batch, *out, C)`` (or channels_first) in ``x``'s dtype; float16/bfloat16 are computed in
      float32. Gradients flow to ``x`` and both weight arrays.

    Examples:
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.array([1.0, 3.0]).reshape(1, 1, 2, 1)  # one window of two elements
      >>> leaves = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two 1x2 filters: pick left, pick right
      >>> jaxpool.tree_pool(x, leaves, jnp.zeros((1, 1, 2)), (1, 2))[0, 0, 0, 0]  # gate 0.5
      Array(2., dtype=float32)
    """
    x, layout, geom = _prepare_float(x, window_shape, strides, padding, ceil_mode, data_format)
    leaves, gates, per_channel = _tree_weights(leaf_weights, gate_weights, geom, x.shape[layout.channel_axis])
    acc = accumulation_dtype(x.dtype)
    n = leaves.shape[0]
    dots = _window_dots(x.astype(acc), jnp.concatenate([leaves, gates]).astype(acc), per_channel, layout, geom)
    nodes = dict(enumerate(dots[:n], start=n - 1))
    for k in reversed(range(n - 1)):
        nodes[k] = _gate(dots[n + k], nodes[2 * k + 1], nodes[2 * k + 2])
    return nodes[0].astype(x.dtype)
