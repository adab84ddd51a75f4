"""GeM, SoftPool, median and blur pooling against plain-loop NumPy references.

Values over hypothesis geometry in every layout; gradients against central differences of the
float64 reference (tiny inputs); 16-bit dtypes; validation errors; jit / vmap.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jaxpool.avg import avg_pool
from jaxpool.blur import blur_pool, max_blur_pool
from jaxpool.max import max_pool
from jaxpool.median import median_pool
from jaxpool.power import gem_pool
from jaxpool.soft import soft_pool
from tests import reference_more as rm
from tests.hlo import compiled_opcodes
from tests.layouts import from_layout, random_input, to_layout
from tests.strategies import layouts, pool_geometry
from tests.validation import bad_argument_test

# Tests check semantics, not speed: compiling without LLVM optimisation halves their compile time.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
# These ops have no ceil_mode.
geometry = pool_geometry(dilation=False).filter(lambda g: not g["ceil_mode"])
FD_LIMIT = 512  # inputs up to this size also check gradients (1-D, 2-D and small 3-D examples)


@st.composite
def blur_geometry(draw, max_dims=3):
    """Filter sizes, strides and spatial sizes that reflect padding allows (size > f // 2)."""
    n = draw(st.integers(1, max_dims))
    filters = tuple(draw(st.integers(1, 7 if n < 3 else 4)) for _ in range(n))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
    spatial = tuple(draw(st.integers(f // 2 + 1, f // 2 + (8 if n < 3 else 4))) for f in filters)
    return dict(spatial=spatial, filters=filters, strides=strides, stride_default=draw(st.booleans()))


def _blur_call(g, data_format):
    """Passes the stride as ``strides`` or, half the time, as ``window_shape`` with ``strides=None``."""
    window, strides = (g["strides"], None) if g["stride_default"] else ((2,) * len(g["strides"]), g["strides"])
    return lambda v: blur_pool(v, window, strides, filter_size=g["filters"], data_format=data_format)


def _check(pool, reference, x, layout, rng, grad=True, rtol=1e-5):
    """``pool`` (jaxpool layout) against ``reference`` (canonical layout): values and, for inputs up to
    ``FD_LIMIT`` elements, the VJP against central differences of the reference. One compile."""
    data_format, batch_shape = layout
    want = reference(x)
    ct = rng.normal(size=want.shape)
    grad = grad and x.size <= FD_LIMIT
    both = fast_jit(lambda v, c: (pool(v), jax.vjp(pool, v)[1](c)[0] if grad else None))
    y, dx = both(
        jnp.asarray(to_layout(x, data_format, batch_shape), jnp.float32),
        jnp.asarray(to_layout(ct, data_format, batch_shape), jnp.float32),
    )
    np.testing.assert_allclose(from_layout(y, data_format, batch_shape), want, rtol=rtol, atol=1e-6)
    if grad:
        np.testing.assert_allclose(
            from_layout(dx, data_format, batch_shape), rm.numerical_vjp(reference, x, ct), rtol=2e-3, atol=2e-4
        )


def _input(g, layout, rng, kind="normal"):
    return random_input(rng, (max(1, int(np.prod(layout[1]))), 2) + g["spatial"], kind)


# ------------------------------------------------------------------------- values and gradients


@given(g=geometry, layout=layouts, p=st.sampled_from([1, 2, 3.0, 4.5]), seed=st.integers(0, 2**16))
def test_gem_matches_reference(g, layout, p, seed):
    rng = np.random.default_rng(seed)
    pool = lambda v: gem_pool(v, p, g["window"], g["strides"], g["padding"], data_format=layout[0])
    _check(
        pool, lambda v: rm.gem_pool(v, p, g["window"], g["strides"], g["pairs"]), _input(g, layout, rng), layout, rng, rtol=1e-4
    )


@given(g=geometry, layout=layouts, seed=st.integers(0, 2**16))
def test_soft_pool_matches_reference(g, layout, seed):
    rng = np.random.default_rng(seed)
    x = _input(g, layout, rng) * 4
    pool = lambda v: soft_pool(v, g["window"], g["strides"], g["padding"], data_format=layout[0])
    _check(pool, lambda v: rm.soft_pool(v, g["window"], g["strides"], g["pairs"]), x, layout, rng)


@given(g=geometry, layout=layouts, kind=st.sampled_from(["normal", "ties", "special"]), seed=st.integers(0, 2**16))
def test_median_pool_matches_reference(g, layout, kind, seed):
    """Gradients only for tie-free input (finite differences straddle ties)."""
    rng = np.random.default_rng(seed)
    pool = lambda v: median_pool(v, g["window"], g["strides"], g["padding"], data_format=layout[0])
    reference = lambda v: rm.median_pool(v, g["window"], g["strides"], g["pairs"])
    _check(pool, reference, _input(g, layout, rng, kind), layout, rng, grad=kind == "normal")


@given(g=blur_geometry(), layout=layouts, seed=st.integers(0, 2**16))
def test_blur_pool_matches_reference(g, layout, seed):
    rng = np.random.default_rng(seed)
    reference = lambda v: rm.blur_pool(v, g["filters"], g["strides"])
    _check(_blur_call(g, layout[0]), reference, _input(g, layout, rng), layout, rng)


@given(g=geometry, layout=layouts, stride=st.integers(1, 3), filters=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_max_blur_pool_matches_reference(g, layout, stride, filters, seed):
    rng = np.random.default_rng(seed)
    dense = [n + lo + hi - k + 1 for n, k, (lo, hi) in zip(g["spatial"], g["window"], g["pairs"])]
    assume(min(dense) > filters // 2)  # large enough to reflect-pad
    n = len(g["window"])
    pool = lambda v: max_blur_pool(v, g["window"], stride, g["pairs"], filter_size=filters, data_format=layout[0])
    reference = lambda v: rm.max_blur_pool(v, g["window"], (filters,) * n, (stride,) * n, g["pairs"])
    _check(pool, reference, _input(g, layout, rng), layout, rng)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_global_gem_matches_reference(n, data_format):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(3, 4) + (4,) * n)
    layout = (data_format, (3,))
    _check(
        lambda v: gem_pool(v, 2.5, num_spatial_dims=n, data_format=data_format),
        lambda v: rm.global_gem_pool(v, 2.5, n),
        x,
        layout,
        rng,
    )


def test_max_blur_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 9, 8))
    layout = ("channels_last", (1,))
    pool = lambda v: max_blur_pool(v, (2, 3), 2, ((1, 0), (1, 1)), filter_size=(3, 4))
    _check(pool, lambda v: rm.max_blur_pool(v, (2, 3), (3, 4), (2, 2), ((1, 0), (1, 1))), x, layout, rng)


@pytest.mark.parametrize("window", [None, (3, 3)])
def test_gem_gradient_in_p_matches_finite_differences_and_jits(window):
    x = np.abs(np.random.default_rng(0).normal(size=(2, 3, 7, 7))) + 0.05
    if window is None:
        reference = lambda p: rm.global_gem_pool(x, p, 2).sum()
    else:
        reference = lambda p: rm.gem_pool(x, p, window, (2, 2), ((1, 1), (1, 1))).sum()
    loss = lambda p: gem_pool(jnp.asarray(x, jnp.float32), p, window, 2, 1, data_format="channels_first").sum()
    for p in (1.0, 3.0, 6.0):
        want = (reference(p + 1e-6) - reference(p - 1e-6)) / 2e-6
        np.testing.assert_allclose(jax.jit(jax.grad(loss))(jnp.float32(p)), want, rtol=1e-3)


def test_blur_backward_is_scatter_and_convolution_free():
    ops = compiled_opcodes(jax.grad(lambda v: blur_pool(v, (2, 2)).sum()), jnp.ones((2, 16, 16, 4)))
    assert ops["scatter"] == 0 and ops["convolution"] == 0


# ----------------------------------------------------------------------------------------- rules


def test_median_rules_lower_median_padding_excluded_nan_and_integers():
    x = jnp.asarray([5.0, 1.0, 3.0, 8.0])[None, :, None]
    # windows [pad, 5, 1], [5, 1, 3], [1, 3, 8], [3, 8, pad] -> real elements only, lower median
    np.testing.assert_array_equal(median_pool(x, (3,), 1, 1)[0, :, 0], [1.0, 3.0, 3.0, 3.0])
    np.testing.assert_array_equal(median_pool(x, (4,))[0, :, 0], [3.0])  # even count: lower median
    nan = x.at[0, 1, 0].set(jnp.nan)
    np.testing.assert_array_equal(np.isnan(median_pool(nan, (2,), 1)[0, :, 0]), [True, True, False])
    grad = jax.grad(lambda v: median_pool(v, (2,), 1).sum())(nan)
    np.testing.assert_array_equal(grad[0, :, 0], [0.0, 2.0, 1.0, 0.0])  # NaN windows route to the NaN
    ints = jnp.asarray([[7, -2, 9, 4]], jnp.int16)[..., None]
    y = median_pool(ints, (3,), 1, 1)
    assert y.dtype == jnp.int16
    np.testing.assert_array_equal(y[0, :, 0], [-2, 7, 4, 4])


def test_median_gradient_goes_to_one_median_element_on_ties():
    x = jnp.asarray(random_input(np.random.default_rng(0), (2, 8, 8, 3), "ties"))
    y, vjp = jax.vjp(lambda v: median_pool(v, (3, 3), 2, 1), x)
    (counts,) = vjp(jnp.ones_like(y))
    assert float(counts.sum()) == y.size and float((counts * x).sum()) == pytest.approx(float(y.sum()))


def test_soft_pool_is_stable_and_between_mean_and_max():
    x = np.zeros((1, 8, 8, 2), np.float32)
    x[:, :4] = 1e4  # windows far below the global maximum would be 0 / 0 with a global shift
    x[:, 4:] = -200 + np.random.default_rng(0).normal(size=(1, 4, 8, 2))
    y = soft_pool(x, (3, 3), 1, 1)
    np.testing.assert_allclose(
        np.moveaxis(y, -1, 1), rm.soft_pool(np.moveaxis(x, -1, 1), (3, 3), (1, 1), ((1, 1), (1, 1))), rtol=1e-6
    )
    assert np.isfinite(jax.grad(lambda v: soft_pool(v, (3, 3), 1, 1).sum())(x)).all()
    z = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 6, 3)), jnp.float32)
    s = soft_pool(z, (2, 2))
    assert (s >= avg_pool(z, (2, 2)) - 1e-6).all() and (s <= max_pool(z, (2, 2)) + 1e-6).all()


def test_gem_limits_and_clamp():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 3)), jnp.float32)
    clamped = jnp.maximum(x, 1e-6)
    np.testing.assert_allclose(gem_pool(x, 1, (2, 2)), avg_pool(clamped, (2, 2)), rtol=1e-6)
    np.testing.assert_array_equal(gem_pool(x, float("inf"), (3, 3), 1, 1), max_pool(clamped, (3, 3), 1, 1))
    np.testing.assert_array_equal(gem_pool(x, float("inf")), clamped.max(axis=(1, 2)))
    assert gem_pool(x, 3.0).shape == (2, 3) and gem_pool(x, 3.0, num_spatial_dims=1).shape == (2, 6, 3)


def test_blur_special_cases():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 8, 6)), jnp.float32)
    cf = dict(data_format="channels_first")
    np.testing.assert_array_equal(blur_pool(x, (2, 2), filter_size=1, **cf), x[..., ::2, ::2])  # subsampling only
    np.testing.assert_allclose(blur_pool(x, (2, 2), filter_size=2, **cf), avg_pool(x, (2, 2), **cf), rtol=1e-5)  # box filter
    assert blur_pool(x, (3, 3), **cf).shape == (2, 3, 3, 2)  # ceil(in / stride)
    assert max_blur_pool(x, (2, 2), **cf).shape == (2, 3, 4, 3)  # max 2x2/1 -> (7, 5), then ceil(/2)


# ---------------------------------------------------------------------------------------- dtypes

POOLS = {
    "gem": lambda v: gem_pool(v, 3.0, (3, 3), 2, 1),
    "gem_global": lambda v: gem_pool(v, 3.0),
    "soft": lambda v: soft_pool(v, (3, 3), 2, 1),
    "median": lambda v: median_pool(v, (3, 3), 2, 1),
    "blur": lambda v: blur_pool(v, (2, 2)),
    "max_blur": lambda v: max_blur_pool(v, (2, 2)),
}


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", POOLS)
def test_half_precision_keeps_dtype_and_float32_accuracy(name, dtype):
    """Computed in float32 and rounded once: within one half-precision ulp of the float32 result."""
    pool = POOLS[name]
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, size=(2, 16, 16, 8)), dtype)
    y, want, dx = fast_jit(
        lambda v: (pool(v), pool(v.astype(jnp.float32)), jax.grad(lambda u: pool(u).astype(jnp.float32).sum())(v))
    )(x)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_allclose(y.astype(jnp.float32), want, rtol=float(jnp.finfo(dtype).eps), atol=0)


# ----------------------------------------------------------------------------------- transforms


@pytest.mark.parametrize("name", POOLS)
def test_vmap_and_per_example_grads_match_batch_axes(name):
    pool = POOLS[name]
    loss = lambda v: (pool(v) ** 2).sum()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 9, 9, 4)), jnp.float32)
    y, y_vmap, g, g_vmap = fast_jit(lambda v: (pool(v), jax.vmap(pool)(v), jax.grad(loss)(v), jax.vmap(jax.grad(loss))(v)))(x)
    np.testing.assert_allclose(y_vmap, y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(g_vmap, g, rtol=1e-5, atol=1e-6)


def test_gem_vmaps_over_p():
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 6, 6, 3)), jnp.float32)
    ps = jnp.asarray([1.0, 2.0, 5.0])
    batched = jax.vmap(lambda p: gem_pool(x, p, (2, 2)))(ps)
    np.testing.assert_allclose(batched, jnp.stack([gem_pool(x, p, (2, 2)) for p in (1.0, 2.0, 5.0)]), rtol=1e-6)


# ------------------------------------------------------------------------------------ validation

X = np.zeros((2, 8, 8, 3), np.float32)
BAD_ARGUMENTS = [
    ("gem p zero", lambda x: gem_pool(x, 0.0), ValueError, "p must be positive"),
    ("gem p negative numpy", lambda x: gem_pool(x, np.float32(-1)), ValueError, "p must be positive"),
    ("gem p nan", lambda x: gem_pool(x, float("nan"), (2, 2)), ValueError, "p must be positive"),
    ("gem p string", lambda x: gem_pool(x, "3"), TypeError, "p must"),
    ("gem p bool", lambda x: gem_pool(x, True), TypeError, "p must"),
    ("gem p vector", lambda x: gem_pool(x, jnp.ones(3)), ValueError, "p must be a scalar"),
    ("gem eps zero", lambda x: gem_pool(x, eps=0.0), ValueError, "eps"),
    ("gem eps string", lambda x: gem_pool(x, eps="1e-6"), TypeError, "eps"),
    ("gem num_spatial_dims", lambda x: gem_pool(x, num_spatial_dims=0), ValueError, "num_spatial_dims"),
    ("gem dims vs window", lambda x: gem_pool(x, 3.0, (2, 2), num_spatial_dims=3), ValueError, "num_spatial_dims"),
    ("gem window", lambda x: gem_pool(x, 3.0, 2), TypeError, "window_shape"),
    ("gem padding", lambda x: gem_pool(x, 3.0, (2, 2), padding=2), ValueError, "padding"),
    ("gem too many dims", lambda x: gem_pool(x, num_spatial_dims=4), ValueError, "spatial axes"),
    ("soft window", lambda x: soft_pool(x, (0, 2)), ValueError, "window_shape"),
    ("soft strides", lambda x: soft_pool(x, (2, 2), (1, 1, 1)), ValueError, "strides"),
    ("soft data_format", lambda x: soft_pool(x, (2, 2), data_format="NHWC"), ValueError, "data_format"),
    ("soft complex", lambda x: soft_pool(x.astype(jnp.complex64), (2, 2)), TypeError, "complex"),
    ("median window larger", lambda x: median_pool(x, (9, 2)), ValueError, "window_shape"),
    ("median padding word", lambda x: median_pool(x, (2, 2), padding="FULL"), ValueError, "padding"),
    ("median bool", lambda x: median_pool(x > 0, (2, 2)), TypeError, "bool"),
    ("blur filter zero", lambda x: blur_pool(x, filter_size=0), ValueError, "filter_size"),
    ("blur filter large", lambda x: blur_pool(x, filter_size=8), ValueError, "filter_size"),
    ("blur filter float", lambda x: blur_pool(x, filter_size=2.5), TypeError, "filter_size"),
    ("blur filter length", lambda x: blur_pool(x, filter_size=(3, 3, 3)), ValueError, "filter_size"),
    ("blur reflect too wide", lambda x: blur_pool(x[:, :3], filter_size=7), ValueError, "filter_size"),
    ("blur strides", lambda x: blur_pool(x, strides=0), ValueError, "strides"),
    ("blur window", lambda x: blur_pool(x, 2), TypeError, "window_shape"),
    ("blur data_format", lambda x: blur_pool(x, data_format="NCHW"), ValueError, "data_format"),
    ("max_blur window", lambda x: max_blur_pool(x, (9, 2)), ValueError, "window_shape"),
    ("max_blur filter", lambda x: max_blur_pool(x, filter_size=-1), ValueError, "filter_size"),
]


test_bad_arguments_raise_naming_the_argument = bad_argument_test(BAD_ARGUMENTS, X)
