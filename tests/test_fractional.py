"""fractional_max_pool: both region schemes against the plain-loop reference (values, indices,
gradients), PyTorch parity with ``_random_samples``, random increments, keys, jit/vmap/jvp, dtypes,
region geometry (hypothesis) and argument errors."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxpool
from jaxpool.fractional import _fractional_regions, _graham_reads, _torch_reads, fractional_max_pool
from tests import reference_fractional as fref
from tests.layouts import BATCH_SHAPES, FORMATS, from_layout, random_input, to_layout
from tests.validation import bad_argument_test

KEY = jax.random.key(1412)
LAYOUTS = [(f, b) for f in FORMATS for b in BATCH_SHAPES]


def _plane_samples(u, batch_shape):
    """Canonical ``(B, C, N)`` samples -> jaxpool's ``(*batch, C, N)``."""
    return u.reshape(tuple(batch_shape) + u.shape[1:])


def _run(x, u, ct, layout, **kwargs):
    """One jitted ``(x, samples, ct) -> (y, index, dx)`` in ``layout``, all returned canonical."""
    data_format, batch_shape = layout

    @jax.jit
    def run(x, u, ct):
        f = lambda v: fractional_max_pool(v, samples=u, return_indices=True, data_format=data_format, **kwargs)
        (y, index), vjp = jax.vjp(f, x)
        return y, index, vjp((ct, np.zeros(index.shape, jax.dtypes.float0)))[0]

    args = (to_layout(x, data_format, batch_shape), _plane_samples(u, batch_shape), to_layout(ct, data_format, batch_shape))
    return tuple(from_layout(a, data_format, batch_shape) for a in run(*args))


def _out_shape(spatial, output_size, output_ratio):
    return output_size if output_size is not None else tuple(int(n * r) for n, r in zip(spatial, output_ratio))


def _check(spatial, layout, seed, window_shape=None, output_size=None, output_ratio=None, overlapping=True, kind="ties"):
    """Values, indices and gradient against the reference built from the same uniforms."""
    rng = np.random.default_rng(seed)
    planes = max(1, math.prod(layout[1]))
    x = random_input(rng, (planes, 3) + spatial, kind)
    u = rng.random((planes, 3, len(spatial)), np.float32)
    out = _out_shape(spatial, output_size, output_ratio)
    ct = rng.normal(size=(planes, 3) + out).astype(np.float32)
    kwargs = dict(window_shape=window_shape, output_size=output_size, output_ratio=output_ratio)
    if window_shape is None:
        kwargs["overlapping"] = overlapping
    y, index, dx = _run(x, u, ct, layout, **kwargs)
    intervals = fref.plane_intervals(u, spatial, out, window_shape, overlapping)
    want_y, want_index = fref.pool(x, intervals)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_allclose(dx, fref.pool_grad(x.shape, ct, want_index), rtol=1e-6, atol=1e-6)


# (spatial, window, output_size, output_ratio); case i runs in LAYOUTS[i]: every layout once.
WINDOW_CASES = [
    ((13,), (3,), (5,), None),
    ((11, 9), (2, 3), (6, 5), None),
    ((7, 8), (1, 2), None, (0.75, 0.5)),
    ((9, 4), (4, 1), (1, 4), None),  # one output: the window starts at in - k
    ((6, 7, 5), (2, 2, 1), (4, 3, 5), None),
    ((5, 6, 7), (1, 2, 3), None, (0.8, 0.5, 0.72)),
]


@pytest.mark.parametrize("case", range(len(WINDOW_CASES)))
def test_window_scheme_matches_reference(case):
    spatial, window, size, ratio = WINDOW_CASES[case]
    _check(spatial, LAYOUTS[case], case, window, size, ratio, kind="special" if case % 2 else "ties")


# (spatial, output_size, output_ratio, overlapping): alpha in (1, 2), = 1, = 2 and > 2, ratios; case i
# runs in LAYOUTS[i % 6].
GRAHAM_CASES = [
    ((17,), (11,), None, True),
    ((12, 9), (7, 6), None, False),
    ((10, 7), None, (0.7, 1.0), True),  # alpha = 1 on the second axis
    ((13, 12), (4, 6), None, False),  # alpha > 2 and alpha = 2
    ((5, 8), (1, 3), None, True),  # one output spans the whole axis
    ((7, 6, 5), (5, 4, 3), None, False),
    ((6, 9, 4), None, (0.5, 0.6, 0.75), True),
    ((15, 8), (6, 5), None, True),
]


@pytest.mark.parametrize("case", range(len(GRAHAM_CASES)))
def test_graham_scheme_matches_reference(case):
    spatial, size, ratio, overlapping = GRAHAM_CASES[case]
    layout = LAYOUTS[case % len(LAYOUTS)]
    _check(spatial, layout, 100 + case, None, size, ratio, overlapping, kind="special" if case % 2 else "ties")


# --- PyTorch parity ---------------------------------------------------------------------------------

TORCH_CASES = [
    # (spatial, kernel, output_size, output_ratio, batched)
    ((11, 9), (2, 3), (6, 5), None, True),
    ((10, 10), 2, (4, 4), None, True),
    ((100, 7), (3, 2), None, (0.29, 0.75), True),  # 100 * 0.29 = 28.999999999999996: 28 outputs
    ((8, 9), (2, 2), (5, 6), None, False),
    ((9, 8, 7), (2, 2, 2), (4, 5, 3), None, True),
    ((7, 6, 9), (1, 2, 3), None, (0.6, 0.5, 0.72), True),
    ((6, 6, 6), (2, 3, 1), (4, 3, 5), None, False),
]


@pytest.mark.parametrize("case", range(len(TORCH_CASES)))
def test_torch_parity_with_random_samples(case):
    torch = pytest.importorskip("torch")
    spatial, kernel, size, ratio, batched = TORCH_CASES[case]
    data_format = FORMATS[case % 2]
    n = len(spatial)
    rng = np.random.default_rng(case)
    x = random_input(rng, (2, 3) + spatial, "special" if case % 2 else "ties")
    u = rng.random((2, 3, n), np.float32)
    tx = torch.tensor(x if batched else x[0], requires_grad=True)
    pool = torch.nn.functional.fractional_max_pool2d if n == 2 else torch.nn.functional.fractional_max_pool3d
    ty, ti = pool(tx, kernel, size, ratio, return_indices=True, _random_samples=torch.tensor(u if batched else u[:1]))
    ct = rng.normal(size=ty.shape).astype(np.float32)
    ty.backward(torch.tensor(ct))

    window = (kernel,) * n if isinstance(kernel, int) else kernel
    batch_shape = (2,) if batched else ()
    layout = (data_format, batch_shape)
    y, index, dx = _run(
        x if batched else x[:1],
        u if batched else u[:1],
        ct if batched else ct[None],
        layout,
        window_shape=window,
        output_size=size,
        output_ratio=ratio,
    )
    if not batched:
        y, index, dx = y[0], index[0], dx[0]
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(index, ti.numpy())
    np.testing.assert_array_equal(dx, tx.grad.numpy())


def _regions(x, *args, **kwargs):
    """:func:`_fractional_regions` as one jitted program (not one compile per operation), in NumPy."""
    arrays = {k: kwargs.pop(k) for k in ("key", "samples") if k in kwargs}
    regions = jax.jit(lambda x, arrays: _fractional_regions(x, *args, **kwargs, **arrays))(x, arrays)
    return [tuple(np.asarray(a) for a in r) for r in regions]


def test_sample_order_follows_torch():
    """2-d: sample 0 moves the width's windows, sample 1 the height's; 3-d: in order (PyTorch's kernels)."""
    x = np.zeros((1, 10, 10, 10), np.float32)

    def starts(n, moved):
        u = np.zeros((n,), np.float32)  # broadcast to every plane
        u[moved] = 0.9
        regions = _regions(x[(0,) * (3 - n)], (2,) * n, (4,) * n, samples=u, data_format="channels_first")
        return [s[0].tolist() for s, _ in regions]

    fixed, shifted = [0, 2, 5, 8], [0, 3, 5, 8]  # alpha = 8/3
    assert starts(2, 0) == [fixed, shifted] and starts(2, 1) == [shifted, fixed]
    assert starts(3, 0) == [shifted, fixed, fixed] and starts(3, 2) == [fixed, fixed, shifted]


# --- random increments, keys, determinism --------------------------------------------------------------


@pytest.mark.parametrize("spatial, out, overlapping", [((11, 9), (7, 4), True), ((8, 7, 6), (6, 5, 3), False)])
def test_random_regions_are_permutations_and_pool_them(spatial, out, overlapping):
    """Each plane's increments are a permutation of the right multiset; y and the indices are the
    reference's over exactly those regions."""
    rng = np.random.default_rng(3)
    x = random_input(rng, (2, 3) + spatial, "special")
    kwargs = dict(output_size=out, key=KEY, random_regions=True, overlapping=overlapping, data_format="channels_first")
    regions, (y, index) = jax.jit(
        lambda x: (_fractional_regions(x, **kwargs), fractional_max_pool(x, return_indices=True, **kwargs))
    )(x)
    intervals = [[[] for _ in range(3)] for _ in range(2)]
    for (starts, ends), size, o in zip(regions, spatial, out):
        k, r = divmod(size, o)
        for b, c in np.ndindex(2, 3):
            bounds = np.append(np.asarray(starts[b, c]), size)
            assert bounds[0] == 0
            assert sorted(np.diff(bounds).tolist()) == [k] * (o - r) + [k + 1] * r
            want = fref.intervals_from_bounds(bounds.tolist(), size, overlapping)
            assert list(zip(np.asarray(starts[b, c]).tolist(), np.asarray(ends[b, c]).tolist())) == want
            intervals[b][c].append(want)
    want_y, want_index = fref.pool(x, intervals)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(y, want_y)


def test_random_increments_are_uniformly_placed():
    """Over many planes each position holds a long increment with frequency ``(in % out) / out``."""
    starts, _ = _regions(np.zeros((4000, 11, 1), np.float32), output_size=(7,), key=KEY, random_regions=True)[0]
    increments = np.diff(np.append(starts[:, 0], np.full((4000, 1), 11), axis=1), axis=1)
    np.testing.assert_allclose((increments == 2).mean(axis=0), 4 / 7, atol=0.04)
    assert len({tuple(row) for row in increments}) == 35  # all C(7, 4) orders occur


@pytest.mark.parametrize("window", [None, (2, 3)])
def test_key_draws_samples_and_deterministic_uses_one_half(window):
    x = random_input(np.random.default_rng(0), (2, 9, 11, 3), "normal")
    u = jax.random.uniform(KEY, (2, 3, 2))
    half = np.full((2, 3, 2), 0.5, np.float32)

    @jax.jit
    def indices(x):
        pool = lambda **kw: fractional_max_pool(x, window, (5, 6), return_indices=True, **kw)[1]
        random = pool(deterministic=True, random_regions=True) if window is None else pool(deterministic=True)
        return (
            pool(key=KEY),
            pool(samples=u),
            pool(samples=half),
            pool(deterministic=True),
            pool(deterministic=True, key=KEY),
            random,
        )

    from_key, from_u, from_half, *deterministic = (np.asarray(a) for a in indices(x))
    np.testing.assert_array_equal(from_key, from_u)
    for got in deterministic:  # the key is ignored, and so is random_regions
        np.testing.assert_array_equal(got, from_half)


@pytest.mark.parametrize("random_regions", [False, True])
def test_keys_same_and_different_and_vmapped(random_regions):
    x = random_input(np.random.default_rng(1), (2, 12, 10, 4), "normal")
    kwargs = dict(window_shape=None, output_size=(7, 7), random_regions=random_regions)
    f = jax.jit(
        lambda k: (fractional_max_pool(x, key=k, return_indices=True, **kwargs)[1], _fractional_regions(x, key=k, **kwargs))
    )
    keys = jax.random.split(KEY, 3)
    first, regions = f(keys[0])
    np.testing.assert_array_equal(first, f(keys[0])[0])
    assert not np.array_equal(first, f(keys[1])[0])
    batched = np.asarray(jax.jit(jax.vmap(lambda k: f(k)[0]))(keys))
    for i, k in enumerate(keys):
        np.testing.assert_array_equal(batched[i], f(k)[0])
    # one draw per (batch, channel) plane: the planes' regions differ
    assert len({tuple(s) for s in np.asarray(regions[0][0]).reshape(-1, 7)}) > 1


def test_vmap_over_examples_and_samples():
    rng = np.random.default_rng(2)
    x = random_input(rng, (4, 9, 8, 2), "normal")
    u = rng.random((4, 2, 2), np.float32)
    f = lambda x, u: fractional_max_pool(x, None, (6, 5), samples=u, return_indices=True)
    for got, want in zip(jax.jit(jax.vmap(f))(x, u), jax.jit(f)(x, u)):
        np.testing.assert_array_equal(got, want)


# --- gradients ------------------------------------------------------------------------------------------


def test_gradient_counts_region_wins_and_indices_unpool():
    """grad of sum(y): each element gets the number of regions it wins (overlapping regions share);
    max_unpool puts each maximum back at its winner."""
    rng = np.random.default_rng(4)
    x = random_input(rng, (1, 2, 10, 9), "ties")
    u = rng.random((1, 2, 2), np.float32)
    pool = lambda v: fractional_max_pool(v, None, (7, 6), samples=u, return_indices=True, data_format="channels_first")
    dx, (y, index) = jax.jit(lambda v: (jax.grad(lambda w: pool(w)[0].sum())(v), pool(v)))(x)
    _, want_index = fref.pool(x, fref.plane_intervals(u, (10, 9), (7, 6)))
    counts = np.stack([np.bincount(want_index[0, c].ravel(), minlength=90) for c in range(2)]).reshape(1, 2, 10, 9)
    np.testing.assert_array_equal(dx, counts)
    assert dx.sum() == 2 * 7 * 6 and dx.max() > 1  # an element that wins two overlapping regions
    unpooled = jaxpool.max_unpool(y, index, (10, 9), data_format="channels_first")
    np.testing.assert_array_equal(unpooled, np.where(counts > 0, x, 0))


def test_jvp_and_second_order():
    """Forward mode: the winner's tangent. Reverse over reverse of ``sum(y**2)``: ``H t = 2 t`` at every
    winner, once per region it wins (winners from the reference)."""
    rng = np.random.default_rng(5)
    x, t = (rng.normal(size=(2, 3, 9, 7)).astype(np.float32) for _ in range(2))
    u = rng.random((2, 3, 2), np.float32)
    f = lambda v: fractional_max_pool(v, (2, 2), (5, 4), samples=u, data_format="channels_first")

    @jax.jit
    def run(x, t):
        ty = jax.jvp(f, (x,), (t,))[1]
        return ty, jax.grad(lambda v: jnp.vdot(jax.grad(lambda w: (f(w) ** 2).sum())(v), t))(x)

    ty, hess_t = run(x, t)
    _, index = fref.pool(x, fref.plane_intervals(u, (9, 7), (5, 4), (2, 2)))
    flat_t, flat_index = t.reshape(2, 3, 63), index.reshape(2, 3, 20)
    np.testing.assert_array_equal(ty, np.take_along_axis(flat_t, flat_index, -1).reshape(ty.shape))
    wins = np.stack([np.stack([np.bincount(flat_index[b, c], minlength=63) for c in range(3)]) for b in range(2)])
    assert wins.max() > 1  # overlapping windows: an element wins twice
    np.testing.assert_allclose(hess_t, (2 * wins * flat_t).reshape(x.shape), rtol=1e-6)


# --- dtypes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, jnp.bfloat16])
def test_dtypes(dtype):
    rng = np.random.default_rng(6)
    x = rng.integers(-100, 100, (2, 3, 11, 10)).astype(np.float32)  # exact in bfloat16
    u = rng.random((2, 3, 2), np.float32)
    pool = lambda v, window: fractional_max_pool(v, window, (6, 7), samples=u, return_indices=True, data_format="channels_first")
    grad = (lambda v: jax.grad(lambda w: pool(w, None)[0].sum())(v)) if dtype == jnp.bfloat16 else (lambda v: None)
    (y, index), (y2, index2), dx = jax.jit(lambda v: (pool(v, None), pool(v, (2, 2)), grad(v)))(x.astype(dtype))
    for window, got_y, got_index in ((None, y, index), ((2, 2), y2, index2)):
        want_y, want_index = fref.pool(x, fref.plane_intervals(u, (11, 10), (6, 7), window))
        assert got_y.dtype == np.dtype(dtype) and got_index.dtype == np.int32
        np.testing.assert_array_equal(np.asarray(got_y, np.float32), want_y)
        np.testing.assert_array_equal(got_index, want_index)
    if dx is not None:
        assert dx.dtype == np.dtype(dtype) and float(dx.astype(np.float32).sum()) == 2 * 3 * 6 * 7


# --- region geometry --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _axis_regions(u, size, out, k):
    """One axis, one plane: Graham's pseudo-random overlapping and disjoint regions, and PyTorch's."""
    x = jnp.zeros((1, size, 1))
    return (
        _fractional_regions(x, None, (out,), samples=u)[0],
        _fractional_regions(x, None, (out,), samples=u, overlapping=False)[0],
        _fractional_regions(x, (k,), (out,), samples=u)[0],
    )


@st.composite
def _axis(draw):
    size = draw(st.integers(1, 40))
    out = draw(st.integers(1, size))
    return (
        size,
        out,
        draw(st.integers(1, size - out + 1)),
        draw(st.floats(0, 1, exclude_max=True, width=32, allow_subnormal=False)),
    )  # XLA:CPU flushes subnormals


@given(axis=_axis())
def test_regions_lie_within_the_rows_exchanged_for_them(axis):
    """Under spatial sharding each shard receives, for its outputs, only the rows their regions can
    cover whatever the draw (``_torch_reads``, ``_graham_reads``: jaxpool._ranges exchanges those);
    the reference regions (tests/reference_fractional.py, PyTorch's float32 formula) must lie in
    them, for every ``u`` and, for random increments, both extreme orders (long ones first or last;
    every order's boundaries lie between theirs)."""
    size, out, k, u = axis
    first, end = _torch_reads(size, out, k)
    starts = np.asarray(fref.torch_starts(u, size, out, k))
    assert (first <= starts).all() and (starts + k <= end).all(), (first, starts, end)
    bounds = np.asarray(fref.pseudo_random_bounds(u, size, out))  # a_0 .. a_out
    short, long = size // out, -(-size // out)
    extremes = [np.cumsum([0] + order) for order in ([long] * (size % out) + [short] * (out - size % out),)]
    extremes.append(np.cumsum([0] + [short] * (out - size % out) + [long] * (size % out)))
    for overlap in (0, 1):
        for random, cases in ((False, [bounds]), (True, extremes)):
            first, end = _graham_reads(size, out, bool(overlap), random)
            for b in cases:
                assert (first <= b[:-1]).all() and (np.minimum(b[1:] + overlap, size) <= end).all(), (random, b, first, end)


@pytest.mark.parametrize("size, out, k", [(1000, 617, 2), (4099, 2100, 3), (30000, 20011, 2)])
def test_torch_reads_hold_on_long_axes(size, out, k):
    """Float32 rounding of ``(i + u) alpha`` grows with ``i``: on long axes too, PyTorch's windows
    (its formula in float32, as its kernel computes it) stay within ``_torch_reads``."""
    first, end = _torch_reads(size, out, k)
    for u in np.float32([0.0, 1e-7, 0.25, 0.5, 0.999, 1 - 2**-24]):
        starts = np.asarray(fref.torch_starts(u, size, out, k))
        assert (first <= starts).all() and (starts + k <= end).all()


@given(axis=_axis(), spatial=st.lists(st.integers(1, 12), min_size=1, max_size=3), data=st.data())
def test_region_geometry(axis, spatial, data):
    """Graham's regions partition the axis (disjoint) or cover it overlapping by one, with increments
    floor/ceil(alpha); PyTorch's windows lie inside it and end at in - k; output shapes are right.
    (Random increments: see test_random_regions_are_permutations_and_pool_them.)"""
    size, out, k, u = axis
    overlapping, (starts, ends), (t_starts, t_ends) = (
        tuple(np.asarray(a)[0, 0] for a in r) for r in _axis_regions(np.float32([u]), size, out, k)
    )
    bounds = np.append(starts, size)
    assert bounds.tolist() == fref.pseudo_random_bounds(u, size, out)
    assert bounds[0] == 0 and set(np.diff(bounds)) <= {size // out, -(-size // out)}
    np.testing.assert_array_equal(ends, bounds[1:])
    covered = np.zeros(size, int)
    for s, e in zip(starts, ends):
        covered[s:e] += 1
    assert (covered == 1).all()  # a partition
    np.testing.assert_array_equal(overlapping[0], starts)
    np.testing.assert_array_equal(overlapping[1], np.minimum(ends + 1, size))
    assert t_starts.tolist() == fref.torch_starts(u, size, out, k)
    assert t_starts[-1] == size - k and (t_starts[0] == 0 or out == 1) and (t_ends - t_starts == k).all()
    # Output shapes, traced only: sizes or ratios, each scheme.
    out_shape = tuple(data.draw(st.integers(1, n)) for n in spatial)
    window = tuple(n - o + 1 for n, o in zip(spatial, out_shape))  # the largest window that fits
    ratio = tuple(o / n for n, o in zip(spatial, out_shape))
    x = jax.ShapeDtypeStruct((2, 3) + tuple(spatial), jnp.float32)
    want = (2, 3) + tuple(int(n * r) for n, r in zip(spatial, ratio))
    for kw in (dict(output_size=out_shape), dict(output_ratio=ratio, window_shape=window), dict(output_ratio=ratio)):
        got = jax.eval_shape(lambda x: fractional_max_pool(x, key=KEY, data_format="channels_first", **kw), x).shape
        assert got == ((2, 3) + out_shape if "output_size" in kw else want)
    ones = (1,) * len(spatial)  # with a window, one int or ratio stands for all N axes
    for kw in (dict(output_size=1), dict(output_ratio=1.0)):
        got = jax.eval_shape(lambda x: fractional_max_pool(x, ones, key=KEY, data_format="channels_first", **kw), x).shape
        assert got == (2, 3) + (ones if "output_size" in kw else tuple(spatial))


# --- argument errors --------------------------------------------------------------------------------------

X = np.zeros((2, 8, 8, 3), np.float32)
U = np.zeros((2, 3, 2), np.float32)
fmp = fractional_max_pool
CASES = [
    ("no-output", lambda x: fmp(x, (2, 2), key=KEY), ValueError, "output_size"),
    ("both-outputs", lambda x: fmp(x, (2, 2), (4, 4), (0.5, 0.5), key=KEY), ValueError, "output_size"),
    ("output-too-large", lambda x: fmp(x, None, (9, 4), key=KEY), ValueError, "output_size"),
    ("output-zero", lambda x: fmp(x, None, (0, 4), key=KEY), ValueError, "output_size"),
    ("output-float", lambda x: fmp(x, None, (4.0, 4), key=KEY), TypeError, "output_size"),
    ("output-scalar-no-window", lambda x: fmp(x, None, 4, key=KEY), TypeError, "output_size"),
    ("output-rank", lambda x: fmp(x, (2, 2), (4, 4, 4), key=KEY), ValueError, "output_size"),
    ("window-larger-than-input", lambda x: fmp(x, (9, 2), (1, 4), key=KEY), ValueError, "window_shape"),
    ("window-plus-output", lambda x: fmp(x, (3, 3), (7, 6), key=KEY), ValueError, "window_shape"),
    ("window-not-tuple", lambda x: fmp(x, 2, (4, 4), key=KEY), TypeError, "window_shape"),
    ("window-zero", lambda x: fmp(x, (0, 2), (4, 4), key=KEY), ValueError, "window_shape"),
    ("ratio-above-one", lambda x: fmp(x, None, output_ratio=(1.5, 0.5), key=KEY), ValueError, "output_ratio"),
    ("ratio-zero", lambda x: fmp(x, (2, 2), output_ratio=0.0, key=KEY), ValueError, "output_ratio"),
    ("ratio-gives-zero", lambda x: fmp(x, None, output_ratio=(0.1, 0.5), key=KEY), ValueError, "output_ratio"),
    ("ratio-not-number", lambda x: fmp(x, None, output_ratio=("half", 0.5), key=KEY), TypeError, "output_ratio"),
    ("ratio-rank", lambda x: fmp(x, (2, 2), output_ratio=(0.5,), key=KEY), ValueError, "output_ratio"),
    ("no-key", lambda x: fmp(x, None, (5, 5)), ValueError, "key"),
    ("no-key-random", lambda x: fmp(x, None, (5, 5), random_regions=True), ValueError, "key"),
    ("samples-shape", lambda x: fmp(x, None, (5, 5), samples=np.zeros((2, 3, 3), np.float32)), ValueError, "samples"),
    ("samples-channels", lambda x: fmp(x, None, (5, 5), samples=np.zeros((2, 4, 2), np.float32)), ValueError, "samples"),
    ("samples-int", lambda x: fmp(x, None, (5, 5), samples=np.zeros((2, 3, 2), np.int32)), TypeError, "samples"),
    ("samples-deterministic", lambda x: fmp(x, None, (5, 5), samples=U, deterministic=True), ValueError, "samples"),
    ("samples-random", lambda x: fmp(x, None, (5, 5), samples=U, key=KEY, random_regions=True), ValueError, "samples"),
    ("random-with-window", lambda x: fmp(x, (2, 2), (5, 5), key=KEY, random_regions=True), ValueError, "random_regions"),
    ("disjoint-with-window", lambda x: fmp(x, (2, 2), (5, 5), key=KEY, overlapping=False), ValueError, "overlapping"),
    ("deterministic-not-bool", lambda x: fmp(x, None, (5, 5), deterministic=1), TypeError, "deterministic"),
    ("return-indices-not-bool", lambda x: fmp(x, None, (5, 5), key=KEY, return_indices="yes"), TypeError, "return_indices"),
    ("data-format", lambda x: fmp(x, None, (5, 5), key=KEY, data_format="NHWC"), ValueError, "data_format"),
    ("rank", lambda x: fmp(x[0, 0], None, (5, 5), key=KEY), ValueError, "x has shape"),
]
test_bad_arguments = bad_argument_test(CASES, X)
