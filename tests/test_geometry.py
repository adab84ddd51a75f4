"""Output-size arithmetic against the reference, and every validation error (eager and jitted)."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxpool
from jaxpool import _geometry
from tests import reference as ref
from tests.strategies import pool_geometry
from tests.validation import bad_argument_test


@given(
    size=st.integers(1, 40),
    k=st.integers(1, 6),
    s=st.integers(1, 5),
    d=st.integers(1, 3),
    lo=st.integers(0, 3),
    hi=st.integers(0, 3),
    ceil=st.booleans(),
)
def test_output_length_matches_reference(size, k, s, d, lo, hi, ceil):
    extent = d * (k - 1) + 1
    assert _geometry.output_length(size, extent, s, lo, hi, ceil) == ref.output_size(size, k, s, lo, hi, d, ceil)


@given(size=st.integers(1, 40), k=st.integers(1, 6), s=st.integers(1, 5), d=st.integers(1, 3))
def test_same_padding_matches_reference(size, k, s, d):
    assert _geometry.same_padding(size, d * (k - 1) + 1, s) == ref.same_padding(size, k, s, d)


@given(size=st.integers(1, 30), out=st.integers(1, 30))
def test_adaptive_bins_match_reference(size, out):
    starts, ends = _geometry.adaptive_bins(size, out)
    assert list(zip(starts.tolist(), ends.tolist())) == [tuple(b) for b in ref.adaptive_bins(size, out)]


@given(size=st.integers(2, 200), out=st.integers(1, 199))
def test_binned_geometry_covers_exactly_each_bin(size, out):
    """Uneven adaptive bins as one strided window: every bin's elements, and nothing else, are the
    taps left unmasked, and every tap lies inside the input."""
    if out >= size or size % out == 0:
        return
    geom = _geometry.binned_geometry((size, 3), 0, out)
    positions, inside = geom.tap_positions(0), geom.tap_inside(0)
    assert geom.out_shape == (out, 3) and positions.min() >= 0 and positions.max() == size - 1
    for (start, end), pos, keep in zip(ref.adaptive_bins(size, out), positions, inside):
        assert pos[keep].tolist() == list(range(start, end))


@given(pool_geometry())
def test_resolved_geometry_matches_reference(g):
    geom = _geometry.window_geometry(g["spatial"], g["window"], g["strides"], g["padding"], g["dilation"], g["ceil_mode"])
    assert tuple(zip(geom.pad_lo, geom.pad_hi)) == g["pairs"]
    expected = tuple(
        ref.output_size(n, k, s, lo, hi, d, g["ceil_mode"])
        for n, k, s, (lo, hi), d in zip(g["spatial"], g["window"], g["strides"], g["pairs"], g["dilation"])
    )
    assert geom.out_shape == expected
    # The padded extent covers every tap of every window.
    for i in range(geom.ndim):
        assert geom.tap_positions(i).max() + geom.pad_lo[i] < geom.padded_shape[i]


def test_strides_none_means_window_not_one():
    x = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1)
    assert jaxpool.max_pool(x, (3, 3)).shape == (2, 2, 2, 1)
    assert jaxpool.max_pool(x, (3, 3), strides=1).shape == (2, 4, 4, 1)


X = np.zeros((2, 8, 8, 3), np.float32)
P = jaxpool.max_pool
BAD_ARGUMENTS = [
    ("window int", lambda x: P(x, 2), TypeError, "window_shape"),
    ("window zero", lambda x: P(x, (0, 2)), ValueError, "window_shape"),
    ("window empty", lambda x: P(x, ()), ValueError, "window_shape"),
    ("window float", lambda x: P(x, (2.5, 2)), TypeError, "window_shape"),
    ("strides length", lambda x: P(x, (2, 2), (1, 1, 1)), ValueError, "strides"),
    ("strides zero", lambda x: P(x, (2, 2), (0, 1)), ValueError, "strides"),
    ("strides negative", lambda x: P(x, (2, 2), -1), ValueError, "strides"),
    ("dilation zero", lambda x: P(x, (2, 2), dilation=0), ValueError, "dilation"),
    ("padding word", lambda x: P(x, (2, 2), padding="FULL"), ValueError, "padding"),
    ("padding negative", lambda x: P(x, (2, 2), padding=(-1, 0)), ValueError, "padding"),
    ("padding pair length", lambda x: P(x, (2, 2), padding=((1, 1, 1), (0, 0))), ValueError, "padding"),
    ("padding length", lambda x: P(x, (2, 2), padding=(1, 1, 1)), ValueError, "padding"),
    ("window in padding", lambda x: P(x, (2, 2), padding=2), ValueError, "padding"),
    ("window larger than input", lambda x: P(x, (9, 2)), ValueError, "window_shape"),
    ("dilated window larger", lambda x: P(x, (3, 3), dilation=4), ValueError, "window_shape"),
    ("ceil_mode type", lambda x: P(x, (2, 2), ceil_mode="yes"), TypeError, "ceil_mode"),
    ("data_format", lambda x: P(x, (2, 2), data_format="NHWC"), ValueError, "data_format"),
    ("too few dims", lambda x: P(x[0, :, :, 0], (2, 2)), ValueError, "spatial axes"),
    ("backward", lambda x: P(x, (2, 2), backward="scatter"), ValueError, "backward"),
    ("min_pool window", lambda x: jaxpool.min_pool(x, (2, 2), padding=3), ValueError, "padding"),
    ("divisor zero", lambda x: jaxpool.avg_pool(x, (2, 2), divisor_override=0), ValueError, "divisor_override"),
    ("divisor float", lambda x: jaxpool.avg_pool(x, (2, 2), divisor_override=1.5), TypeError, "divisor_override"),
    ("norm zero", lambda x: jaxpool.lp_pool(x, 0, (2, 2)), ValueError, "norm_type"),
    ("norm negative", lambda x: jaxpool.lp_pool(x, -2.0, (2, 2)), ValueError, "norm_type"),
    ("norm string", lambda x: jaxpool.lp_pool(x, "2", (2, 2)), TypeError, "norm_type"),
    ("adaptive zero", lambda x: jaxpool.adaptive_avg_pool(x, (0, 2)), ValueError, "output_size"),
    ("adaptive int", lambda x: jaxpool.adaptive_max_pool(x, 2), TypeError, "output_size"),
    ("adaptive length", lambda x: jaxpool.adaptive_max_pool(x, (2, 2, 2, 2)), ValueError, "spatial axes"),
    ("global dims", lambda x: jaxpool.global_avg_pool(x, num_spatial_dims=0), ValueError, "num_spatial_dims"),
    ("spp levels", lambda x: jaxpool.spatial_pyramid_pool(x, ()), ValueError, "levels"),
    ("spp level zero", lambda x: jaxpool.spatial_pyramid_pool(x, (1, 0)), ValueError, "levels"),
    ("spp method", lambda x: jaxpool.spatial_pyramid_pool(x, method="median"), ValueError, "method"),
    ("complex", lambda x: P(x.astype(jnp.complex64), (2, 2)), TypeError, "complex"),
    ("bool", lambda x: jaxpool.avg_pool(x > 0, (2, 2)), TypeError, "bool"),
    ("unpool indices shape", lambda x: jaxpool.max_unpool(x, jnp.zeros((2, 8, 8, 2), jnp.int32), (8, 8)), ValueError, "indices"),
    ("unpool indices dtype", lambda x: jaxpool.max_unpool(x, x, (8, 8)), TypeError, "indices"),
    ("unpool output_size", lambda x: jaxpool.max_unpool(x, jnp.zeros(x.shape, jnp.int32), 8), TypeError, "output_size"),
]


test_bad_arguments_raise_naming_the_argument = bad_argument_test(BAD_ARGUMENTS, X)


def test_out_of_range_unpool_indices_raise_when_concrete():
    y = jnp.ones((1, 2, 2, 1))
    with pytest.raises(ValueError, match="indices"):
        jaxpool.max_unpool(y, jnp.full((1, 2, 2, 1), 99, jnp.int32), (4, 4))


@pytest.mark.parametrize("op", [jaxpool.max_pool, jaxpool.min_pool, functools.partial(jaxpool.avg_pool)])
def test_no_silent_empty_output(op):
    with pytest.raises(ValueError):
        op(jnp.zeros((1, 0, 4, 1)), (1, 1))


def test_flax_pairs_may_exceed_half_the_window_but_not_leave_a_window_empty():
    """(low, high) pairs follow Flax (any padding) except that each window must hold an input element;
    ints follow PyTorch (at most half the window)."""
    import jax
    import jax.numpy as jnp

    import jaxpool

    x = jnp.arange(6.0).reshape(1, 6, 1)
    y = jaxpool.max_pool(x, (3,), 1, ((2, 2),))  # 2 > 3 // 2: Flax accepts it
    np.testing.assert_array_equal(np.asarray(y).ravel(), [0, 1, 2, 3, 4, 5, 5, 5])
    with pytest.raises(ValueError, match="half of kernel"):
        jaxpool.max_pool(x, (3,), 1, 2)  # the same amount as an int: PyTorch refuses it
    with pytest.raises(ValueError, match="entirely in padding"):
        jax.jit(lambda v: jaxpool.avg_pool(v, (2,), 1, ((3, 0),)))(x)


@given(size=st.integers(2, 60), out=st.integers(1, 60))
def test_adaptive_bins_as_windows_against_a_search(size, out):
    """:func:`jaxpool._geometry.adaptive_as_pool` finds a pool (window k, stride s, padding lo, hi at
    most k / 2) whose windows cut to the input are PyTorch's adaptive bins exactly when a search
    over every stride and left padding finds one, and the same one (the least padding)."""
    bins = ref.adaptive_bins(size, out)
    found = []
    if 1 < out <= size:
        for lo in range(bins[0][1] + 1):  # 2 lo <= k = first bin's end + lo
            for stride in range(1, size + 1):
                k = bins[0][1] + lo
                hi = stride * (out - 1) - lo + k - size
                windows = [(max(0, i * stride - lo), min(size, i * stride - lo + k)) for i in range(out)]
                if 0 <= hi and 2 * max(lo, hi) <= k and windows == bins:
                    found.append(((k,), (stride,), ((lo, hi),)))
    pool = _geometry.adaptive_as_pool((size,), (out,))
    if out == 1:
        assert pool == ((size,), (size,), ((0, 0),))
    else:
        assert pool == (found[0] if found else None)


@given(
    size=st.integers(1, 80),
    k=st.integers(2, 80),
    s=st.integers(1, 4),
    lo=st.integers(0, 40),
    hi=st.integers(0, 40),
    ceil=st.booleans(),
    blocks=st.integers(2, 12),
)
def test_block_passes_cover_each_window_and_pad_only_what_is_padding(size, k, s, lo, hi, ceil, blocks):
    """WindowGeometry.block_passes: runs then blocks of runs read exactly each window's input
    elements, give the same outputs, and no run that the second pass reads as an element lies
    wholly in padding."""
    lo, hi, blocks = min(lo, k // 2), min(hi, k // 2), min(blocks, k)
    if ref.output_size(size, k, s, lo, hi, 1, ceil) < 1 or size + lo + hi < k:
        return
    geom = _geometry.window_geometry((size,), (k,), (s,), ((lo, hi),), ceil_mode=ceil)
    first, second = geom.block_passes(0, blocks, (size,))
    assert second.in_shape == first.out_shape and second.out_shape == geom.out_shape
    assert first.strides == (1,) and first.dilation == (1,) and second.strides == (s,)
    runs = [set(p[keep].tolist()) for p, keep in zip(first.tap_positions(0), first.tap_inside(0))]
    assert all(runs), runs  # every run holds an input element
    for want, pos, keep in zip(geom.tap_positions(0), second.tap_positions(0), second.tap_inside(0)):
        got = set().union(*(runs[p] for p in pos[keep]))
        assert got == {p for p in want.tolist() if 0 <= p < size}
