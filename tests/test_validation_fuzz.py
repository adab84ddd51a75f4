"""Bad arguments for every public op: a ValueError/TypeError naming the argument, eagerly and under jit.

Hypothesis draws, for each op in ``jaxpool.__all__``, one of its arguments and a bad value for it
(wrong type, wrong range, wrong length, a bool for an int, a string for a flag, a value past int64)
and substitutes it into an otherwise valid call.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxpool

X = np.linspace(0.1, 1.0, 2 * 6 * 6 * 3, dtype=np.float32).reshape(2, 6, 6, 3)  # (B, H, W, C), channels_last
KEY = jax.random.key(0)

# ---------------------------------------------------------------- bad values, by kind of argument

NOT_BOOLS = ["no", "False", "", 0, 1, 1.0, None, np.array(True), [True], "True"]
NOT_SIZE_ENTRIES = [0, -1, True, False, 2.0, 2.5, "2", None, np.float32(2), 2**63, 2**64, -(2**63) - 1, np.uint64(2**63)]
BAD_CHOICE = ["median", None, 1, "MAX ", ["max"], ""]
BAD_FORMATS = ["NHWC", "channels-last", None, 1, "CHANNELS_LAST", ["channels_last"]]


def _pairs(entries):
    """Bad 2-entry per-axis values: one bad entry next to a good one, both orders."""
    return [(e, 2) for e in entries] + [(2, e) for e in entries]


BAD_WINDOWS = _pairs(NOT_SIZE_ENTRIES) + [2, "22", (), None, 2.0, {2, 3}, (True, True), (2, (2, 2))]
BAD_INT_OR_PAIR = _pairs(NOT_SIZE_ENTRIES) + [0, -1, True, 2.5, "2", (1, 1, 1), (1,), 2**63, np.float64(2), (True, True)]
BAD_PADDING = [
    -1,
    (-1, 0),
    ((0, -1), (0, 0)),
    "FULL",
    True,
    (True, 0),
    1.5,
    (1, 1, 1),
    ((1, 1, 1), (0, 0)),
    2**63,
    3,  # more than half of the 2x2 window (PyTorch's rule)
    (0, 2),
    ((0, 2), (0, 0)),
    None,
]
BAD_SPATIAL_SIZES = _pairs([0, -1, True, 2.5, "2", np.float32(3), 2**63]) + [2, "33", (3, 3, 3, 3, 3), None, (2**62, 2**62)]
BAD_NUM_SPATIAL_DIMS = [0, -1, True, 2.0, "2", None, 5]


def real(low_bad, *extra):
    return [float("nan"), "0.5", True, None, *low_bad, *extra]


SIZE = st.sampled_from(BAD_WINDOWS)
SIZE_OR_NONE = st.sampled_from([v for v in BAD_WINDOWS if v is not None])  # where None is valid (global / Graham)
INT_OR_PAIR = st.sampled_from(BAD_INT_OR_PAIR)
PADDING = st.sampled_from(BAD_PADDING)
FLAG = st.sampled_from(NOT_BOOLS)
FORMAT = st.sampled_from(BAD_FORMATS)
CHOICE = st.sampled_from(BAD_CHOICE)

WINDOWED = dict(window_shape=SIZE, strides=INT_OR_PAIR, padding=PADDING, data_format=FORMAT)
GLOBAL = dict(num_spatial_dims=st.sampled_from(BAD_NUM_SPATIAL_DIMS), keepdims=FLAG, data_format=FORMAT)
BAD_KEYS = st.sampled_from([5, "abc", np.array([1, 2, 3]), np.float32(1)])  # JAX's own TypeError names the "PRNG key"
BAD_MASKS = [np.ones((2, 6, 6), np.int32), np.ones((2, 5, 6), bool), np.ones((3,), bool)]

# op name -> (call(x, **overrides), {argument: strategy of bad values})
OPS = {
    "max_pool": (
        lambda x, **kw: jaxpool.max_pool(x, **{"window_shape": (2, 2), **kw}),
        dict(WINDOWED, dilation=INT_OR_PAIR, ceil_mode=FLAG, return_indices=FLAG, backward=CHOICE),
    ),
    "min_pool": (
        lambda x, **kw: jaxpool.min_pool(x, **{"window_shape": (2, 2), **kw}),
        dict(WINDOWED, dilation=INT_OR_PAIR, ceil_mode=FLAG),
    ),
    "avg_pool": (
        lambda x, **kw: jaxpool.avg_pool(x, **{"window_shape": (2, 2), **kw}),
        dict(
            WINDOWED,
            ceil_mode=FLAG,
            count_include_pad=FLAG,
            divisor_override=st.sampled_from([0, -1, 1.5, True, "2", np.float32(2)]),
        ),
    ),
    "lp_pool": (
        lambda x, **kw: jaxpool.lp_pool(x, **{"norm_type": 2.0, "window_shape": (2, 2), **kw}),
        dict(WINDOWED, norm_type=st.sampled_from(real([0, -2.0, -math.inf]))),
    ),
    "adaptive_avg_pool": (
        lambda x, **kw: jaxpool.adaptive_avg_pool(x, **{"output_size": (3, 3), **kw}),
        dict(output_size=st.sampled_from(BAD_SPATIAL_SIZES), data_format=FORMAT),
    ),
    "adaptive_max_pool": (
        lambda x, **kw: jaxpool.adaptive_max_pool(x, **{"output_size": (4, 4), **kw}),
        dict(output_size=st.sampled_from(BAD_SPATIAL_SIZES), return_indices=FLAG, data_format=FORMAT),
    ),
    "global_avg_pool": (jaxpool.global_avg_pool, dict(GLOBAL, mask=st.sampled_from(BAD_MASKS))),
    "global_max_pool": (jaxpool.global_max_pool, dict(GLOBAL, mask=st.sampled_from(BAD_MASKS))),
    "global_avgmax_pool": (jaxpool.global_avgmax_pool, dict(GLOBAL, combine=CHOICE, mask=st.sampled_from(BAD_MASKS))),
    "spatial_pyramid_pool": (
        jaxpool.spatial_pyramid_pool,
        dict(
            levels=st.sampled_from([(), (1, 0), (True,), (1.5,), "124", None, 2, ((1, 2, 3),), (1, -2), (2**63,), (1, 2**40)]),
            method=CHOICE,
            num_spatial_dims=st.sampled_from(BAD_NUM_SPATIAL_DIMS),
            data_format=FORMAT,
        ),
    ),
    "stochastic_pool": (
        lambda x, **kw: jaxpool.stochastic_pool(x, **{"window_shape": (2, 2), "key": KEY, **kw}),
        dict(WINDOWED, deterministic=FLAG, ceil_mode=FLAG, key=BAD_KEYS),
    ),
    "mixed_pool": (
        lambda x, **kw: jaxpool.mixed_pool(x, **{"window_shape": (2, 2), "key": KEY, **kw}),
        dict(
            WINDOWED,
            deterministic=FLAG,
            ceil_mode=FLAG,
            key=BAD_KEYS,
            mix_prob=st.sampled_from(real([-0.1, 1.5, math.inf])),
            per=CHOICE,
        ),
    ),
    "fractional_max_pool": (
        lambda x, **kw: jaxpool.fractional_max_pool(
            x, **{"window_shape": (2, 2), "output_size": (3, 3), "samples": np.full((2, 3, 2), 0.5, np.float32), **kw}
        ),
        dict(
            window_shape=SIZE_OR_NONE,
            output_size=st.sampled_from([v for v in BAD_SPATIAL_SIZES if v != 2] + [(6, 6), (7, 2)]),
            samples=st.sampled_from(
                [
                    np.full((2, 3, 2), v, np.float32)
                    for v in (np.nan, 7.0, -0.5, 1.0, np.inf, -np.inf)  # uniforms in [0, 1) only
                ]
                + [np.ones((2, 3, 2), np.int32), np.full((2, 3, 3), 0.5, np.float32), np.full((5, 2), 0.5, np.float32)]
            ),
            random_regions=FLAG,
            overlapping=FLAG,
            return_indices=FLAG,
            data_format=FORMAT,
        ),
    ),
    "fractional_max_pool(output_ratio)": (
        lambda x, **kw: jaxpool.fractional_max_pool(x, **{"output_ratio": (0.5, 0.5), "deterministic": True, **kw}),
        dict(
            output_ratio=st.sampled_from([(r, 0.5) for r in real([0, -0.5, 1.5, 7.0, math.inf, 0.01])] + [0.5, "0.5", None]),
            deterministic=FLAG,
        ),
    ),
    "gated_pool": (
        lambda x, **kw: jaxpool.gated_pool(x, **{"gate_weights": np.ones((2, 2), np.float32), "window_shape": (2, 2), **kw}),
        dict(
            WINDOWED,
            gate_weights=st.sampled_from(
                [np.ones((3, 3), np.float32), np.ones((2, 2), np.int32), np.ones((2, 2, 4), np.float32)]
            ),
            ceil_mode=FLAG,
        ),
    ),
    "tree_pool": (
        lambda x, **kw: jaxpool.tree_pool(
            x,
            **{
                "leaf_weights": np.ones((2, 2, 2), np.float32),
                "gate_weights": np.ones((1, 2, 2), np.float32),
                "window_shape": (2, 2),
                **kw,
            },
        ),
        dict(
            WINDOWED,
            leaf_weights=st.sampled_from(
                [np.ones((3, 2, 2), np.float32), np.ones((2, 2, 2), np.int32), np.ones((2, 3, 3), np.float32)]
            ),
            gate_weights=st.sampled_from([np.ones((2, 2, 2), np.float32), np.ones((1, 2, 2), np.int32)]),
            ceil_mode=FLAG,
        ),
    ),
    "blur_pool": (
        jaxpool.blur_pool,
        dict(
            window_shape=SIZE,
            strides=INT_OR_PAIR,
            filter_size=st.sampled_from([0, 8, True, 2.5, (3, 3, 3), "3", (3, None)]),
            data_format=FORMAT,
        ),
    ),
    "max_blur_pool": (
        jaxpool.max_blur_pool,
        dict(WINDOWED, filter_size=st.sampled_from([0, 8, True, 2.5, (3, 3, 3), "3"])),
    ),
    "avgmax_pool": (
        lambda x, **kw: jaxpool.avgmax_pool(x, **{"window_shape": (2, 2), **kw}),
        dict(WINDOWED, combine=CHOICE, ceil_mode=FLAG, count_include_pad=FLAG),
    ),
    "median_pool": (lambda x, **kw: jaxpool.median_pool(x, **{"window_shape": (2, 2), **kw}), WINDOWED),
    "soft_pool": (lambda x, **kw: jaxpool.soft_pool(x, **{"window_shape": (2, 2), **kw}), WINDOWED),
    "gem_pool": (
        jaxpool.gem_pool,
        dict(
            p=st.sampled_from(real([0, -1.0], np.ones(2, np.float32), np.array(1 + 2j))),
            eps=st.sampled_from(real([0, -1e-6, math.inf])),
            num_spatial_dims=st.sampled_from(BAD_NUM_SPATIAL_DIMS[:-2]),
            data_format=FORMAT,
        ),
    ),
    "gem_pool(window)": (
        lambda x, **kw: jaxpool.gem_pool(x, **{"window_shape": (2, 2), **kw}),
        dict(WINDOWED, window_shape=SIZE_OR_NONE, num_spatial_dims=st.sampled_from([3, 0, True])),
    ),
    "max_unpool": (
        lambda x, **kw: jaxpool.max_unpool(
            x[:, :3, :3], **{"indices": np.zeros((2, 3, 3, 3), np.int32), "output_size": (6, 6), **kw}
        ),
        dict(
            indices=st.sampled_from(
                [np.zeros((2, 3, 3, 3), np.float32), np.zeros((2, 3, 3, 2), np.int32), np.full((2, 3, 3, 3), 36)]
            ),
            output_size=st.sampled_from(BAD_SPATIAL_SIZES[:-1] + [(2**40, 2**40)]),
            data_format=FORMAT,
        ),
    ),
}


def test_every_public_op_is_fuzzed():
    assert {name.split("(")[0] for name in OPS} == set(jaxpool.__all__)


def _raises_naming(call, argument, value, jit):
    fn = jax.jit(call) if jit else call
    with pytest.raises((ValueError, TypeError)) as info:
        fn(jnp.asarray(X))
    assert argument in str(info.value), f"{argument}={value!r}: message does not name it: {info.value}"


@pytest.mark.parametrize("op", sorted(OPS))
@given(data=st.data())
def test_bad_argument_raises_naming_it(op, data):
    call, arguments = OPS[op]
    argument = data.draw(st.sampled_from(sorted(arguments)), label="argument")
    value = data.draw(arguments[argument], label="value")
    for jit in (False, True):
        _raises_naming(lambda x: call(x, **{argument: value}), argument, value, jit)


@pytest.mark.parametrize("op", sorted(OPS))
def test_fuzz_base_call_is_valid(op):
    """The calls the fuzzing corrupts are themselves valid, so each error is the bad argument's."""
    call, _ = OPS[op]
    assert np.isfinite(np.asarray(jax.tree.leaves(call(jnp.asarray(X)))[0], np.float32)).all()


# ---------------------------------------------------------------- the cases, by name

PAIRS_2D = np.ones((6, 6), np.float32)
NAMED = [
    ("3-entry window on a 2-D array", lambda: jaxpool.max_pool(PAIRS_2D, (2, 2, 2)), ValueError, "window_shape"),
    ("window of bools", lambda: jaxpool.max_pool(X, (True, True)), TypeError, "window_shape"),
    ("strides of bools", lambda: jaxpool.avg_pool(X, (2, 2), (True, True)), TypeError, "strides"),
    ("strides past int64", lambda: jaxpool.max_pool(X, (2, 2), 2**63), ValueError, "strides"),
    ("scalar negative padding", lambda: jaxpool.max_pool(X, (2, 2), padding=-1), ValueError, "padding"),
    ("return_indices string", lambda: jaxpool.max_pool(X, (2, 2), return_indices="no"), TypeError, "return_indices"),
    ("count_include_pad string", lambda: jaxpool.avg_pool(X, (2, 2), count_include_pad="False"), TypeError, "count_include_pad"),
    ("keepdims string", lambda: jaxpool.global_avg_pool(X, keepdims="no"), TypeError, "keepdims"),
    ("samples NaN", lambda: _fractional_samples(np.nan), ValueError, "samples"),
    ("samples 7", lambda: _fractional_samples(7.0), ValueError, "samples"),
    ("samples negative", lambda: _fractional_samples(-0.5), ValueError, "samples"),
    ("huge adaptive output", lambda: jaxpool.adaptive_avg_pool(X, (2**40, 2**40)), ValueError, "output_size"),
    ("huge output with channels", lambda: jaxpool.adaptive_max_pool(X, (2**29, 2**29)), ValueError, "output_size"),
    ("SAME with a huge dilation", lambda: jaxpool.max_pool(X, (2, 2), 1, "SAME", dilation=2**40), ValueError, "dilation"),
    ("global max, empty axis", lambda: jaxpool.global_max_pool(np.ones((2, 0, 4, 3))), ValueError, "empty spatial axis"),
    ("global avg, empty axis", lambda: jaxpool.global_avg_pool(np.ones((2, 4, 0, 3))), ValueError, "empty spatial axis"),
    ("adaptive, output_size longer than x", lambda: jaxpool.adaptive_avg_pool(PAIRS_2D, (2, 2, 2)), ValueError, "output_size"),
    ("global, too many dims", lambda: jaxpool.global_max_pool(PAIRS_2D, num_spatial_dims=2), ValueError, "num_spatial_dims"),
    ("traced window entry", lambda: jax.jit(lambda k: jaxpool.max_pool(X, (k, 2)))(2), TypeError, "window_shape"),
]


def _fractional_samples(value):
    return jaxpool.fractional_max_pool(X, (2, 2), output_size=(3, 3), samples=np.full((2, 3, 2), value, np.float32))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("call, error, word", [c[1:] for c in NAMED], ids=[c[0] for c in NAMED])
def test_named_bad_input(call, error, word, jit):
    fn = (lambda: jax.jit(lambda _: call())(0)) if jit else call
    with pytest.raises(error, match=word):
        fn()


def test_global_max_over_empty_axis_does_not_blame_window_shape():
    with pytest.raises(ValueError) as info:
        jaxpool.global_max_pool(np.ones((2, 0, 4, 3)))
    assert "window_shape" not in str(info.value)


def test_valid_integer_kinds_are_accepted():
    """NumPy integers, concrete integer JAX scalars and NumPy bools are fine; huge strides just give one window."""
    xt = jnp.asarray(X)
    expected = jaxpool.max_pool(xt, (2, 2), (2, 2))
    np.testing.assert_array_equal(jaxpool.max_pool(xt, (np.int64(2), jnp.int32(2)), np.int8(2)), expected)
    np.testing.assert_array_equal(jaxpool.max_pool(xt, (2, 2), ceil_mode=np.bool_(False)), expected)
    y = jaxpool.max_pool(xt, (2, 2), 2**62)
    np.testing.assert_array_equal(y, jnp.max(xt[:, :2, :2], axis=(1, 2), keepdims=True))
