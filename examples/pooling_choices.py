"""The pooling layers an example network can put between its blocks, by name (``--pool``).

API::

    POOLS: dict[str, PoolChoice]       # name -> PoolChoice(make, random, about)
    NAMES = tuple(POOLS)
    DownPool(method="max")             # flax.linen Module: __call__(x, train=False) -> about half the H, W

Every choice roughly halves H and W of a ``(N, H, W, C)`` channels_last map (28 -> 14 -> 7 for
MNIST), so the network around it stays the same; most use NiN's overlapping 3x3 windows with stride
2 and padding 1. They are ``jaxpool.linen`` modules. Random ones (stochastic, mixed, fractional)
sample from the ``"dropout"`` rng in training and use their deterministic (inference-time) form in
evaluation; learned ones (gated, tree, gem) add parameters.

Not offered: ``min`` pooling, because these layers follow a ReLU, where the minimum of a window is
almost always 0, so the layer would pass almost nothing on. ``median`` is offered, though it is slow
(a sort per window) and, on sparse post-ReLU maps, often 0 as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn

import jaxpool.linen as jpl

WINDOW, STRIDES, PADDING = (3, 3), (2, 2), 1  # NiN's overlapping pooling; 28 -> 14 -> 7


class PoolChoice(NamedTuple):
    """``make()`` builds the module; ``random``: it takes ``deterministic`` at call time."""

    make: Callable[[], nn.Module]
    random: bool
    about: str


def _nin(module, **kwargs) -> Callable[[], nn.Module]:
    """``module`` with NiN's overlapping 3x3 windows, stride 2, padding 1 (and ``kwargs``)."""
    return lambda: module(window_shape=WINDOW, strides=STRIDES, padding=PADDING, **kwargs)


POOLS: dict[str, PoolChoice] = {
    "max": PoolChoice(_nin(jpl.MaxPool), False, "max pooling (NiN's choice)"),
    "avg": PoolChoice(_nin(jpl.AvgPool, count_include_pad=False), False, "average pooling (padding not counted)"),
    "lp": PoolChoice(_nin(jpl.LpPool, norm_type=2.0), False, "L2 pooling (Sermanet, Chintala & LeCun 2012)"),
    "median": PoolChoice(_nin(jpl.MedianPool), False, "median pooling (slow: a sort per window)"),
    "stochastic": PoolChoice(_nin(jpl.StochasticPool), True, "stochastic pooling (Zeiler & Fergus 2013)"),
    "mixed": PoolChoice(_nin(jpl.MixedPool), True, "max or average at random, per channel (Yu et al. 2014)"),
    "gated": PoolChoice(_nin(jpl.GatedPool), False, "learned max/average gate (Lee, Gallagher & Tu 2016)"),
    "tree": PoolChoice(_nin(jpl.TreePool), False, "learned tree of pooling filters (Lee, Gallagher & Tu 2016)"),
    "fractional": PoolChoice(
        lambda: jpl.FractionalMaxPool(output_ratio=(0.55, 0.55)),
        True,
        "fractional max pooling, ratio 0.55 (28 -> 15 -> 8), overlapping pseudo-random regions (Graham 2014)",
    ),
    "soft": PoolChoice(_nin(jpl.SoftPool), False, "softmax-weighted average (Stergiou, Poppe & Kalliatakis 2021)"),
    "gem": PoolChoice(_nin(jpl.GeMPool, learn_p=True), False, "generalized mean, learned p from 3 (Radenovic et al. 2018)"),
    "blur": PoolChoice(lambda: jpl.BlurPool((2, 2)), False, "blur, then subsample by 2 (Zhang 2019)"),
    "maxblur": PoolChoice(lambda: jpl.MaxBlurPool((2, 2)), False, "dense 2x2 max, then blur-subsample by 2 (Zhang 2019)"),
    "avgmax": PoolChoice(_nin(jpl.AvgMaxPool), False, "mean of average and max pooling"),
}
NAMES = tuple(POOLS)


class DownPool(nn.Module):
    """The pooling layer ``method`` (a key of :data:`POOLS`): ``(N, H, W, C) -> (N, ~H/2, ~W/2, C)``."""

    method: str = "max"

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.method not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(NAMES)}; got {self.method!r}")
        choice = POOLS[self.method]
        pool = choice.make()
        return pool(x, deterministic=not train) if choice.random else pool(x)
