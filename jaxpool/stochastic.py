"""Random pooling: stochastic pooling and mixed max/average pooling.

Stochastic pooling (Zeiler & Fergus 2013, "Stochastic pooling for regularization of deep convolutional
neural networks") samples one element per window with probability proportional to its activation;
its derivative (a ``jax.custom_jvp``, the same linear tangent map as max pooling's) routes each
tangent and, transposed, each cotangent to the sampled element without scatter, saving only the
sampled element's offset inside its window; forward and reverse mode both work. Mixed pooling (Yu,
Wang, Chen & Wei 2014, "Mixed pooling for convolutional neural networks") picks max or average
pooling at random; it is built on :func:`jaxpool.max_pool` and :func:`jaxpool.avg_pool`.

Both take ``key`` (a ``jax.random`` key) for training and ``deterministic=True`` for inference,
where they return the expectation over their randomness.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp

from jaxpool import _taps
from jaxpool._fusion import computed_once, materialize, results_once
from jaxpool._geometry import PaddingLike, WindowGeometry, check_bool, window_tuple
from jaxpool._layout import Layout, accumulation_dtype, as_pool_input, layout_of, result_dtype
from jaxpool._validate import check_choice, real_number
from jaxpool.avg import _prepare, avg_pool, window_sum
from jaxpool.max import max_pool, route_offsets

MIX_SCOPES = ("layer", "channel", "window")


def _check_mode(key, deterministic) -> None:
    """Training needs a key; inference (``deterministic=True``) ignores it."""
    check_bool(deterministic, "deterministic")
    if not deterministic and key is None:
        raise ValueError(
            "key is required when deterministic=False: pass key=jax.random.key(seed) (in Flax, "
            "self.make_rng(...)), or deterministic=True for the inference-time expectation"
        )


def _inverse_cdf(x, u, layout: Layout, geom: WindowGeometry):
    """Samples each window by inverse CDF: ``(y, offset)``, both of the output's shape.

    ``x``'s negatives count as 0 and padding is 0, so neither is ever sampled. The sample is the
    first tap, in row-major window order, whose running sum of the window exceeds ``u * total``:
    a fold over the taps (no gather). ``offset`` is the row-major offset of the sampled element in
    its window, or ``window_size`` where nothing was sampled (``total`` is 0: ``y`` is 0; NaN or
    overflow: ``y`` is ``total``): ``uint8`` for windows of up to 255 elements, wider beyond.
    """
    acc = accumulation_dtype(x.dtype)
    xp = _taps.pad_input(jnp.maximum(x.astype(acc), 0), layout, geom, 0)
    taps = [_taps.tap(xp, layout, geom, offs) for _, offs in _taps.window_taps(geom)]
    running = list(itertools.accumulate(taps))
    total = running[-1]
    threshold = u.astype(acc) * total
    y = jnp.where(total == 0, jnp.zeros((), acc), total)
    offset = jnp.full(total.shape, geom.window_size, _taps.offset_dtype(geom.window_size + 1))
    for flat in reversed(range(geom.window_size)):  # last write wins: the first crossing tap
        take = running[flat] > threshold
        y = jnp.where(take, taps[flat], y)
        offset = jnp.where(take, jnp.asarray(flat, offset.dtype), offset)
    return y.astype(result_dtype(x.dtype)), offset


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _sampled_pool(x, u, layout: Layout, geom: WindowGeometry):
    return _inverse_cdf(x, u, layout, geom)


@_sampled_pool.defjvp
def _sampled_pool_jvp(layout, geom, primals, tangents):
    """The sampled element (always positive, so the clamp passes it) carries the tangent; ``u`` none."""
    (x, u), (tx, _) = primals, tangents
    y, offset = _sampled_pool(x, u, layout, geom)
    offset = materialize(offset)
    ty = route_offsets(tx.astype(y.dtype), offset, layout, geom)
    return (y, offset), (ty, jnp.zeros(offset.shape, jax.dtypes.float0))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _expectation(a, layout: Layout, geom: WindowGeometry):
    """``sum(a_i**2) / sum(a_i)`` over each window of non-negative ``a``; 0 where the sum is 0."""
    total = window_sum(a, layout, geom)
    # An infinite sum (an inf element, or overflow) gives inf, as the training-time sample does, not inf * 0.
    return jnp.where(jnp.isposinf(total), total, window_sum(a * a, layout, geom) * _inverse(total))


def _inverse(total):
    return jnp.where(total == 0, 0, 1 / jnp.where(total == 0, 1, total))


@_expectation.defjvp
def _expectation_jvp(layout, geom, primals, tangents):
    """``dy = sum((2 a_j - y) da_j) / sum(a)``: two window sums of the tangent, linear in it, so its
    transpose is two window-sum transposes of output-sized cotangents. The scale factors are
    computed once (XLA:CPU otherwise recomputes the division chain for every tap: 52-69 -> 18 ms
    fwd+bwd on (32, 56, 56, 64), 3x3/2 p1)."""
    (a,), (ta,) = primals, tangents
    total = window_sum(a, layout, geom)
    inverse = computed_once(_inverse(total))
    infinite = jnp.isposinf(total)
    y = jnp.where(infinite, total, window_sum(a * a, layout, geom) * inverse)
    scaled = computed_once(jnp.where(infinite, 0, y * inverse))
    ty = window_sum(2 * a * ta, layout, geom) * inverse - window_sum(ta, layout, geom) * scaled
    return y, ty


def _probability_weighted(x, layout: Layout, geom: WindowGeometry):
    """``sum(p_i * a_i) = sum(a_i**2) / sum(a_i)`` over each window, negatives as 0; 0 where the sum is 0."""
    a = jax.nn.relu(x.astype(accumulation_dtype(x.dtype)))  # gradient 0 at 0: all-zero windows get a zero gradient
    return _expectation(a, layout, geom).astype(result_dtype(x.dtype))


def _stochastic_pool(x, window_shape, strides, padding, key, deterministic, ceil_mode, data_format, uniforms=None):
    """:func:`stochastic_pool` that also returns the sampled offsets (``None`` when deterministic).

    ``uniforms`` (output-shaped, in ``[0, 1)``), when given, replaces the draw from ``key``.
    """
    x, layout, geom = _prepare(x, window_shape, strides, padding, ceil_mode, data_format)
    if uniforms is None:
        _check_mode(key, deterministic)
    if deterministic:
        return _probability_weighted(x, layout, geom), None
    if uniforms is None:
        uniforms = jax.random.uniform(key, layout.with_spatial(x.shape, geom.out_shape), accumulation_dtype(x.dtype))
    sample = _inverse_cdf if jnp.issubdtype(x.dtype, jnp.integer) else _sampled_pool
    return sample(x, uniforms, layout, geom)


@results_once
def stochastic_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Stochastic pooling (Zeiler & Fergus 2013) over N spatial dimensions.

    Training (``deterministic=False``) samples one element ``a_k`` per window with probability
    ``p_i = a_i / sum(a)`` over the window's in-input elements and returns it: one uniform ``u`` per
    window (``jax.random.uniform(key, y.shape)``, float32 for 16-bit and integer inputs) picks, by
    inverse CDF, the first element in row-major window order whose running sum exceeds
    ``u * sum(a)``. The gradient goes to the sampled element only (a ``custom_jvp`` that saves one
    byte per output for windows of at most 255 elements, with no scatter). Inference
    (``deterministic=True``) returns the paper's probabilistic weighting ``sum(p_i * a_i)``, with a
    ``custom_jvp`` whose tangent is two window sums.

    The method expects non-negative activations (after a ReLU). Negative elements count as 0:
    they are never sampled and do not weigh, so the result equals that of ``relu(x)``, and they
    receive no gradient. A window with nothing positive (e.g. all zeros) gives 0 and a zero
    gradient; padding is never sampled. A NaN in a window gives NaN.

    Args:
      x: ``(*batch, *spatial, C)`` (channels_last) or ``(*batch, C, *spatial)`` (channels_first).
      window_shape, strides, padding, ceil_mode, data_format: as :func:`jaxpool.max_pool`
        (``strides=None`` means the window).
      key: a ``jax.random`` key; required unless ``deterministic``. Same key, same samples;
        ``jax.vmap`` over a batch of keys draws independent samples.
      deterministic: return the expectation instead of a sample.

    Returns:
      ``(*batch, *out, C)`` (or channels_first) in ``x``'s float dtype (float32 for integers).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.array([1.0, 3.0]).reshape(1, 1, 2, 1)  # one window of two elements
      >>> jaxpool.stochastic_pool(x, (1, 2), deterministic=True)[0, 0, 0, 0]  # (1*1 + 3*3) / (1 + 3)
      Array(2.5, dtype=float32)
      >>> y = jaxpool.stochastic_pool(x, (1, 2), key=jax.random.key(0))
      >>> float(y[0, 0, 0, 0]) in (1.0, 3.0)  # training samples an element
      True
    """
    return _stochastic_pool(x, window_shape, strides, padding, key, deterministic, ceil_mode, data_format)[0]


def _choice_shape(per: str, x, y, window_shape, data_format) -> tuple[int, ...]:
    """Shape of the max/avg choices: one per call, per (batch..., channel), or per output."""
    if per == "layer":
        return ()
    if per == "window":
        return y.shape
    layout = layout_of(x, len(window_tuple(window_shape)), data_format)
    return layout.with_spatial(y.shape, (1,) * layout.n_spatial)


@results_once
def mixed_pool(
    x: jax.Array,
    window_shape: Sequence[int],
    strides: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    *,
    key: jax.Array | None = None,
    deterministic: bool = False,
    mix_prob: float = 0.5,
    per: str = "channel",
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> jax.Array:
    """Mixed pooling (Yu, Wang, Chen & Wei 2014): max pooling with probability ``mix_prob``, else average.

    Training draws ``lambda ~ Bernoulli(mix_prob)`` and returns ``lambda * max + (1 - lambda) * avg``
    (:func:`jaxpool.max_pool`, :func:`jaxpool.avg_pool` with its defaults, so padding counts in the
    average); the gradient follows the chosen pooling. Inference (``deterministic=True``) returns
    the expectation ``mix_prob * max + (1 - mix_prob) * avg``.

    Args:
      x, window_shape, strides, padding, ceil_mode, data_format: as :func:`jaxpool.max_pool`.
      key: a ``jax.random`` key; required unless ``deterministic``.
      deterministic: return the expectation instead of a sample.
      mix_prob: probability of choosing max pooling, a number in ``[0, 1]``.
      per: granularity of the choice: ``"channel"`` (default; one per batch element and channel,
        i.e. per feature map), ``"window"`` (one per output element) or ``"layer"`` (one per call).

    Returns:
      ``(*batch, *out, C)`` (or channels_first) in ``x``'s float dtype (float32 for integers).

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.array([1.0, 3.0]).reshape(1, 1, 2, 1)  # one window of two elements
      >>> jaxpool.mixed_pool(x, (1, 2), deterministic=True)[0, 0, 0, 0]  # 0.5 * max + 0.5 * avg
      Array(2.5, dtype=float32)
      >>> y = jaxpool.mixed_pool(x, (1, 2), key=jax.random.key(0))
      >>> float(y[0, 0, 0, 0]) in (2.0, 3.0)  # max or average, drawn per channel
      True
    """
    p = float(real_number(mix_prob, "mix_prob (the probability of max pooling)", low=0, high=1))
    check_choice(per, MIX_SCOPES, "per")
    _check_mode(key, deterministic)
    x = as_pool_input(x)
    avg = avg_pool(x, window_shape, strides, padding, ceil_mode=ceil_mode, data_format=data_format)
    mx = max_pool(x, window_shape, strides, padding, ceil_mode=ceil_mode, data_format=data_format).astype(avg.dtype)
    if deterministic:
        acc = accumulation_dtype(avg.dtype)
        return (p * mx.astype(acc) + (1 - p) * avg.astype(acc)).astype(avg.dtype)
    # cast: _check_mode refused key=None unless deterministic.
    choose_max = jax.random.bernoulli(cast(jax.Array, key), p, _choice_shape(per, x, avg, window_shape, data_format))
    return jnp.where(choose_max, mx, avg)
