"""Degenerate-but-valid inputs, windows wholly in padding, and NaN/inf, op by op.

The oracles: PyTorch where it has the op (tests skip cleanly without it), else the op's definition
evaluated per window in NumPy (float64), with the conventions of README's "NaN and inf" table.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxpool
from tests import reference as ref
from tests import reference_more

KEY = jax.random.key(0)


def _torch():
    return pytest.importorskip("torch")


# ------------------------------------------------------------ zero batch / zero channels, every op


def _ops(data_format):
    """One valid call per public op for a (B, 4, 4, C) / (B, C, 4, 4) input."""
    kw = dict(data_format=data_format)
    w = (2, 2)
    return {
        "adaptive_avg_pool": lambda x: jaxpool.adaptive_avg_pool(x, (3, 3), **kw),
        "adaptive_max_pool": lambda x: jaxpool.adaptive_max_pool(x, (3, 3), return_indices=True, **kw),
        "avg_pool": lambda x: jaxpool.avg_pool(x, w, 1, 1, count_include_pad=False, **kw),
        "avgmax_pool": lambda x: jaxpool.avgmax_pool(x, w, combine="cat", **kw),
        "blur_pool": lambda x: jaxpool.blur_pool(x, **kw),
        "fractional_max_pool": lambda x: jaxpool.fractional_max_pool(x, w, (3, 3), key=KEY, return_indices=True, **kw),
        "gated_pool": lambda x: jaxpool.gated_pool(x, jnp.ones(w), w, **kw),
        "gem_pool": lambda x: jaxpool.gem_pool(x, **kw),
        "global_avg_pool": lambda x: jaxpool.global_avg_pool(x, **kw),
        "global_avgmax_pool": lambda x: jaxpool.global_avgmax_pool(x, keepdims=True, **kw),
        "global_max_pool": lambda x: jaxpool.global_max_pool(x, **kw),
        "lp_pool": lambda x: jaxpool.lp_pool(x, 2.0, w, **kw),
        "max_blur_pool": lambda x: jaxpool.max_blur_pool(x, **kw),
        "max_pool": lambda x: jaxpool.max_pool(x, w, 1, 1, dilation=2, return_indices=True, **kw),
        "max_unpool": lambda x: jaxpool.max_unpool(*jaxpool.max_pool(x, w, return_indices=True, **kw), (4, 4), **kw),
        "median_pool": lambda x: jaxpool.median_pool(x, w, 1, **kw),
        "min_pool": lambda x: jaxpool.min_pool(x, w, **kw),
        "mixed_pool": lambda x: jaxpool.mixed_pool(x, w, key=KEY, **kw),
        "soft_pool": lambda x: jaxpool.soft_pool(x, w, **kw),
        "spatial_pyramid_pool": lambda x: jaxpool.spatial_pyramid_pool(x, (1, 3), **kw),
        "stochastic_pool": lambda x: jaxpool.stochastic_pool(x, w, key=KEY, **kw),
        "tree_pool": lambda x: jaxpool.tree_pool(x, jnp.ones((2, *w)), jnp.ones((1, *w)), w, **kw),
    }


def test_every_public_op_has_a_degenerate_case():
    assert set(_ops("channels_last")) == set(jaxpool.__all__)


def _empty_like(shape, axis):
    shape = list(shape)
    shape[axis] = 0
    return tuple(shape)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("empty", ["batch", "channels"])
@pytest.mark.parametrize("op", sorted(jaxpool.__all__))
def test_empty_batch_or_channels(op, empty, data_format):
    """Zero batch or channels: empty results shaped as for one example/channel, the right dtype, and an
    empty gradient of x's shape under jit (PyTorch returns empty results for a zero batch)."""
    fn = _ops(data_format)[op]
    channel_axis = 1 if data_format == "channels_first" else 3
    axis = 0 if empty == "batch" else channel_axis
    one = np.ones((1, 4, 4, 1) if data_format == "channels_last" else (1, 1, 4, 4), np.float32)
    x = jnp.zeros(_empty_like(one.shape, axis), jnp.float32)
    # The SPP output flattens the channels into its last axis; the rest keep the channel axis in place.
    out_axis = {"spatial_pyramid_pool": -1, "global_avg_pool": -1, "global_max_pool": -1, "gem_pool": -1}.get(op, channel_axis)
    for reference, result in zip(jax.tree.leaves(jax.eval_shape(fn, jnp.asarray(one))), jax.tree.leaves(fn(x))):
        expected = _empty_like(reference.shape, 0 if empty == "batch" else out_axis)
        assert result.shape == expected and result.dtype == reference.dtype
    grad = jax.jit(jax.grad(lambda v: jax.tree.leaves(fn(v))[0].sum()))(x)
    assert grad.shape == x.shape and grad.dtype == x.dtype


def test_empty_batch_matches_torch():
    torch = _torch()
    F = torch.nn.functional
    x = jnp.zeros((0, 3, 6, 6), jnp.float32)
    t = torch.zeros(tuple(x.shape), requires_grad=True)
    cf = dict(data_format="channels_first")
    shape = lambda f: jax.eval_shape(f, x)  # noqa: E731  (the results are empty: their shapes are what count)
    pairs = [
        (shape(lambda v: jaxpool.max_pool(v, (2, 2), **cf)), F.max_pool2d(t, 2)),
        (shape(lambda v: jaxpool.avg_pool(v, (3, 3), 2, 1, **cf)), F.avg_pool2d(t, 3, 2, 1)),
        (shape(lambda v: jaxpool.lp_pool(v, 2.0, (2, 2), **cf)), F.lp_pool2d(t, 2.0, 2)),
        (shape(lambda v: jaxpool.adaptive_avg_pool(v, (4, 4), **cf)), F.adaptive_avg_pool2d(t, 4)),
        (shape(lambda v: jaxpool.adaptive_max_pool(v, (4, 4), **cf)), F.adaptive_max_pool2d(t, 4)),
        (
            shape(lambda v: jaxpool.fractional_max_pool(v, (2, 2), (4, 4), key=KEY, **cf)),
            F.fractional_max_pool2d(t, 2, output_size=4),
        ),
    ]
    unpool = lambda v: jaxpool.max_unpool(*jaxpool.max_pool(v, (2, 2), return_indices=True, **cf), (6, 6), **cf)  # noqa: E731
    pairs.append((shape(unpool), F.max_unpool2d(*F.max_pool2d(t, 2, return_indices=True), 2)))
    for ours, theirs in pairs:
        assert ours.shape == tuple(theirs.shape) and ours.dtype == jnp.float32
        theirs.sum().backward()  # torch differentiates it too


# ------------------------------------------------------------ PyTorch's padding rule and wholly padded windows


@pytest.mark.parametrize("op", ["max", "avg"])
def test_padding_accepted_exactly_when_torch_accepts_it(op):
    """Explicit padding up to half the (undilated) window, whatever the dilation, as PyTorch."""
    torch = _torch()
    x = np.zeros((1, 1, 9), np.float32)
    for k in range(1, 5):
        for p in range(0, 4):
            for d in (1, 2, 3) if op == "max" else (1,):
                try:
                    (torch.nn.functional.max_pool1d if op == "max" else torch.nn.functional.avg_pool1d)(
                        torch.tensor(x), k, 1, p, *([d] if op == "max" else [])
                    )
                    torch_ok = True
                except RuntimeError:
                    torch_ok = False
                kw = dict(dilation=d) if op == "max" else {}
                try:  # traced only (the check is static): jax.eval_shape
                    jax.eval_shape(lambda v: getattr(jaxpool, f"{op}_pool")(v, (k,), 1, p, data_format="channels_first", **kw), x)
                    ours_ok = True
                except ValueError as e:
                    assert "padding" in str(e) or "window_shape" in str(e)
                    ours_ok = False
                assert ours_ok == torch_ok, (k, p, d)


# (spatial sizes, window, strides, padding, dilation, ceil_mode): each has windows with no input element.
WHOLLY_PADDED = [
    ((1,), (2,), (2,), (1,), (2,), False),  # the case
    ((2,), (2,), (1,), (1,), (3,), False),
    ((3,), (2,), (1,), (1,), (4,), False),
    ((2, 2), (1, 2), (1, 1), (0, 1), (1, 3), False),
    ((3, 2), (2, 2), (1, 2), (1, 1), (4, 1), True),
]


@pytest.mark.parametrize("spatial, k, s, p, d, ceil", WHOLLY_PADDED)
def test_wholly_padded_windows_match_torch(spatial, k, s, p, d, ceil):
    """Max gives -inf there (min +inf), PyTorch's answer, and such windows pass no gradient."""
    torch = _torch()
    pool = getattr(torch.nn.functional, f"max_pool{len(spatial)}d")
    x = np.random.default_rng(0).standard_normal((2, 3, *spatial)).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    expected = pool(t, k, s, p, d, ceil_mode=ceil)
    assert torch.isinf(expected).any(), "the case must have a wholly padded window"
    g = np.random.default_rng(1).standard_normal(expected.shape).astype(np.float32)
    g[np.isinf(expected.detach().numpy())] = 0  # torch sends those cotangents to an out-of-range index
    (expected * torch.tensor(g)).sum().backward()
    kw = dict(strides=s, padding=p, dilation=d, ceil_mode=ceil, data_format="channels_first")
    wholly = np.isinf(expected.detach().numpy()).astype(np.float32)

    @jax.jit
    def run(v, g, wholly):
        y, vjp = jax.vjp(lambda v: jaxpool.max_pool(v, k, **kw), v)
        return y, vjp(g)[0], vjp(wholly)[0], jaxpool.min_pool(-v, k, **kw)

    y, grad, grad_of_wholly, y_min = run(jnp.asarray(x), jnp.asarray(g), jnp.asarray(wholly))
    np.testing.assert_array_equal(np.asarray(y), expected.detach().numpy())
    np.testing.assert_allclose(np.asarray(grad), t.grad.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(grad_of_wholly), 0)  # their cotangents reach nothing
    np.testing.assert_array_equal(np.asarray(y_min), -expected.detach().numpy())


@given(
    n=st.integers(1, 2),
    data=st.data(),
)
def test_any_padding_torch_accepts_gives_torch_values(n, data):
    """Random windows with padding up to half the window and dilation, wholly padded windows included: the
    values of max_pool (and min_pool of -x) are PyTorch's."""
    torch = _torch()
    k = tuple(data.draw(st.integers(1, 4)) for _ in range(n))
    d = tuple(data.draw(st.integers(1, 4)) for _ in range(n))
    p = tuple(data.draw(st.integers(0, ki // 2)) for ki in k)
    s = tuple(data.draw(st.integers(1, 3)) for _ in range(n))
    ceil = data.draw(st.booleans())
    spatial = tuple(data.draw(st.integers(1, 6)) for _ in range(n))
    x = np.random.default_rng(0).standard_normal((1, 2, *spatial)).astype(np.float32)
    try:
        expected = getattr(torch.nn.functional, f"max_pool{n}d")(torch.tensor(x), k, s, p, d, ceil_mode=ceil).numpy()
    except RuntimeError:  # no window fits: both refuse
        with pytest.raises(ValueError, match="window_shape"):
            jaxpool.max_pool(x, k, s, p, dilation=d, ceil_mode=ceil, data_format="channels_first")
        return
    kw = dict(strides=s, padding=p, dilation=d, ceil_mode=ceil, data_format="channels_first")
    y, y_min = jax.jit(lambda v: (jaxpool.max_pool(v, k, **kw), jaxpool.min_pool(-v, k, **kw)))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), expected)
    np.testing.assert_array_equal(np.asarray(y_min), -expected)


@pytest.mark.parametrize("dtype", [np.int32, np.int8])
def test_wholly_padded_windows_of_integers_give_the_dtype_limits(dtype):
    x = np.arange(2 * 3, dtype=dtype).reshape(1, 2, 3)
    kw = dict(strides=(1,), padding=(1,), dilation=(4,), data_format="channels_first")
    expected_max, _ = ref.max_pool(x, (2,), (1,), ((1, 1),), (4,), False)
    expected_min, _ = ref.min_pool(x, (2,), (1,), ((1, 1),), (4,), False)
    assert (expected_max == np.iinfo(dtype).min).any()
    np.testing.assert_array_equal(np.asarray(jaxpool.max_pool(x, (2,), **kw)), expected_max)
    np.testing.assert_array_equal(np.asarray(jaxpool.min_pool(x, (2,), **kw)), expected_min)


def test_same_padding_with_dilation_may_leave_windows_wholly_in_padding():
    """ "SAME" computes its own padding (not PyTorch's rule): such windows give -inf, as flax.linen.max_pool."""
    x = jnp.ones((1, 1, 1))
    y = jaxpool.max_pool(x, (2,), 1, "SAME", dilation=3, data_format="channels_first")
    np.testing.assert_array_equal(np.asarray(y), [[[-np.inf]]])


def test_wholly_padded_window_index_is_minus_one():
    """A window with no input element has no argmax: index -1 (the reference's convention; PyTorch
    reports a position past the window, an out-of-range or unrelated element that max_unpool cannot use)."""
    for spatial, k, s, p, d, ceil in WHOLLY_PADDED:
        x = np.random.default_rng(0).standard_normal((1, 1, *spatial)).astype(np.float32)
        _, expected = ref.max_pool(x, k, s, tuple((q, q) for q in p), d, ceil)
        _, idx = jaxpool.max_pool(x, k, s, p, dilation=d, ceil_mode=ceil, return_indices=True, data_format="channels_first")
        np.testing.assert_array_equal(np.asarray(idx), expected, err_msg=str((spatial, k, s, p, d, ceil)))


# ------------------------------------------------------------ NaN and inf, op by op

NAN, INF = np.nan, np.inf
# Windows of two along one axis: finite, NaN, +inf, -inf, +inf with -inf, all -inf, all zero.
WINDOWS = [[0.5, 2.0], [NAN, 1.0], [INF, 1.0], [-INF, 1.0], [INF, -INF], [-INF, -INF], [0.0, 0.0]]
X1 = np.asarray(WINDOWS, np.float32).reshape(1, -1, 1)  # (B, W, C) channels_last


def _lower_median(w):
    return NAN if np.isnan(w).any() else np.sort(w)[(len(w) - 1) // 2]


def _soft(w):
    """SoftPool's definition; NaN for any non-finite element (documented: inf / inf, 0 * -inf)."""
    return NAN if not np.isfinite(w).all() else (np.exp(w - w.max()) * w).sum() / np.exp(w - w.max()).sum()


def _gem(w, p=3.0, eps=1e-6):
    return np.mean(np.maximum(w, eps) ** p) ** (1 / p)


def _stochastic_expectation(w):
    """Zeiler & Fergus' sum(p_i a_i) = sum(a^2) / sum(a) over a = relu(w); 0 for a zero sum; an infinite
    sum (no NaN) gives +inf, the limit, where inf / inf would be NaN."""
    a = np.maximum(w, 0)
    if np.isnan(a).any():
        return NAN
    total = a.sum()
    return 0.0 if total == 0 else INF if np.isinf(total) else (a * a).sum() / total


def _mix(s, first, second):
    """The gate's s * first + (1 - s) * second in the extended reals: equal infinities mix to themselves."""
    return first if np.isinf(first) and first == second else s * first + (1 - s) * second


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _gated(w):  # gate weights of ones: s = sigmoid(sum(w))
    return _mix(_sigmoid(np.sum(w)), _max(w), np.mean(w))


def _tree(w):  # two leaves of ones (both sum(w)), one gate of ones
    return _mix(_sigmoid(np.sum(w)), np.sum(w), np.sum(w))


def _max(w):
    return NAN if np.isnan(w).any() else np.max(w)


def _min(w):
    return NAN if np.isnan(w).any() else np.min(w)


def _lp(w, p):
    s = np.sum(w**p)
    return np.sign(s) * np.abs(s) ** (1 / p)


W = (2,)
PER_WINDOW = {
    "max_pool": (lambda x: jaxpool.max_pool(x, W), _max),
    "min_pool": (lambda x: jaxpool.min_pool(x, W), _min),
    "avg_pool": (lambda x: jaxpool.avg_pool(x, W), np.mean),
    "lp_pool(p=2)": (lambda x: jaxpool.lp_pool(x, 2.0, W), lambda w: _lp(w, 2.0)),
    "lp_pool(p=1)": (lambda x: jaxpool.lp_pool(x, 1.0, W), lambda w: _lp(w, 1.0)),
    "adaptive_avg_pool": (lambda x: jaxpool.adaptive_avg_pool(x, (len(WINDOWS),)), np.mean),
    "adaptive_max_pool": (lambda x: jaxpool.adaptive_max_pool(x, (len(WINDOWS),)), _max),
    "avgmax_pool": (lambda x: jaxpool.avgmax_pool(x, W), lambda w: 0.5 * (np.mean(w) + _max(w))),
    "gated_pool": (lambda x: jaxpool.gated_pool(x, jnp.ones(W), W), _gated),
    "tree_pool": (lambda x: jaxpool.tree_pool(x, jnp.ones((2, *W)), jnp.ones((1, *W)), W), _tree),
    "median_pool": (lambda x: jaxpool.median_pool(x, W), _lower_median),
    "soft_pool": (lambda x: jaxpool.soft_pool(x, W), _soft),
    "gem_pool": (lambda x: jaxpool.gem_pool(x, 3.0, W), _gem),
    "stochastic_pool(deterministic)": (
        lambda x: jaxpool.stochastic_pool(x, W, deterministic=True),
        _stochastic_expectation,
    ),
    "mixed_pool(deterministic)": (
        lambda x: jaxpool.mixed_pool(x, W, deterministic=True, mix_prob=0.25),
        lambda w: 0.25 * _max(w) + 0.75 * np.mean(w),
    ),
    "fractional_max_pool(one window per bin)": (
        lambda x: jaxpool.fractional_max_pool(x, W, (len(WINDOWS),), deterministic=True),
        _max,
    ),
}


@pytest.mark.parametrize("op", sorted(PER_WINDOW))
def test_nan_and_inf_per_window(op):
    """Each window's result follows the op's definition in IEEE arithmetic (NaN propagates, inf stays inf,
    inf - inf is NaN), except the conventions above; windows never leak into each other."""
    fn, definition = PER_WINDOW[op]
    with np.errstate(all="ignore"):
        expected = [definition(np.asarray(w, np.float64)) for w in WINDOWS]
    y = np.asarray(fn(jnp.asarray(X1)), np.float64).ravel()
    np.testing.assert_allclose(y, expected, rtol=1e-5, equal_nan=True)


def test_stochastic_sample_of_nan_or_inf_window():
    """Training: a NaN window gives NaN, an infinite window +inf; -inf counts as 0 (never sampled)."""
    y = np.asarray(jaxpool.stochastic_pool(jnp.asarray(X1), W, key=KEY)).ravel()
    assert np.isnan(y[1]) and y[2] == INF and y[3] == 1.0 and y[4] == INF and y[5] == 0 and y[6] == 0


def test_global_pools_propagate_nan_and_inf():
    x = np.asarray(WINDOWS, np.float32)[:, None, :, None]  # (7 examples, 1, 2, 1): one window each
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(jaxpool.global_avg_pool(x), np.mean(x, axis=(1, 2)).astype(np.float32))
        expected_max = np.array([[_max(np.asarray(w))] for w in WINDOWS], np.float32)
    np.testing.assert_array_equal(jaxpool.global_max_pool(x), expected_max)
    spp = jaxpool.spatial_pyramid_pool(x, (1,))
    np.testing.assert_array_equal(spp, expected_max)


@pytest.mark.parametrize("op", ["max", "avg", "lp", "adaptive_avg", "adaptive_max"])
def test_nan_and_inf_match_torch(op):
    torch = _torch()
    F = torch.nn.functional
    x = np.moveaxis(X1, -1, 1)  # (B, C, W)
    t = torch.tensor(x)
    n = len(WINDOWS)
    cf = dict(data_format="channels_first")
    ours, theirs = {
        "max": (lambda: jaxpool.max_pool(x, W, **cf), lambda: F.max_pool1d(t, 2)),
        "avg": (lambda: jaxpool.avg_pool(x, W, **cf), lambda: F.avg_pool1d(t, 2)),
        "lp": (lambda: jaxpool.lp_pool(x, 2.0, W, **cf), lambda: F.lp_pool1d(t, 2.0, 2)),
        "adaptive_avg": (lambda: jaxpool.adaptive_avg_pool(x, (n,), **cf), lambda: F.adaptive_avg_pool1d(t, n)),
        "adaptive_max": (lambda: jaxpool.adaptive_max_pool(x, (n,), **cf), lambda: F.adaptive_max_pool1d(t, n)),
    }[op]
    np.testing.assert_allclose(np.asarray(ours()), theirs().numpy(), rtol=1e-6, equal_nan=True)


def test_blur_spreads_nan_to_the_windows_that_see_it():
    """BlurPool is a binomial convolution: a NaN reaches exactly the outputs whose filter covers it."""
    x = np.zeros((1, 8, 1), np.float32)
    x[0, 3, 0] = NAN
    y = np.asarray(jaxpool.blur_pool(x, (1,), filter_size=3)).ravel()  # stride 1, taps i-1, i, i+1
    np.testing.assert_array_equal(np.isnan(y), [False, False, True, True, True, False, False, False])


@pytest.mark.parametrize("filter_size", range(1, 8))
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_blur_reflect_padding_spreads_non_finite_values_only_to_windows_that_see_them(filter_size, stride):
    """Reflect padding is folded into edge weights on zero-padded taps; an inf or NaN must still
    reach exactly the outputs whose reflected window holds it (NumPy's reflect pad as reference)."""
    n = 9
    for where in range(n):
        for bad in (NAN, np.inf):
            x = np.zeros((1, n, 1), np.float32)
            x[0, where, 0] = bad
            y = np.asarray(jaxpool.blur_pool(x, (stride,), filter_size=filter_size)).ravel()
            want = reference_more.blur_pool(x.transpose(0, 2, 1), (filter_size,), (stride,)).ravel()
            np.testing.assert_array_equal(y, want.astype(np.float32), err_msg=f"{bad} at {where}")


def test_traced_out_of_range_unpool_indices_are_dropped_not_wrapped():
    """Under jit indices cannot be checked; out-of-range ones, negative included, write nothing."""
    y = jnp.asarray([[[1.0, 2.0, 3.0]]])
    unpool = jax.jit(lambda i: jaxpool.max_unpool(y, i, (4,), data_format="channels_first"))
    out = unpool(jnp.asarray([[[-1, 4, 1]]], jnp.int32))
    np.testing.assert_array_equal(np.asarray(out), [[[0.0, 3.0, 0.0, 0.0]]])
