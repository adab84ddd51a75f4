"""Single-axis max/min passes in any axis order keep PyTorch's row-major winner (jaxpool._rowmajor),
against the NumPy reference: values, the gradient to the first maximum / last NaN, forward mode."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxpool
from jaxpool import _lowering
from jaxpool._geometry import binned_geometry, window_geometry
from jaxpool._layout import layout_of
from jaxpool.max import chain_passes
from tests import reference as ref
from tests.layouts import random_input


def _chained(x, window, strides, pads, order, mode):
    """``jaxpool.max.chain_passes`` over channels-first ``x`` in the given axis order."""
    layout = layout_of(x, len(window), "channels_first")
    geom = window_geometry(layout.spatial_shape(x.shape), window, strides, pads)
    return chain_passes(x, layout, [(i, lambda shape, i=i: geom.axis_only(i, shape)) for i in order], mode)


@pytest.mark.parametrize(
    "spatial, window, strides, pads",
    [
        ((9, 11), (3, 4), (2, 3), ((1, 1), (0, 2))),
        ((7, 8, 9), (3, 2, 4), (2, 2, 3), ((1, 1), (0, 0), (2, 1))),
        ((13, 12), (10, 9), (3, 8), ((0, 0), (4, 4))),  # "blocks" passes (longer than 8 taps)
    ],
)
@pytest.mark.parametrize("kind", ["ties", "special"])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_every_pass_order_keeps_the_row_major_winner(spatial, window, strides, pads, kind, mode):
    """All orders of the passes, including ones where a pass runs before an inner axis's (ranked
    candidates), give the reference's values and route the gradient to its winner; with ties
    (small integers) and NaN/-inf, where the order of passes decides the winner unless ranked."""
    rng = np.random.default_rng(len(spatial) + sum(window))
    x = random_input(rng, (2, 3) + spatial, kind)
    reference = ref.max_pool if mode == "max" else ref.min_pool
    reference_grad = ref.max_pool_grad if mode == "max" else ref.min_pool_grad
    args = (window, strides, pads, (1,) * len(spatial), False)
    want, _ = reference(x, *args)
    ct = rng.normal(size=want.shape).astype(np.float32)
    for order in itertools.permutations(range(len(spatial))):
        y, vjp = jax.vjp(lambda v, order=order: _chained(v, window, strides, pads, order, mode), jnp.asarray(x))
        np.testing.assert_array_equal(y, want.astype(np.float32), err_msg=f"order {order}")
        dx = vjp(jnp.asarray(ct))[0]
        np.testing.assert_allclose(dx, reference_grad(x, ct, *args), rtol=1e-6, atol=1e-6, err_msg=f"order {order}")


def _strided(spatial, window, stride):
    """``{axis: the one-axis geometry}`` of a ``window``/``stride`` pool over both axes."""
    along = lambda i, v: tuple(v if j == i else 1 for j in range(len(spatial)))  # noqa: E731
    return {i: window_geometry(spatial, along(i, window), along(i, stride)) for i in range(len(spatial))}


def _binned(n, o):
    return {i: binned_geometry((n, n), i, o) for i in range(2)}


@pytest.mark.parametrize(
    "passes, first_first",
    [
        (_strided((512, 512), 74, 73), True),  # adaptive 512 -> 7 as a pool: "blocks" passes
        (_binned(40, 6), True),  # masked bins, 10 taps every 6
        (_binned(100, 7), True),
        (_binned(13, 5), False),  # 5 taps every 2: no gain measured
        (_binned(28, 11), False),  # 8 taps
        (_strided((56, 56), 5, 3), False),
    ],
)
def test_pass_order_runs_long_outer_windows_first(passes, first_first):
    """:func:`jaxpool._lowering.pass_order`: two pooled axes, the first's window longer than
    :data:`jaxpool._lowering.AXIS_TAPS` and shrinking its axis no less — that one first."""
    assert _lowering.pass_order(passes) == ([0, 1] if first_first else [1, 0])


def test_pass_order_keeps_last_first_for_three_axes_and_narrower_outer_windows():
    assert _lowering.pass_order(_strided((40, 40, 40), 10, 6)) == [2, 1, 0]
    narrower = {0: window_geometry((60, 60), (12, 1), (10, 1)), 1: window_geometry((60, 60), (1, 20), (1, 20))}
    assert _lowering.pass_order(narrower) == [1, 0]  # the inner axis shrinks more: it goes first


@st.composite
def ranked_cases(draw):
    """Public ops whose passes run first axis first: max_pool with two strided windows of more than
    8 taps, and adaptive max over bins that a window of 9-16 taps covers (or a tiling/blocks pool)."""
    if draw(st.booleans()):
        k = tuple(draw(st.integers(9, 14)) for _ in range(2))
        s = (draw(st.integers(2, k[0])), draw(st.integers(2, k[1])))
        pad = tuple(draw(st.integers(0, kk // 2)) for kk in k)
        spatial = tuple(kk + draw(st.integers(0, 25)) for kk in k)
        return "max_pool", spatial, (k, s, pad)
    o = draw(st.integers(2, 7))
    n = draw(st.integers(3 * o, 16 * o))
    m = draw(st.integers(2, 40))
    return "adaptive", (n, m), (o, draw(st.integers(1, m)))


@settings(max_examples=30, deadline=None)
@given(case=ranked_cases(), kind=st.sampled_from(["ties", "special", "normal"]), seed=st.integers(0, 2**16))
def test_ranked_public_ops_match_reference(case, kind, seed):
    op, spatial, args = case
    rng = np.random.default_rng(seed)
    x = random_input(rng, (2, 3) + spatial, kind)
    if op == "max_pool":
        k, s, pad = args
        ref_args = (k, s, tuple((p, p) for p in pad), (1, 1), False)
        want, _ = ref.max_pool(x, *ref_args)
        pool = lambda v: jaxpool.max_pool(v, k, s, pad, data_format="channels_first")  # noqa: E731
        grad = lambda ct: ref.max_pool_grad(x, ct, *ref_args)  # noqa: E731
    else:
        want, _ = ref.adaptive_max_pool(x, args)
        pool = lambda v: jaxpool.adaptive_max_pool(v, args, data_format="channels_first")  # noqa: E731
        grad = lambda ct: ref.adaptive_max_pool_grad(x, ct, args)  # noqa: E731
    y, vjp = jax.vjp(pool, jnp.asarray(x))
    np.testing.assert_array_equal(y, want.astype(np.float32))
    ct = rng.normal(size=want.shape).astype(np.float32)
    np.testing.assert_allclose(vjp(jnp.asarray(ct))[0], grad(ct), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "pool",
    [lambda v: jaxpool.adaptive_max_pool(v, (6, 6)), lambda v: jaxpool.max_pool(v, (12, 12), (10, 10))],
    ids=["adaptive 40->6", "max 12x12/10"],
)
def test_ranked_passes_forward_mode_and_vmap(pool):
    """Forward mode carries the winner's tangent (against the reference's winners, with ties), and
    vmap gives the unbatched results."""
    rng = np.random.default_rng(0)
    x = random_input(rng, (2, 40, 40, 3), "ties")
    t = rng.normal(size=x.shape).astype(np.float32)
    y, ty = jax.jvp(pool, (jnp.asarray(x),), (jnp.asarray(t),))
    ct = rng.normal(size=y.shape).astype(np.float32)
    (dx,) = jax.vjp(pool, jnp.asarray(x))[1](jnp.asarray(ct))
    np.testing.assert_allclose(np.vdot(ty, ct), np.vdot(dx, t), rtol=1e-5)  # jvp is the transpose of the vjp
    channels_first = np.moveaxis(x, -1, 1)
    if y.shape[1] == 6:
        _, winners = ref.adaptive_max_pool(channels_first, (6, 6))  # flat spatial index of each window's winner
    else:
        _, winners = ref.max_pool(channels_first, (12, 12), (10, 10), ((0, 0), (0, 0)), (1, 1), False)
    picked = np.take_along_axis(np.moveaxis(t, -1, 1).reshape(2, 3, -1), winners.reshape(2, 3, -1), axis=2)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(ty), -1, 1).reshape(2, 3, -1), picked)
    np.testing.assert_array_equal(jax.vmap(pool)(jnp.asarray(x)[:, None])[:, 0], y)


def test_ranked_blocks_program_size_does_not_grow_with_the_window():
    """A ranked ``"blocks"`` pass scores whole blocks and head taps, not every tap: adaptive 2-D
    512 -> 7 (74 every 73) and 2059 -> 7 (295 every 294), both first axis first, lower to programs
    of the same size."""

    def lines(n):
        grad = jax.grad(lambda v: jnp.sum(jnp.sin(jaxpool.adaptive_max_pool(v, (7, 7)))))
        return jax.jit(grad).lower(jnp.ones((1, n, n, 1))).as_text().count("\n")

    assert _lowering.pass_order(_strided((2059, 2059), 295, 294)) == [0, 1]
    small, large = lines(512), lines(2059)
    assert large <= small + 10, (small, large)
