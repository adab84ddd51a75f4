"""One description of every jaxpool op as a module, shared by :mod:`jaxpool.linen`, :mod:`jaxpool.nnx` and
:mod:`jaxpool.equinox`.

An :class:`Op` names the function, which of its arguments are arrays passed at call time, which are
learned parameters, whether it draws random numbers, and the module's own extra attributes. The
module's attributes are the function's remaining keywords, read from its signature (same names, same
defaults, same type annotations), so a module cannot drift from its function; the modules do no maths
of their own. ``scripts/gen_modules.py`` writes each flavour's classes from this table (explicit classes
that type checkers and IDEs see); ``tests/test_codegen.py`` fails when the committed ones are stale.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from jaxpool._geometry import int_tuple, window_tuple
from jaxpool._layout import layout_of
from jaxpool.adaptive import adaptive_avg_pool, adaptive_max_pool, global_avg_pool, global_max_pool, spatial_pyramid_pool
from jaxpool.avg import avg_pool, lp_pool
from jaxpool.blur import blur_pool, max_blur_pool
from jaxpool.combined import avgmax_pool, global_avgmax_pool
from jaxpool.fractional import fractional_max_pool
from jaxpool.gated import gated_pool, tree_pool
from jaxpool.max import max_pool, min_pool
from jaxpool.median import median_pool
from jaxpool.power import checked_exponent, gem_pool
from jaxpool.soft import soft_pool
from jaxpool.stochastic import mixed_pool, stochastic_pool
from jaxpool.unpool import max_unpool

Initializer = Callable[..., jax.Array]  # (key, shape, dtype) -> array, as jax.nn.initializers
PARAM_DTYPE = np.float32
# Arguments a random op's module supplies itself: the key comes from the module's rng stream.
RANDOM_ARGUMENTS = ("key", "deterministic")


@dataclasses.dataclass(frozen=True)
class Extra:
    """A module attribute that is not one of the function's keywords."""

    name: str
    default: Any
    doc: str
    annotation: str = "Any"


@dataclasses.dataclass(frozen=True)
class Learned:
    """A learned parameter: the function argument it feeds, its shape and its initialiser.

    ``shape(attrs, channels)`` and ``init(attrs)`` read the module's attributes; ``channels`` is the
    input's channel count (``None`` unless ``attrs["per_channel"]``).
    """

    name: str
    argument: str
    shape: Callable[[Mapping[str, Any], int | None], tuple[int, ...]]
    init: Callable[[Mapping[str, Any]], Initializer]


@dataclasses.dataclass(frozen=True)
class Op:
    """A jaxpool function seen as a module.

    Attributes:
      name: the module's class name.
      fn: the jaxpool function.
      summary: one line for the module's docstring.
      inputs: the function's positional array arguments, the module's positional call arguments.
      call_keywords: keywords that ``__call__`` also takes (per-batch arrays or sizes); a value given
        there replaces the attribute's.
      learned: learned parameters (the function's weight arguments are then not attributes).
      learn_if: an attribute that switches ``learned`` on; the function's keyword of the same name as
        the parameter stays an attribute, its value when off and its initial value when on.
      random: the function takes ``key`` and ``deterministic``.
      key_unless: a keyword whose value, when not ``None``, replaces the key (no rng needed).
      extras: module attributes beyond the function's keywords.
      defaults: replaced defaults (``None`` for a required argument that ``__call__`` may supply).
      note: extra docstring paragraph.
    """

    name: str
    fn: Callable
    summary: str
    inputs: tuple[str, ...] = ("x",)
    call_keywords: tuple[str, ...] = ()
    learned: tuple[Learned, ...] = ()
    learn_if: str | None = None
    random: bool = False
    key_unless: str | None = None
    extras: tuple[Extra, ...] = ()
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    note: str = ""

    @functools.cached_property
    def keywords(self) -> tuple[inspect.Parameter, ...]:
        """The function's parameters that become attributes, with the module's defaults."""
        skip = set(self.inputs) | (set(RANDOM_ARGUMENTS) if self.random else set())
        if self.learn_if is None:
            skip |= {p.argument for p in self.learned}
        params = [p for name, p in inspect.signature(self.fn).parameters.items() if name not in skip]
        return tuple(p.replace(default=self.defaults[p.name]) if p.name in self.defaults else p for p in params)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.keywords) + tuple(e.name for e in self.extras)

    def parameters(self, extras: tuple[Extra, ...] = (), defaults: Mapping[str, Any] | None = None) -> list[inspect.Parameter]:
        """The module's attributes as parameters: the function's keywords (same kinds), then keyword-only extras.

        ``defaults`` replaces a flavour's defaults (Equinox: ``data_format="channels_first"``)."""
        kw = inspect.Parameter.KEYWORD_ONLY
        params = list(self.keywords) + [
            inspect.Parameter(e.name, kw, default=e.default, annotation=e.annotation) for e in self.extras + extras
        ]
        defaults = defaults or {}
        return [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in params]

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    def call_signature(self, *trailing: str) -> str:
        """``__call__``'s arguments as text, for the docstring."""
        return ", ".join(self.inputs + tuple(f"{k}=None" for k in self.call_keywords) + trailing)

    def learns(self, attrs: Mapping[str, Any]) -> bool:
        return bool(self.learned) and (self.learn_if is None or bool(attrs[self.learn_if]))

    def needs_key(self, deterministic: bool, attrs: Mapping[str, Any]) -> bool:
        return not deterministic and (self.key_unless is None or attrs[self.key_unless] is None)

    def channels(self, x, attrs: Mapping[str, Any]) -> int | None:
        """``x``'s channel count where the learned weights are per channel, else ``None``."""
        if not attrs.get("per_channel"):
            return None
        return x.shape[layout_of(x, len(window_tuple(attrs["window_shape"])), attrs["data_format"]).channel_axis]

    def merge_call_keywords(self, attrs: Mapping[str, Any], call_keywords: Mapping[str, Any]) -> dict[str, Any]:
        """The attributes, with the call's keywords (``mask``, ``output_size``) where given (not ``None``)."""
        return {**attrs, **{k: v for k, v in call_keywords.items() if v is not None}}

    def call(self, inputs, attrs: Mapping[str, Any], learned: Mapping[str, Any], key=None, deterministic=None):
        """Calls the function: attributes as keywords, learned values by argument name, then the rng."""
        kwargs = {p.name: attrs[p.name] for p in self.keywords}
        kwargs.update({p.argument: learned[p.name] for p in self.learned if p.name in learned})
        if self.random:
            kwargs.update(key=key, deterministic=deterministic)
        return self.fn(*inputs, **kwargs)

    def docstring(self, extras: tuple[Extra, ...], randomness: str, call: str, defaults: Mapping[str, Any] | None = None) -> str:
        """The module's docstring: summary, function reference, attribute list; nothing of the function's own."""
        keywords = self.parameters(defaults=defaults)[: len(self.keywords)]
        shown = [p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in keywords]
        same = "same names and defaults" if not defaults else f"same names and defaults except {', '.join(defaults)}"
        lines = [
            self.summary,
            "",
            f"Module form of :func:`jaxpool.{self.fn.__name__}`: the attributes are its keywords, {same}",
            f"({', '.join(shown)}); called as ``module({call})``.",
        ]
        documented = [e for e in self.extras + extras if e.doc]
        if documented:
            lines += ["", "Other attributes:", ""] + [f"* ``{_shown(e)}``: {e.doc}" for e in documented]
        if self.random:
            lines += ["", randomness]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


def _shown(e: Extra) -> str:
    """``name=default`` for the docstring; a function default by its name."""
    return f"{e.name}={getattr(e.default, '__name__', None) or repr(e.default)}"


# ----------------------------------------------------------------------------------------------
# Learned-parameter shapes and initialisers.


def _window(attrs) -> tuple[int, ...]:
    return window_tuple(attrs["window_shape"])


def _weight_shape(attrs, channels) -> tuple[int, ...]:
    """A weight per window element: ``window_shape``, or ``(*window_shape, C)`` per channel."""
    return _window(attrs) + ((channels,) if attrs["per_channel"] else ())


def _leaves(attrs) -> int:
    return 2 ** (int_tuple(attrs["depth"], 1, "depth", minimum=2)[0] - 1)


def mean_filter_init(window_size: int, noise: float = 0.1) -> Initializer:
    """``1/K`` plus normal noise of standard deviation ``noise/K`` (``K`` = ``window_size``).

    Tree pooling's leaves start as (nearly) average pooling. They must differ: identical leaves get
    identical gradients and stay identical for ever (a saddle point), so the noise breaks the symmetry.
    """

    def init(key, shape, dtype=PARAM_DTYPE):
        return ((1 + noise * jax.random.normal(key, shape, dtype)) / window_size).astype(dtype)

    return init


_ZEROS = jax.nn.initializers.zeros
_PER_CHANNEL = Extra("per_channel", False, "one weight per window element and channel; else shared by all channels", "bool")
_GATE_INIT = Extra(
    "gate_init", _ZEROS, "gate initialiser; zeros: every gate starts at sigmoid(0) = 1/2, an even mix", "Initializer"
)
# Where parameters are created at construction (nnx, equinox), per-channel weights need the channel count.
NUM_FEATURES = Extra("num_features", None, "the input's channel count; required with ``per_channel=True``", "int | None")
_GATE = Learned("gate", "gate_weights", _weight_shape, lambda a: a["gate_init"])
_LEAVES = Learned(
    "leaves",
    "leaf_weights",
    lambda a, c: (_leaves(a),) + _weight_shape(a, c),
    lambda a: a["leaf_init"] or mean_filter_init(math.prod(_window(a))),
)
_GATES = Learned("gates", "gate_weights", lambda a, c: (_leaves(a) - 1,) + _weight_shape(a, c), lambda a: a["gate_init"])
_GLOBAL_MASK = ("mask",)

SPP_NOTE = """\
The output length is the same for every input size, so one classifier head serves all sizes; but
``jax.jit`` compiles once per input shape. To bound compilations, bucket the sizes: resize each batch,
outside the jitted function, to the nearest of a few sizes (only ``len(buckets)`` compilations)::

    buckets = (128, 192, 256)
    size = min(buckets, key=lambda b: abs(b - max(images.shape[1:3])))
    images = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "linear")
    features = apply(variables, images)  # apply = jax.jit(model.apply)"""

OPS: tuple[Op, ...] = (
    Op("MaxPool", max_pool, "Max pooling; with ``return_indices=True`` returns ``(y, indices)`` for MaxUnpool."),
    Op("MinPool", min_pool, "Min pooling."),
    Op("AvgPool", avg_pool, "Average pooling."),
    Op("LpPool", lp_pool, "Power-average (LP) pooling (Sermanet, Chintala & LeCun 2012)."),
    Op("MedianPool", median_pool, "Median pooling (a median filter with ``strides=1``)."),
    Op("StochasticPool", stochastic_pool, "Stochastic pooling (Zeiler & Fergus 2013).", random=True),
    Op("MixedPool", mixed_pool, "Mixed max/average pooling (Yu et al. 2014).", random=True),
    Op(
        "GatedPool",
        gated_pool,
        "Gated max/average pooling with a learned gate (Lee, Gallagher & Tu 2016).",
        learned=(_GATE,),
        extras=(_PER_CHANNEL, _GATE_INIT),
    ),
    Op(
        "TreePool",
        tree_pool,
        "Tree pooling: learned pooling filters mixed by learned gates (Lee, Gallagher & Tu 2016).",
        learned=(_LEAVES, _GATES),
        extras=(
            Extra(
                "depth", 2, "tree depth: ``2**(depth-1)`` leaf filters (param ``leaves``) and one gate fewer (``gates``)", "int"
            ),
            _PER_CHANNEL,
            Extra(
                "leaf_init",
                None,
                "leaf initialiser; ``None``: 1/K plus normal noise of std 0.1/K (K = window size), near average "
                "pooling; the noise breaks the symmetry of identical leaves, which would otherwise stay identical",
                "Initializer | None",
            ),
            _GATE_INIT,
        ),
    ),
    Op(
        "FractionalMaxPool",
        fractional_max_pool,
        "Fractional max pooling (Graham 2014).",
        random=True,
        key_unless="samples",
    ),
    Op("SoftPool", soft_pool, "SoftPool: softmax-weighted window average (Stergiou et al. 2021)."),
    Op(
        "GeMPool",
        gem_pool,
        "Generalized-mean pooling (Radenović, Tolias & Chum 2018); global unless ``window_shape`` is given.",
        learned=(Learned("p", "p", lambda a, c: (), lambda a: jax.nn.initializers.constant(checked_exponent(a["p"]))),),
        learn_if="learn_p",
        extras=(Extra("learn_p", False, "learn the exponent: a scalar param ``p`` initialised to the attribute ``p``", "bool"),),
    ),
    Op("BlurPool", blur_pool, "Anti-aliased subsampling (Zhang 2019)."),
    Op("MaxBlurPool", max_blur_pool, "Anti-aliased max pooling: dense max, then BlurPool (Zhang 2019)."),
    Op("GlobalAvgPool", global_avg_pool, "Mean over all spatial positions.", call_keywords=_GLOBAL_MASK),
    Op("GlobalMaxPool", global_max_pool, "Maximum over all spatial positions.", call_keywords=_GLOBAL_MASK),
    Op("AdaptiveAvgPool", adaptive_avg_pool, "Adaptive average pooling to a fixed ``output_size``."),
    Op("AdaptiveMaxPool", adaptive_max_pool, "Adaptive max pooling to a fixed ``output_size``."),
    Op(
        "SpatialPyramidPool",
        spatial_pyramid_pool,
        "Spatial pyramid pooling (He et al. 2014): a fixed-length vector for any input size.",
        note=SPP_NOTE,
    ),
    Op(
        "MaxUnpool",
        max_unpool,
        "Max unpooling (Zeiler & Fergus 2014): ``y`` written back where ``MaxPool(return_indices=True)``'s ``indices`` point.",
        inputs=("y", "indices"),
        call_keywords=("output_size",),
        defaults={"output_size": None},
    ),
    Op("AvgMaxPool", avgmax_pool, "Average and max pooling combined (timm's avgmax / catavgmax)."),
    Op("GlobalAvgMaxPool", global_avgmax_pool, "Global average and max pooling combined.", call_keywords=_GLOBAL_MASK),
)
OPS_BY_NAME: Mapping[str, Op] = {op.name: op for op in OPS}
