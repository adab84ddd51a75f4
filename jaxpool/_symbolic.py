"""Pooling over symbolic spatial sizes (``jax.export`` with shape polymorphism).

jaxpool's own lowerings (:mod:`jaxpool._lowering`) resolve every window position at trace time,
which needs concrete sizes. When a spatial size is symbolic, ``max_pool``, ``min_pool`` and
``avg_pool`` fall back to ``lax.reduce_window`` — what ``flax.linen`` does — so a model exports with
symbolic height and width wherever flax's pooling would; the derivative is then XLA's own
(``select_and_scatter_add`` for max in reverse mode). What needs concrete sizes (``ceil_mode``,
indices, adaptive bins, SPP, the random and learned pools) raises :func:`unsupported`'s
``ValueError``. Symbolic batch sizes need none of this: only spatial sizes are resolved.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxpool._geometry import check_bool, int_tuple
from jaxpool._layout import Layout


def is_symbolic(sizes: Sequence) -> bool:
    """Whether any of ``sizes`` is a symbolic dimension rather than an int."""
    return not all(isinstance(d, (int, np.integer)) for d in sizes)


def unsupported(op: str, why: str = "its output shape or window positions depend on them"):
    return ValueError(
        f"{op} needs concrete spatial sizes ({why}); export it with concrete spatial sizes — symbolic batch "
        "sizes work — or use max_pool/avg_pool, which accept symbolic spatial sizes"
    )


def _padding(padding, n: int):
    if isinstance(padding, str):
        word = padding.upper()
        if word not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID', 'SAME', ints or (low, high) pairs; got {padding!r}")
        return word
    if not isinstance(padding, Sequence):
        (p,) = int_tuple(padding, 1, "padding", minimum=0)
        return ((p, p),) * n
    if len(padding) != n:
        raise ValueError(f"padding must have one entry per spatial dimension ({n}), got {padding!r}")
    pairs = []
    for entry in padding:
        pair = tuple(entry) if isinstance(entry, Sequence) else (entry, entry)
        pairs.append(int_tuple(pair, 2, "padding", minimum=0))
    return tuple(pairs)


def window_reduce(x, layout: Layout, window, strides, padding, dilation, ceil_mode, *, op: str, init, computation):
    """``lax.reduce_window`` over the spatial axes with jaxpool's argument conventions."""
    n = len(window)
    strides = window if strides is None else int_tuple(strides, n, "strides")
    dilation = (1,) * n if dilation is None else int_tuple(dilation, n, "dilation")
    check_bool(ceil_mode, "ceil_mode")
    if ceil_mode:
        raise unsupported(op, "ceil_mode=True")
    pads = _padding(padding, n)
    if not isinstance(pads, str):
        pads = layout.full(pads, (0, 0))
    elif pads == "SAME":
        dilated = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
        pads = layout.full(lax.padtype_to_pads(layout.spatial_shape(x.shape), dilated, strides, "SAME"), (0, 0))
    return lax.reduce_window(
        x,
        np.array(init, x.dtype),
        computation,
        layout.full(window, 1),
        layout.full(strides, 1),
        pads,
        window_dilation=layout.full(dilation, 1),
    )


def average(x, layout: Layout, window, strides, padding, ceil_mode, count_include_pad, divisor_override, acc, out_dtype):
    """Average pooling over symbolic sizes: window sums divided by the divisor (PyTorch's rules)."""

    def reduce(v):
        return window_reduce(v, layout, window, strides, padding, None, ceil_mode, op="avg_pool", init=0, computation=lax.add)

    total = reduce(x.astype(acc))
    if divisor_override is not None:
        return (total / divisor_override).astype(out_dtype)
    if count_include_pad:  # windows never leave the padded input without ceil_mode
        return (total / int(np.prod(window))).astype(out_dtype)
    counts = reduce(jnp.ones(layout.spatial_shape(x.shape), acc).reshape(layout.full(layout.spatial_shape(x.shape), 1)))
    return (total / counts).astype(out_dtype)
