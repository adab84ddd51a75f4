"""Flax Linen modules for every jaxpool op: ``jaxpool.linen.MaxPool(window_shape=(2, 2))(x)``.

Each module's attributes are its function's keywords (same names and defaults) plus, where it has
them, learned parameters and Dropout-style randomness; the classes are generated from the shared
description in :mod:`jaxpool._modules`, so each one calls its function and nothing else.

Random modules (``StochasticPool``, ``MixedPool``, ``FractionalMaxPool``) follow
:class:`flax.linen.Dropout`: ``model.apply(variables, x, rngs={"dropout": key})`` samples, and
``deterministic=True`` (attribute or call argument) returns the expectation with no rng.
"""

from __future__ import annotations

import inspect

import flax.linen as nn
import jax

from jaxpool._modules import OPS, PARAM_DTYPE, Extra, Op

RANDOM_EXTRAS = (
    Extra("deterministic", None, "``True``: the inference-time result; given here or at call time, not both (Dropout's rule)"),
    Extra("rng_collection", "dropout", "the rng stream the key is drawn from"),
)
RANDOMNESS = (
    "Randomness as :class:`flax.linen.Dropout`: unless deterministic, the key is the call's ``rng`` or "
    "``self.make_rng(rng_collection)``, so ``model.apply(variables, x, rngs={'dropout': key})`` drives it."
)


class PoolModule(nn.Module):
    """Base of the generated modules: calls ``op``'s function with the attributes as keywords."""

    op = None  # the class's Op (a class attribute, not a dataclass field)

    @nn.nowrap
    def _attributes(self) -> dict:
        return {name: getattr(self, name) for name in self.op.attribute_names}

    @nn.nowrap
    def _learned(self, x, attrs) -> dict:
        """The learned parameters, created on ``init`` from the attributes and ``x``'s channel count."""
        if not self.op.learns(attrs):
            return {}
        channels = self.op.channels(x, attrs)
        return {p.name: self.param(p.name, p.init(attrs), p.shape(attrs, channels), PARAM_DTYPE) for p in self.op.learned}

    @nn.compact
    def __call__(self, *inputs, **call_keywords):
        self.op.check_inputs(inputs)
        attrs = self.op.merge_call_keywords(self._attributes(), call_keywords)
        return self.op.call(inputs, attrs, self._learned(inputs[0], attrs))


class RandomPoolModule(PoolModule):
    """Base of the random modules: :class:`flax.linen.Dropout`'s ``deterministic`` and rng rules."""

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None, rng: jax.Array | None = None):
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        attrs = self._attributes()
        if rng is None and self.op.needs_key(deterministic, attrs):
            rng = self.make_rng(self.rng_collection)
        return self.op.call((x,), attrs, {}, rng, deterministic)


def _module(op: Op) -> type[PoolModule]:
    """A Linen dataclass whose fields are ``op``'s attributes."""
    extras = RANDOM_EXTRAS if op.random else ()
    params = op.parameters(extras)
    namespace = {
        "__module__": __name__,
        "__qualname__": op.name,
        "__doc__": op.docstring(
            extras, RANDOMNESS, op.call_signature("deterministic=None", "rng=None") if op.random else op.call_signature()
        ),
        "__annotations__": {p.name: "Any" if p.annotation is p.empty else p.annotation for p in params},
        "op": op,
        **{p.name: p.default for p in params if p.default is not inspect.Parameter.empty},
    }
    return type(op.name, (RandomPoolModule if op.random else PoolModule,), namespace)


_MODULES = {op.name: _module(op) for op in OPS}

MaxPool = _MODULES["MaxPool"]
MinPool = _MODULES["MinPool"]
AvgPool = _MODULES["AvgPool"]
LpPool = _MODULES["LpPool"]
MedianPool = _MODULES["MedianPool"]
StochasticPool = _MODULES["StochasticPool"]
MixedPool = _MODULES["MixedPool"]
GatedPool = _MODULES["GatedPool"]
TreePool = _MODULES["TreePool"]
FractionalMaxPool = _MODULES["FractionalMaxPool"]
SoftPool = _MODULES["SoftPool"]
GeMPool = _MODULES["GeMPool"]
BlurPool = _MODULES["BlurPool"]
MaxBlurPool = _MODULES["MaxBlurPool"]
GlobalAvgPool = _MODULES["GlobalAvgPool"]
GlobalMaxPool = _MODULES["GlobalMaxPool"]
AdaptiveAvgPool = _MODULES["AdaptiveAvgPool"]
AdaptiveMaxPool = _MODULES["AdaptiveMaxPool"]
SpatialPyramidPool = _MODULES["SpatialPyramidPool"]
MaxUnpool = _MODULES["MaxUnpool"]
AvgMaxPool = _MODULES["AvgMaxPool"]
GlobalAvgMaxPool = _MODULES["GlobalAvgMaxPool"]

__all__ = ["PoolModule", "RandomPoolModule", *_MODULES]
