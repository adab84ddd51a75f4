"""Flax NNX modules for every jaxpool op: ``jaxpool.nnx.MaxPool(window_shape=(2, 2))(x)``.

The same set, names and attributes as :mod:`jaxpool.linen`, generated from the same description
(:mod:`jaxpool._modules`). Learned parameters are ``nnx.Param`` created in the constructor, so
per-channel weights need ``num_features`` (the input's channel count) and random initialisers
``rngs``. Random modules follow :class:`flax.nnx.Dropout`: ``rngs`` at construction or call time,
``deterministic`` as attribute (toggled by ``model.eval()`` / ``model.train()`` / ``nnx.view``) or
call argument, which wins.
"""

from __future__ import annotations

import inspect

import jax
import numpy as np
from flax import nnx

from jaxpool._modules import OPS, PARAM_DTYPE, Extra, Op

RANDOM_EXTRAS = (
    Extra("deterministic", False, "``True``: the inference-time result (``model.eval()`` sets it; a call argument wins)"),
    Extra("rng_collection", "dropout", "the ``nnx.Rngs`` stream the key is drawn from"),
)
NUM_FEATURES = Extra("num_features", None, "the input's channel count; required with ``per_channel=True``")
RANDOMNESS = (
    "Randomness as :class:`flax.nnx.Dropout`: unless deterministic, the key comes from the call's ``rngs`` "
    "(an ``nnx.Rngs``, ``RngStream`` or key) or else from the ``rngs`` given at construction."
)
RNGS = inspect.Parameter("rngs", inspect.Parameter.KEYWORD_ONLY, default=None)


def _stream(rngs, collection: str):
    """Dropout's rule for constructor ``rngs``: a forked stream, or ``None``."""
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection].fork()
    if isinstance(rngs, nnx.RngStream):
        return rngs.fork()
    if rngs is None:
        return nnx.data(None)
    raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}")


def _key(rngs, collection: str) -> jax.Array:
    """Dropout's rule for call-time ``rngs``: a key from an ``Rngs``' stream, a stream, or the key itself."""
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection]()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or a jax.Array key, got {type(rngs).__name__}")


def _static_or_data(value):
    """Arrays given as attributes (``mask``, ``samples``) are pytree data; everything else is static."""
    return nnx.data(value) if isinstance(value, (jax.Array, np.ndarray)) else value


class PoolModule(nnx.Module):
    """Base of the generated modules: calls ``op``'s function with the attributes as keywords."""

    op: Op
    signature: inspect.Signature

    def __init__(self, *args, rngs: nnx.Rngs | None = None, **kwargs):
        bound = self.signature.bind(*args, rngs=rngs, **kwargs)
        bound.apply_defaults()
        attrs = {name: value for name, value in bound.arguments.items() if name != "rngs"}
        learned = {p.name for p in self.op.learned} if self.op.learns(attrs) else set()
        for name, value in attrs.items():
            if name not in learned:
                setattr(self, name, _static_or_data(value))
        if self.op.random:
            self.rngs = _stream(rngs, self.rng_collection)
        if learned:
            self._create_params(attrs, rngs)

    def _create_params(self, attrs, rngs) -> None:
        """One ``nnx.Param`` per learned parameter (GeM's ``p`` takes the place of the number ``p``)."""
        if rngs is None:
            raise TypeError(f"{self.op.name} learns {[p.name for p in self.op.learned]}: pass rngs=nnx.Rngs(seed) to create them")
        channels = attrs.get("num_features")
        if attrs.get("per_channel") and channels is None:
            raise ValueError(f"{self.op.name}(per_channel=True) needs num_features=C, the input's channel count")
        for p in self.op.learned:
            setattr(self, p.name, nnx.Param(p.init(attrs)(rngs.params(), p.shape(attrs, channels), PARAM_DTYPE)))

    def _attributes(self) -> dict:
        return {name: getattr(self, name) for name in self.op.attribute_names}

    def _learned(self, attrs) -> dict:
        return {p.name: getattr(self, p.name)[...] for p in self.op.learned} if self.op.learns(attrs) else {}

    def __call__(self, *inputs, **call_keywords):
        self.op.check_inputs(inputs)
        attrs = self.op.merge_call_keywords(self._attributes(), call_keywords)
        return self.op.call(inputs, attrs, self._learned(attrs))


class RandomPoolModule(PoolModule):
    """Base of the random modules: :class:`flax.nnx.Dropout`'s ``deterministic`` and ``rngs`` rules."""

    def __call__(self, x, *, deterministic: bool | None = None, rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None):
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic is None:
            raise ValueError(
                f"No `deterministic` argument was provided to {self.op.name}: pass it to the constructor or the call, "
                "or use model.eval() / model.train() / nnx.view(model, deterministic=...)"
            )
        attrs = self._attributes()
        key = None
        if self.op.needs_key(deterministic, attrs):
            rngs = self.rngs if rngs is None else rngs
            if rngs is None:
                raise ValueError(
                    f"`deterministic` is False, but no `rngs` argument was provided to {self.op.name} "
                    "as either a __call__ argument or at construction."
                )
            key = _key(rngs, self.rng_collection)
        return self.op.call((x,), attrs, {}, key, deterministic)

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``.

        Args:
          deterministic: if True, the module returns its inference-time result.
        """
        if deterministic is not None:
            self.deterministic = deterministic


def _module(op: Op) -> type[PoolModule]:
    """An NNX module whose constructor takes ``op``'s attributes (and ``rngs``)."""
    extras = (RANDOM_EXTRAS if op.random else ()) + ((NUM_FEATURES,) if "per_channel" in op.attribute_names else ())
    call = op.call_signature("*", "deterministic=None", "rngs=None") if op.random else op.call_signature()
    signature = inspect.Signature(op.parameters(extras) + [RNGS])
    namespace = {
        "__module__": __name__,
        "__qualname__": op.name,
        "__doc__": op.docstring(extras, RANDOMNESS, call),
        "__signature__": signature,
        "op": op,
        "signature": signature,
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
