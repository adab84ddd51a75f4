"""Flax NNX modules for every jaxpool op: ``jaxpool.nnx.MaxPool(window_shape=(2, 2))(x)``.

The same set, names and attributes as :mod:`jaxpool.linen`, generated (below the marker, by
``scripts/gen_modules.py``) from the same table (:mod:`jaxpool._modules`). Learned parameters are
``nnx.Param`` created in the constructor, so per-channel weights need ``num_features`` (the input's
channel count) and random initialisers ``rngs``. Random modules follow :class:`flax.nnx.Dropout`:
``rngs`` at construction or call time, ``deterministic`` as attribute (toggled by ``model.eval()`` /
``model.train()`` / ``nnx.view``) or call argument, which wins.

Needs flax (``pip install "jaxpool[flax]"``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import numpy as np

try:
    from flax import nnx
except ModuleNotFoundError as error:  # an optional dependency: say which extra brings it
    raise ModuleNotFoundError(f'jaxpool.nnx needs flax: pip install "jaxpool[flax]" ({error})') from error

from jaxpool._geometry import PaddingLike
from jaxpool._modules import OPS_BY_NAME, PARAM_DTYPE, Initializer, Op


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

    op: ClassVar[Op]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # nnx's metaclass hides __init__ from inspect.signature(cls) (help(), IDEs at run time): show it.
        cls.__signature__ = inspect.signature(cls.__init__).replace(
            parameters=list(inspect.signature(cls.__init__).parameters.values())[1:]
        )

    def _setup(self, attrs: dict[str, Any], rngs: nnx.Rngs | None) -> None:
        """Stores the attributes; learned ones become ``nnx.Param`` (GeM's ``p`` takes the place of the number)."""
        learned = {p.name for p in self.op.learned} if self.op.learns(attrs) else set()
        for name, value in attrs.items():
            if name not in learned:
                setattr(self, name, _static_or_data(value))
        if self.op.random:
            self.rngs = _stream(rngs, attrs["rng_collection"])
        if learned:
            self._create_params(attrs, rngs)

    def _create_params(self, attrs, rngs) -> None:
        if rngs is None:
            raise TypeError(f"{self.op.name} learns {[p.name for p in self.op.learned]}: pass rngs=nnx.Rngs(seed) to create them")
        channels = attrs.get("num_features")
        if attrs.get("per_channel") and channels is None:
            raise ValueError(f"{self.op.name}(per_channel=True) needs num_features=C, the input's channel count")
        for p in self.op.learned:
            setattr(self, p.name, nnx.Param(p.init(attrs)(rngs.params(), p.shape(attrs, channels), PARAM_DTYPE)))

    def _attributes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.op.attribute_names}

    def _learned(self, attrs) -> dict[str, jax.Array]:
        return {p.name: getattr(self, p.name)[...] for p in self.op.learned} if self.op.learns(attrs) else {}

    def _pool(self, inputs: tuple[jax.Array, ...], **call_keywords):
        """The function on ``inputs``; a call keyword that is not ``None`` replaces its attribute."""
        attrs = self.op.merge_call_keywords(self._attributes(), call_keywords)
        return self.op.call(inputs, attrs, self._learned(attrs))


class RandomPoolModule(PoolModule):
    """Base of the random modules: :class:`flax.nnx.Dropout`'s ``deterministic`` and ``rngs`` rules."""

    if TYPE_CHECKING:  # set by _setup from each generated subclass's constructor
        deterministic: bool | None
        rng_collection: str
        rngs: nnx.RngStream | None

    def _sample(self, x: jax.Array, deterministic: bool | None, rngs: nnx.Rngs | nnx.RngStream | jax.Array | None):
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


# ---- Generated by scripts/gen_modules.py from jaxpool._modules.OPS: edit the table, not the classes below. ----


class MaxPool(PoolModule):
    """Max pooling; with ``return_indices=True`` returns ``(y, indices)`` for MaxUnpool.

    Module form of :func:`jaxpool.max_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', dilation=None, ceil_mode=False, return_indices=False,
    data_format='channels_last', backward='argmax'); called as ``module(x)``.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    dilation: int | Sequence[int] | None
    ceil_mode: bool
    return_indices: bool
    data_format: str
    backward: str

    op = OPS_BY_NAME["MaxPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        dilation: int | Sequence[int] | None = None,
        ceil_mode: bool = False,
        return_indices: bool = False,
        data_format: str = "channels_last",
        backward: str = "argmax",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                dilation=dilation,
                ceil_mode=ceil_mode,
                return_indices=return_indices,
                data_format=data_format,
                backward=backward,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        return self._pool((x,))


class MinPool(PoolModule):
    """Min pooling.

    Module form of :func:`jaxpool.min_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', dilation=None, ceil_mode=False, data_format='channels_last', backward='argmax');
    called as ``module(x)``.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    dilation: int | Sequence[int] | None
    ceil_mode: bool
    data_format: str
    backward: str

    op = OPS_BY_NAME["MinPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        dilation: int | Sequence[int] | None = None,
        ceil_mode: bool = False,
        data_format: str = "channels_last",
        backward: str = "argmax",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                dilation=dilation,
                ceil_mode=ceil_mode,
                data_format=data_format,
                backward=backward,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class AvgPool(PoolModule):
    """Average pooling.

    Module form of :func:`jaxpool.avg_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', ceil_mode=False, count_include_pad=True, divisor_override=None,
    data_format='channels_last'); called as ``module(x)``.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None
    data_format: str

    op = OPS_BY_NAME["AvgPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                ceil_mode=ceil_mode,
                count_include_pad=count_include_pad,
                divisor_override=divisor_override,
                data_format=data_format,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class LpPool(PoolModule):
    """Power-average (LP) pooling (Sermanet, Chintala & LeCun 2012).

    Module form of :func:`jaxpool.lp_pool`: the attributes are its keywords, same names and defaults
    (norm_type, window_shape, strides=None, padding='VALID', ceil_mode=False, data_format='channels_last'); called as
    ``module(x)``.
    """

    norm_type: float
    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    ceil_mode: bool
    data_format: str

    op = OPS_BY_NAME["LpPool"]

    def __init__(
        self,
        norm_type: float,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        ceil_mode: bool = False,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                norm_type=norm_type,
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                ceil_mode=ceil_mode,
                data_format=data_format,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class MedianPool(PoolModule):
    """Median pooling (a median filter with ``strides=1``).

    Module form of :func:`jaxpool.median_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', data_format='channels_last'); called as ``module(x)``.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    data_format: str

    op = OPS_BY_NAME["MedianPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(dict(window_shape=window_shape, strides=strides, padding=padding, data_format=data_format), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class StochasticPool(RandomPoolModule):
    """Stochastic pooling (Zeiler & Fergus 2013).

    Module form of :func:`jaxpool.stochastic_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', ceil_mode=False, data_format='channels_last'); called as ``module(x, *,
    deterministic=None, rngs=None)``.

    Other attributes:

    * ``deterministic=False``: ``True``: the inference-time result (``model.eval()`` sets it; a call argument wins)
    * ``rng_collection='dropout'``: the ``nnx.Rngs`` stream the key is drawn from

    Randomness as :class:`flax.nnx.Dropout`: unless deterministic, the key comes from the call's ``rngs`` (an ``nnx.Rngs``,
    ``RngStream`` or key) or else from the ``rngs`` given at construction.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    ceil_mode: bool
    data_format: str
    deterministic: bool | None
    rng_collection: str

    op = OPS_BY_NAME["StochasticPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        ceil_mode: bool = False,
        data_format: str = "channels_last",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                ceil_mode=ceil_mode,
                data_format=data_format,
                deterministic=deterministic,
                rng_collection=rng_collection,
            ),
            rngs,
        )

    def __call__(
        self,
        x: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        return self._sample(x, deterministic, rngs)


class MixedPool(RandomPoolModule):
    """Mixed max/average pooling (Yu et al. 2014).

    Module form of :func:`jaxpool.mixed_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', mix_prob=0.5, per='channel', ceil_mode=False, data_format='channels_last');
    called as ``module(x, *, deterministic=None, rngs=None)``.

    Other attributes:

    * ``deterministic=False``: ``True``: the inference-time result (``model.eval()`` sets it; a call argument wins)
    * ``rng_collection='dropout'``: the ``nnx.Rngs`` stream the key is drawn from

    Randomness as :class:`flax.nnx.Dropout`: unless deterministic, the key comes from the call's ``rngs`` (an ``nnx.Rngs``,
    ``RngStream`` or key) or else from the ``rngs`` given at construction.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    mix_prob: float
    per: str
    ceil_mode: bool
    data_format: str
    deterministic: bool | None
    rng_collection: str

    op = OPS_BY_NAME["MixedPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        mix_prob: float = 0.5,
        per: str = "channel",
        ceil_mode: bool = False,
        data_format: str = "channels_last",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                mix_prob=mix_prob,
                per=per,
                ceil_mode=ceil_mode,
                data_format=data_format,
                deterministic=deterministic,
                rng_collection=rng_collection,
            ),
            rngs,
        )

    def __call__(
        self,
        x: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        return self._sample(x, deterministic, rngs)


class GatedPool(PoolModule):
    """Gated max/average pooling with a learned gate (Lee, Gallagher & Tu 2016).

    Module form of :func:`jaxpool.gated_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', ceil_mode=False, data_format='channels_last'); called as ``module(x)``.

    Other attributes:

    * ``per_channel=False``: one weight per window element and channel; else shared by all channels
    * ``gate_init=zeros``: gate initialiser; zeros: every gate starts at sigmoid(0) = 1/2, an even mix
    * ``num_features=None``: the input's channel count; required with ``per_channel=True``
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    ceil_mode: bool
    data_format: str
    per_channel: bool
    gate_init: Initializer
    num_features: int | None
    gate: nnx.Param

    op = OPS_BY_NAME["GatedPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        ceil_mode: bool = False,
        data_format: str = "channels_last",
        per_channel: bool = False,
        gate_init: Initializer = jax.nn.initializers.zeros,
        num_features: int | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                ceil_mode=ceil_mode,
                data_format=data_format,
                per_channel=per_channel,
                gate_init=gate_init,
                num_features=num_features,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class TreePool(PoolModule):
    """Tree pooling: learned pooling filters mixed by learned gates (Lee, Gallagher & Tu 2016).

    Module form of :func:`jaxpool.tree_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', ceil_mode=False, data_format='channels_last'); called as ``module(x)``.

    Other attributes:

    * ``depth=2``: tree depth: ``2**(depth-1)`` leaf filters (param ``leaves``) and one gate fewer (``gates``)
    * ``per_channel=False``: one weight per window element and channel; else shared by all channels
    * ``leaf_init=None``: leaf initialiser; ``None``: 1/K plus normal noise of std 0.1/K (K = window size), near average pooling;
      the noise breaks the symmetry of identical leaves, which would otherwise stay identical
    * ``gate_init=zeros``: gate initialiser; zeros: every gate starts at sigmoid(0) = 1/2, an even mix
    * ``num_features=None``: the input's channel count; required with ``per_channel=True``
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    ceil_mode: bool
    data_format: str
    depth: int
    per_channel: bool
    leaf_init: Initializer | None
    gate_init: Initializer
    num_features: int | None
    gates: nnx.Param
    leaves: nnx.Param

    op = OPS_BY_NAME["TreePool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        ceil_mode: bool = False,
        data_format: str = "channels_last",
        depth: int = 2,
        per_channel: bool = False,
        leaf_init: Initializer | None = None,
        gate_init: Initializer = jax.nn.initializers.zeros,
        num_features: int | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                ceil_mode=ceil_mode,
                data_format=data_format,
                depth=depth,
                per_channel=per_channel,
                leaf_init=leaf_init,
                gate_init=gate_init,
                num_features=num_features,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class FractionalMaxPool(RandomPoolModule):
    """Fractional max pooling (Graham 2014).

    Module form of :func:`jaxpool.fractional_max_pool`: the attributes are its keywords, same names and defaults
    (window_shape=None, output_size=None, output_ratio=None, samples=None, random_regions=False, overlapping=True,
    return_indices=False, data_format='channels_last'); called as ``module(x, *, deterministic=None, rngs=None)``.

    Other attributes:

    * ``deterministic=False``: ``True``: the inference-time result (``model.eval()`` sets it; a call argument wins)
    * ``rng_collection='dropout'``: the ``nnx.Rngs`` stream the key is drawn from

    Randomness as :class:`flax.nnx.Dropout`: unless deterministic, the key comes from the call's ``rngs`` (an ``nnx.Rngs``,
    ``RngStream`` or key) or else from the ``rngs`` given at construction.
    """

    window_shape: Sequence[int] | None
    output_size: int | Sequence[int] | None
    output_ratio: float | Sequence[float] | None
    samples: jax.Array | None
    random_regions: bool
    overlapping: bool
    return_indices: bool
    data_format: str
    deterministic: bool | None
    rng_collection: str

    op = OPS_BY_NAME["FractionalMaxPool"]

    def __init__(
        self,
        window_shape: Sequence[int] | None = None,
        output_size: int | Sequence[int] | None = None,
        output_ratio: float | Sequence[float] | None = None,
        *,
        samples: jax.Array | None = None,
        random_regions: bool = False,
        overlapping: bool = True,
        return_indices: bool = False,
        data_format: str = "channels_last",
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                output_size=output_size,
                output_ratio=output_ratio,
                samples=samples,
                random_regions=random_regions,
                overlapping=overlapping,
                return_indices=return_indices,
                data_format=data_format,
                deterministic=deterministic,
                rng_collection=rng_collection,
            ),
            rngs,
        )

    def __call__(
        self,
        x: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        return self._sample(x, deterministic, rngs)


class SoftPool(PoolModule):
    """SoftPool: softmax-weighted window average (Stergiou et al. 2021).

    Module form of :func:`jaxpool.soft_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', data_format='channels_last'); called as ``module(x)``.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    data_format: str

    op = OPS_BY_NAME["SoftPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(dict(window_shape=window_shape, strides=strides, padding=padding, data_format=data_format), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class GeMPool(PoolModule):
    """Generalized-mean pooling (Radenović, Tolias & Chum 2018); global unless ``window_shape`` is given.

    Module form of :func:`jaxpool.gem_pool`: the attributes are its keywords, same names and defaults
    (p=3.0, window_shape=None, strides=None, padding='VALID', eps=1e-06, num_spatial_dims=None, data_format='channels_last');
    called as ``module(x)``.

    Other attributes:

    * ``learn_p=False``: learn the exponent: a scalar param ``p`` initialised to the attribute ``p``
    """

    p: float | jax.Array | nnx.Param
    window_shape: Sequence[int] | None
    strides: int | Sequence[int] | None
    padding: PaddingLike
    eps: float
    num_spatial_dims: int | None
    data_format: str
    learn_p: bool

    op = OPS_BY_NAME["GeMPool"]

    def __init__(
        self,
        p: float | jax.Array = 3.0,
        window_shape: Sequence[int] | None = None,
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        eps: float = 1e-06,
        num_spatial_dims: int | None = None,
        data_format: str = "channels_last",
        learn_p: bool = False,
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                p=p,
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                eps=eps,
                num_spatial_dims=num_spatial_dims,
                data_format=data_format,
                learn_p=learn_p,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class BlurPool(PoolModule):
    """Anti-aliased subsampling (Zhang 2019).

    Module form of :func:`jaxpool.blur_pool`: the attributes are its keywords, same names and defaults
    (window_shape=(2, 2), strides=None, filter_size=3, data_format='channels_last'); called as ``module(x)``.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    filter_size: int | Sequence[int]
    data_format: str

    op = OPS_BY_NAME["BlurPool"]

    def __init__(
        self,
        window_shape: Sequence[int] = (2, 2),
        strides: int | Sequence[int] | None = None,
        *,
        filter_size: int | Sequence[int] = 3,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(dict(window_shape=window_shape, strides=strides, filter_size=filter_size, data_format=data_format), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class MaxBlurPool(PoolModule):
    """Anti-aliased max pooling: dense max, then BlurPool (Zhang 2019).

    Module form of :func:`jaxpool.max_blur_pool`: the attributes are its keywords, same names and defaults
    (window_shape=(2, 2), strides=None, padding='VALID', filter_size=3, data_format='channels_last'); called as ``module(x)``.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    filter_size: int | Sequence[int]
    data_format: str

    op = OPS_BY_NAME["MaxBlurPool"]

    def __init__(
        self,
        window_shape: Sequence[int] = (2, 2),
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        filter_size: int | Sequence[int] = 3,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                filter_size=filter_size,
                data_format=data_format,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class GlobalAvgPool(PoolModule):
    """Mean over all spatial positions.

    Module form of :func:`jaxpool.global_avg_pool`: the attributes are its keywords, same names and defaults
    (num_spatial_dims=2, keepdims=False, data_format='channels_last', mask=None); called as ``module(x, mask=None)``.
    """

    num_spatial_dims: int
    keepdims: bool
    data_format: str
    mask: jax.Array | None

    op = OPS_BY_NAME["GlobalAvgPool"]

    def __init__(
        self,
        *,
        num_spatial_dims: int = 2,
        keepdims: bool = False,
        data_format: str = "channels_last",
        mask: jax.Array | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(dict(num_spatial_dims=num_spatial_dims, keepdims=keepdims, data_format=data_format, mask=mask), rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self._pool((x,), mask=mask)


class GlobalMaxPool(PoolModule):
    """Maximum over all spatial positions.

    Module form of :func:`jaxpool.global_max_pool`: the attributes are its keywords, same names and defaults
    (num_spatial_dims=2, keepdims=False, data_format='channels_last', mask=None); called as ``module(x, mask=None)``.
    """

    num_spatial_dims: int
    keepdims: bool
    data_format: str
    mask: jax.Array | None

    op = OPS_BY_NAME["GlobalMaxPool"]

    def __init__(
        self,
        *,
        num_spatial_dims: int = 2,
        keepdims: bool = False,
        data_format: str = "channels_last",
        mask: jax.Array | None = None,
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(dict(num_spatial_dims=num_spatial_dims, keepdims=keepdims, data_format=data_format, mask=mask), rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self._pool((x,), mask=mask)


class AdaptiveAvgPool(PoolModule):
    """Adaptive average pooling to a fixed ``output_size``.

    Module form of :func:`jaxpool.adaptive_avg_pool`: the attributes are its keywords, same names and defaults
    (output_size, data_format='channels_last'); called as ``module(x)``.
    """

    output_size: Sequence[int | None]
    data_format: str

    op = OPS_BY_NAME["AdaptiveAvgPool"]

    def __init__(self, output_size: Sequence[int | None], *, data_format: str = "channels_last", rngs: nnx.Rngs | None = None):
        self._setup(dict(output_size=output_size, data_format=data_format), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class AdaptiveMaxPool(PoolModule):
    """Adaptive max pooling to a fixed ``output_size``.

    Module form of :func:`jaxpool.adaptive_max_pool`: the attributes are its keywords, same names and defaults
    (output_size, return_indices=False, data_format='channels_last'); called as ``module(x)``.
    """

    output_size: Sequence[int | None]
    return_indices: bool
    data_format: str

    op = OPS_BY_NAME["AdaptiveMaxPool"]

    def __init__(
        self,
        output_size: Sequence[int | None],
        *,
        return_indices: bool = False,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(dict(output_size=output_size, return_indices=return_indices, data_format=data_format), rngs)

    def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        return self._pool((x,))


class SpatialPyramidPool(PoolModule):
    """Spatial pyramid pooling (He et al. 2014): a fixed-length vector for any input size.

    Module form of :func:`jaxpool.spatial_pyramid_pool`: the attributes are its keywords, same names and defaults
    (levels=(1, 2, 4), method='max', num_spatial_dims=2, data_format='channels_last'); called as ``module(x)``.

    The output length is the same for every input size, so one classifier head serves all sizes; but
    ``jax.jit`` compiles once per input shape. To bound compilations, bucket the sizes: resize each batch,
    outside the jitted function, to the nearest of a few sizes (only ``len(buckets)`` compilations)::

        buckets = (128, 192, 256)
        size = min(buckets, key=lambda b: abs(b - max(images.shape[1:3])))
        images = jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), "linear")
        features = apply(variables, images)  # apply = jax.jit(model.apply)
    """

    levels: Sequence[int | Sequence[int]]
    method: str
    num_spatial_dims: int
    data_format: str

    op = OPS_BY_NAME["SpatialPyramidPool"]

    def __init__(
        self,
        levels: Sequence[int | Sequence[int]] = (1, 2, 4),
        *,
        method: str = "max",
        num_spatial_dims: int = 2,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(dict(levels=levels, method=method, num_spatial_dims=num_spatial_dims, data_format=data_format), rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class MaxUnpool(PoolModule):
    """Max unpooling (Zeiler & Fergus 2014): ``y`` written back where ``MaxPool(return_indices=True)``'s ``indices`` point.

    Module form of :func:`jaxpool.max_unpool`: the attributes are its keywords, same names and defaults
    (output_size=None, window_shape=None, strides=None, padding='VALID', dilation=None, data_format='channels_last'); called as
    ``module(y, indices, output_size=None)``.
    """

    output_size: Sequence[int] | None
    window_shape: Sequence[int] | None
    strides: int | Sequence[int] | None
    padding: PaddingLike
    dilation: int | Sequence[int] | None
    data_format: str

    op = OPS_BY_NAME["MaxUnpool"]

    def __init__(
        self,
        output_size: Sequence[int] | None = None,
        *,
        window_shape: Sequence[int] | None = None,
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        dilation: int | Sequence[int] | None = None,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                output_size=output_size,
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                dilation=dilation,
                data_format=data_format,
            ),
            rngs,
        )

    def __call__(self, y: jax.Array, indices: jax.Array, output_size: Sequence[int] | None = None) -> jax.Array:
        return self._pool((y, indices), output_size=output_size)


class AvgMaxPool(PoolModule):
    """Average and max pooling combined (timm's avgmax / catavgmax).

    Module form of :func:`jaxpool.avgmax_pool`: the attributes are its keywords, same names and defaults
    (window_shape, strides=None, padding='VALID', combine='mean', ceil_mode=False, count_include_pad=True,
    data_format='channels_last'); called as ``module(x)``.
    """

    window_shape: Sequence[int]
    strides: int | Sequence[int] | None
    padding: PaddingLike
    combine: str
    ceil_mode: bool
    count_include_pad: bool
    data_format: str

    op = OPS_BY_NAME["AvgMaxPool"]

    def __init__(
        self,
        window_shape: Sequence[int],
        strides: int | Sequence[int] | None = None,
        padding: PaddingLike = "VALID",
        *,
        combine: str = "mean",
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                window_shape=window_shape,
                strides=strides,
                padding=padding,
                combine=combine,
                ceil_mode=ceil_mode,
                count_include_pad=count_include_pad,
                data_format=data_format,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self._pool((x,))


class GlobalAvgMaxPool(PoolModule):
    """Global average and max pooling combined.

    Module form of :func:`jaxpool.global_avgmax_pool`: the attributes are its keywords, same names and defaults
    (combine='mean', num_spatial_dims=2, keepdims=False, mask=None, data_format='channels_last'); called as ``module(x,
    mask=None)``.
    """

    combine: str
    num_spatial_dims: int
    keepdims: bool
    mask: jax.Array | None
    data_format: str

    op = OPS_BY_NAME["GlobalAvgMaxPool"]

    def __init__(
        self,
        *,
        combine: str = "mean",
        num_spatial_dims: int = 2,
        keepdims: bool = False,
        mask: jax.Array | None = None,
        data_format: str = "channels_last",
        rngs: nnx.Rngs | None = None,
    ):
        self._setup(
            dict(
                combine=combine,
                num_spatial_dims=num_spatial_dims,
                keepdims=keepdims,
                mask=mask,
                data_format=data_format,
            ),
            rngs,
        )

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        return self._pool((x,), mask=mask)


__all__ = [
    "PoolModule",
    "RandomPoolModule",
    "MaxPool",
    "MinPool",
    "AvgPool",
    "LpPool",
    "MedianPool",
    "StochasticPool",
    "MixedPool",
    "GatedPool",
    "TreePool",
    "FractionalMaxPool",
    "SoftPool",
    "GeMPool",
    "BlurPool",
    "MaxBlurPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "AdaptiveAvgPool",
    "AdaptiveMaxPool",
    "SpatialPyramidPool",
    "MaxUnpool",
    "AvgMaxPool",
    "GlobalAvgMaxPool",
]
