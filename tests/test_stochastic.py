"""stochastic_pool and mixed_pool: the inference weighting and the inverse-CDF samples against the NumPy
reference, the sampling distribution (chi-square), gradients, keys, vmap, jit, compiled HLO,
negative inputs and argument errors."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats  # a dependency of jax itself

import jaxpool
from jaxpool.stochastic import _stochastic_pool, mixed_pool, stochastic_pool
from tests import reference as ref
from tests import reference_stochastic as sref
from tests.hlo import compiled_opcodes
from tests.layouts import FORMATS, from_layout, to_layout
from tests.strategies import layouts, pool_geometry

KEY = jax.random.key(2013)


def _activations(rng, shape):
    """Non-negative floats with many exact zeros and a few negatives (which count as zero)."""
    x = (rng.random(shape) * 3).astype(np.float32)
    x[rng.random(shape) < 0.3] = 0
    x[rng.random(shape) < 0.1] *= -1
    return x


def _ref_args(g):
    return g["window"], g["strides"], g["pairs"], g["ceil_mode"]


def _check_example(g, layout, seed, deterministic):
    """One jitted call ``(x, u, ct) -> (y, dx, offset)`` on given uniforms, against the reference."""
    data_format, batch_shape = layout
    rng = np.random.default_rng(seed)
    x = _activations(rng, (max(1, math.prod(batch_shape)), 2) + g["spatial"])
    want_y = sref.weighted_pool(x, *_ref_args(g))
    u, ct = rng.random(want_y.shape, np.float32), rng.normal(size=want_y.shape).astype(np.float32)

    @jax.jit
    def run(x, u, ct):
        args = (g["window"], g["strides"], g["padding"], None, deterministic, g["ceil_mode"], data_format)
        y, vjp, offset = jax.vjp(lambda v: _stochastic_pool(v, *args, uniforms=u), x, has_aux=True)
        return y, vjp(ct)[0], y if offset is None else offset  # no offsets when deterministic

    y, dx, offset = (
        from_layout(a, data_format, batch_shape) for a in run(*(to_layout(a, data_format, batch_shape) for a in (x, u, ct)))
    )
    if deterministic:
        np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(dx, sref.weighted_pool_grad(x, ct, *_ref_args(g)), rtol=1e-4, atol=1e-5)
        return
    want_y, want_offset = sref.sample(x, u, *_ref_args(g))
    offset = offset.astype(np.int64)
    np.testing.assert_array_equal(np.where(offset == math.prod(g["window"]), -1, offset), want_offset)
    np.testing.assert_array_equal(y, want_y)
    # A sampled element has positive probability (in the input, positive); unsampled windows have none.
    p = sref.probabilities(x, *_ref_args(g))
    p_sampled = np.take_along_axis(p, np.maximum(want_offset, 0)[..., None], axis=-1)[..., 0]
    assert (p_sampled[want_offset >= 0] > 0).all() and (p[want_offset < 0] == 0).all()
    np.testing.assert_allclose(dx, sref.sample_grad(x, ct, want_offset, *_ref_args(g)), rtol=1e-6, atol=1e-6)


@given(g=pool_geometry(dilation=False), layout=layouts, seed=st.integers(0, 2**16))
def test_deterministic_is_probability_weighting(g, layout, seed):
    _check_example(g, layout, seed, deterministic=True)


@given(g=pool_geometry(dilation=False), layout=layouts, seed=st.integers(0, 2**16))
def test_samples_follow_inverse_cdf_and_take_the_gradient(g, layout, seed):
    _check_example(g, layout, seed, deterministic=False)


def _assert_chi_square(offsets, p):
    """Sample counts per window offset fit ``p`` (zero-probability offsets never drawn)."""
    counts = np.bincount(np.asarray(offsets).ravel(), minlength=p.size + 1)
    assert counts[p.size] == 0 and counts[: p.size][p == 0].sum() == 0, counts
    observed = counts[: p.size][p > 0]
    _, pvalue = stats.chisquare(observed, p[p > 0] * observed.sum())
    assert pvalue > 1e-3, (counts, p)


def test_sampling_distribution_over_keys_chi_square():
    """20000 draws from one 2x3 window (with a zero and a negative), one key each via vmap."""
    window = np.asarray([[0.0, 1.0, 2.5], [-1.0, 0.5, 3.0]], np.float32)
    x = jnp.asarray(window)[None, :, :, None]
    keys = jax.random.split(jax.random.key(20130116), 20_000)
    draw = jax.jit(jax.vmap(lambda k: _stochastic_pool(x, (2, 3), None, "VALID", k, False, False, "channels_last")))
    y, offsets = draw(keys)
    np.testing.assert_array_equal(np.asarray(y).ravel(), window.ravel()[np.asarray(offsets).ravel()])
    p = sref.probabilities(window[None, None], (2, 3), (2, 3), ((0, 0), (0, 0)), False).ravel()
    _assert_chi_square(offsets, p)


def test_sampling_distribution_over_windows_chi_square():
    """One key, 7200 overlapping, padded windows of a periodic input: each window samples independently."""
    pattern = np.asarray([[1.0, 2.0, 0.0], [3.0, 0.0, 4.0], [0.5, 0.0, 1.5]], np.float32)
    x = np.tile(pattern, (1, 2, 41, 41))[..., :122, :122]  # (1, 2, 122, 122), channels_first
    y, offsets = jax.jit(lambda v: _stochastic_pool(v, (3, 3), 2, 1, KEY, False, False, "channels_first"))(x)
    # Windows start at -1 + 2*o, so each of them covers the pattern rolled by (2*o - 1) mod 3.
    p = sref.probabilities(x, (3, 3), (2, 2), ((1, 1), (1, 1)), False)
    interior = np.asarray(offsets)[:, :, 1:, 1:]
    for r, c in np.ndindex(3, 3):
        _assert_chi_square(interior[:, :, r::3, c::3], p[0, 0, 1 + r, 1 + c])


@pytest.mark.parametrize("deterministic", [False, True])
def test_windows_without_positive_mass_give_zero_and_zero_gradient(deterministic):
    x = jnp.asarray([0.0, 0.0, 0.0, 0.0, -1.0, -2.0, 0.0, -3.0, 1.0, 0.0, 2.0, 0.0])[None, :, None]
    pool = lambda v: stochastic_pool(v, (4,), key=KEY, deterministic=deterministic)  # noqa: E731
    y = np.asarray(pool(x))[0, :, 0]
    np.testing.assert_array_equal(y[:2], 0)
    assert y[2] == pytest.approx(5 / 3) if deterministic else y[2] in (1.0, 2.0)
    dx = np.asarray(jax.grad(lambda v: pool(v).sum())(x))[0, :, 0]
    assert np.isfinite(dx).all()
    np.testing.assert_array_equal(dx[:8], 0)
    np.testing.assert_array_equal(dx[[9, 11]], 0)


@pytest.mark.parametrize("deterministic", [False, True])
def test_nan_propagates(deterministic):
    x = jnp.asarray([1.0, 2.0, 0.0, 3.0, 1.0, np.nan, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0])[None, :, None]
    y = np.asarray(stochastic_pool(x, (4,), key=KEY, deterministic=deterministic))[0, :, 0]
    assert np.isfinite(y[0]) and np.isnan(y[1]) and y[2] == 0


# The eager tests below share one input shape and geometry, so that the uniform draw compiles once.
X = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 3)), jnp.float32)
GEOMETRY = ((3, 3), 2, 1)


@pytest.mark.parametrize("deterministic", [False, True])
def test_negatives_count_as_zero(deterministic):
    """Negative activations are never sampled, never weigh and take no gradient: the result is relu(x)'s."""
    pool = lambda v: stochastic_pool(v, *GEOMETRY, key=KEY, deterministic=deterministic)  # noqa: E731
    np.testing.assert_array_equal(pool(X), pool(jax.nn.relu(X)))
    assert (pool(X) >= 0).all()
    dx = jax.grad(lambda v: (pool(v) * jnp.arange(1.0, 4.0)).sum())(X)
    np.testing.assert_array_equal(jnp.where(X < 0, dx, 0), 0)


def test_keys_same_samples_for_same_key_and_differ_across_keys():
    pool = lambda k: stochastic_pool(X, *GEOMETRY, key=k)  # noqa: E731
    np.testing.assert_array_equal(pool(jax.random.key(7)), pool(jax.random.key(7)))
    assert (pool(jax.random.key(7)) != pool(jax.random.key(8))).mean() > 0.3


def test_vmap_over_keys_gives_independent_samples_equal_to_single_calls():
    keys = jax.random.split(KEY, 5)
    pool = lambda k, v: stochastic_pool(v, *GEOMETRY, key=k)  # noqa: E731
    value_and_grad = lambda k: (pool(k, X), jax.grad(lambda v: (pool(k, v) ** 2).sum())(X))  # noqa: E731
    ys, grads = jax.jit(jax.vmap(value_and_grad))(keys)
    single = jax.jit(value_and_grad)
    for k, y, dx in zip(keys, ys, grads):
        chex.assert_trees_all_equal((y, dx), single(k))
    assert all((ys[i] != ys[j]).any() for i in range(5) for j in range(i))


class JitVariantsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree_with_reference(self):
        x = _activations(np.random.default_rng(3), (2, 3, 7, 7))
        fn = self.variant(lambda v, k: stochastic_pool(v, (3, 3), 2, 1, key=k, ceil_mode=True, data_format="channels_first"))
        y = fn(jnp.asarray(x), KEY)
        want, _ = sref.sample(x, np.asarray(jax.random.uniform(KEY, y.shape)), (3, 3), (2, 2), ((1, 1), (1, 1)), True)
        np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("geometry", [((2, 2), None, 0), GEOMETRY])
def test_training_gradient_has_no_scatter_and_saves_one_byte_per_output(geometry):
    pool = lambda v: stochastic_pool(v, *geometry, key=KEY)  # noqa: E731
    ops = compiled_opcodes(jax.grad(lambda v: pool(v).sum()), X)
    assert ops["scatter"] == 0 and ops["select-and-scatter"] == 0 and ops["gather"] == 0
    y, vjp = jax.vjp(pool, X)
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(vjp) if hasattr(leaf, "dtype")]
    assert [(leaf.dtype, leaf.shape) for leaf in leaves] == [(jnp.uint8, y.shape)]


def test_offsets_widen_only_past_255_element_windows():
    x = jax.ShapeDtypeStruct((1, 16, 16, 1), jnp.float32)
    offsets = lambda w: jax.eval_shape(lambda v: _stochastic_pool(v, w, None, "VALID", KEY, False, False, "channels_last")[1], x)  # noqa: E731
    assert offsets((15, 15)).dtype == jnp.uint8 and offsets((16, 16)).dtype == jnp.int16


@pytest.mark.parametrize("deterministic", [False, True])
def test_dtypes(deterministic):
    """16-bit floats keep their dtype (gradient too); integers pool to float32, sampling as float32 does."""
    xi = jnp.round(X * 2).astype(jnp.int32)
    pool = lambda v: stochastic_pool(v, *GEOMETRY, key=KEY, deterministic=deterministic)  # noqa: E731
    assert pool(xi.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    np.testing.assert_array_equal(pool(xi), pool(xi.astype(jnp.float32)))
    dx = jax.grad(lambda v: pool(v).astype(jnp.float32).sum())(xi.astype(jnp.bfloat16))
    assert dx.dtype == jnp.bfloat16


_X = jnp.ones((1, 4, 4, 2))


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: stochastic_pool(_X, (2, 2)), ValueError, "key"),
        (lambda: mixed_pool(_X, (2, 2)), ValueError, "key"),
        (lambda: stochastic_pool(_X, (2, 2), key=KEY, deterministic="yes"), TypeError, "deterministic"),
        (lambda: stochastic_pool(_X, (0, 2), key=KEY), ValueError, "window_shape"),
        (lambda: stochastic_pool(_X, (2, 2), (1, 0), key=KEY), ValueError, "strides"),
        (lambda: stochastic_pool(_X, (2, 2), padding="FULL", key=KEY), ValueError, "padding"),
        (lambda: stochastic_pool(_X, (2, 2), data_format="NHWC", key=KEY), ValueError, "data_format"),
        (lambda: stochastic_pool(_X.astype(jnp.complex64), (2, 2), key=KEY), TypeError, "complex"),
        (lambda: mixed_pool(_X, (2, 2), key=KEY, mix_prob=1.5), ValueError, "mix_prob"),
        (lambda: mixed_pool(_X, (2, 2), key=KEY, mix_prob=-0.1), ValueError, "mix_prob"),
        (lambda: mixed_pool(_X, (2, 2), key=KEY, mix_prob=float("nan")), ValueError, "mix_prob"),
        (lambda: mixed_pool(_X, (2, 2), key=KEY, mix_prob="0.5"), TypeError, "mix_prob"),
        (lambda: mixed_pool(_X, (2, 2), key=KEY, per="pixel"), ValueError, "per"),
        (lambda: mixed_pool(_X, (3, 3), 1, 3, key=KEY), ValueError, "padding"),
        (lambda: mixed_pool(_X.astype(jnp.complex64), (2, 2), key=KEY), TypeError, "complex"),
    ],
)
def test_bad_arguments_name_themselves(call, error, name):
    with pytest.raises(error, match=name):
        call()
    with pytest.raises(error, match=name):
        jax.jit(lambda: call())()


# ---------------------------------------------------------------------------------------- mixed


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize(
    "window, strides, padding, ceil_mode", [((2, 2), None, 0, False), ((3, 3), 2, 1, True), ((3, 2, 2), 1, 1, False)]
)
def test_mixed_deterministic_is_the_expectation(data_format, window, strides, padding, ceil_mode):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3) + (6,) * len(window)).astype(np.float32)
    n = len(window)
    args = (window, (strides,) * n if strides else window, ((padding, padding),) * n, (1,) * n, ceil_mode)
    want = 0.3 * ref.max_pool(x, *args)[0] + 0.7 * ref.avg_pool(x, *args[:3], ceil_mode)
    y = mixed_pool(
        to_layout(x, data_format, (2,)),
        window,
        strides,
        padding,
        deterministic=True,
        mix_prob=0.3,
        ceil_mode=ceil_mode,
        data_format=data_format,
    )
    np.testing.assert_allclose(from_layout(y, data_format, (2,)), want, rtol=1e-5, atol=1e-6)


# The mixed-pooling tests share one input and output shape, so that the Bernoulli draw compiles once eagerly.
XM = jnp.asarray(np.random.default_rng(6).normal(size=(4, 6, 6, 8)), jnp.float32)
MAX, AVG = np.asarray(jaxpool.max_pool(XM, (2, 2))), np.asarray(jaxpool.avg_pool(XM, (2, 2)))


@pytest.mark.parametrize("per, choice_axes", [("channel", (2, 3)), ("window", ()), ("layer", (1, 2, 3, 4))])
def test_mixed_training_chooses_max_or_avg_per_scope_with_mix_prob(per, choice_axes):
    """64 keys via vmap: each choice (per batch element and channel, output or call) is max or avg, max ~30%."""
    keys = jax.random.split(jax.random.key(2014), 64)
    ys = np.asarray(jax.jit(jax.vmap(lambda k: mixed_pool(XM, (2, 2), key=k, mix_prob=0.3, per=per)))(keys))
    is_max, is_avg = (ys == MAX).all(axis=choice_axes), (ys == AVG).all(axis=choice_axes)
    assert (is_max ^ is_avg).all()
    result = stats.binomtest(int(is_max.sum()), is_max.size, 0.3)
    assert result.pvalue > 1e-3, (is_max.mean(), is_max.size)


@pytest.mark.parametrize("mix_prob, expected", [(1.0, MAX), (0.0, AVG)])
def test_mixed_extreme_probabilities(mix_prob, expected):
    np.testing.assert_array_equal(mixed_pool(XM, (2, 2), key=KEY, mix_prob=mix_prob, per="window"), expected)


def test_mixed_gradient_follows_the_choice():
    ct = jnp.asarray(np.random.default_rng(8).normal(size=MAX.shape), jnp.float32)
    pools = {name: lambda v, fn=fn: fn(v, (3, 3), 2, 1) for name, fn in (("max", jaxpool.max_pool), ("avg", jaxpool.avg_pool))}
    y, vjp = jax.vjp(lambda v: mixed_pool(v, (3, 3), 2, 1, key=KEY, per="window"), XM)
    chose_max = y == pools["max"](XM)
    assert 0 < chose_max.mean() < 1
    (dx,) = vjp(ct)
    routed = {name: jax.vjp(pool, XM)[1](jnp.where(chose_max == (name == "max"), ct, 0))[0] for name, pool in pools.items()}
    assert np.isfinite(dx).all()
    np.testing.assert_allclose(dx, routed["max"] + routed["avg"], rtol=1e-6, atol=1e-6)
    det = jax.grad(lambda v: mixed_pool(v, (3, 3), 2, 1, deterministic=True).sum())(XM)
    assert np.isfinite(det).all()
