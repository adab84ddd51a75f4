"""avgmax_pool and global_avgmax_pool: the mean, sum or channel concatenation of average and max pooling.

Values and gradients against the NumPy oracle's avg and max pools (tests/reference.py) over
hypothesis geometry in every layout; against PyTorch (timm's avgmax / catavgmax formulas) at 2-d;
global pooling with keepdims and masks; dtypes; jit / vmap; argument errors.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxpool.combined import COMBINES, avgmax_pool, global_avgmax_pool
from tests import reference as ref
from tests.hlo import compiled_opcodes
from tests.layouts import FORMATS, from_layout, random_input, to_layout
from tests.strategies import layouts, pool_geometry
from tests.validation import bad_argument_test

fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def combined(avg, mx, combine, axis=1):
    """The reference combination of two ``(B, C, ...)`` arrays: ``"cat"`` stacks channels, avg first."""
    if combine == "cat":
        return np.concatenate([avg, mx], axis=axis)
    return 0.5 * (avg + mx) if combine == "mean" else avg + mx


def split_cotangent(ct, combine, axis=1):
    """The cotangents that the avg and max parts receive."""
    if combine == "cat":
        return np.split(ct, 2, axis=axis)
    return (0.5 * ct,) * 2 if combine == "mean" else (ct, ct)


@given(
    g=pool_geometry(dilation=False),
    layout=layouts,
    combine=st.sampled_from(COMBINES),
    count_include_pad=st.booleans(),
    kind=st.sampled_from(["ties", "normal"]),
    seed=st.integers(0, 2**16),
)
def test_avgmax_pool_matches_reference(g, layout, combine, count_include_pad, kind, seed):
    """Ties included: the max part's gradient goes to the first maximum, as the oracle's."""
    data_format, batch_shape = layout
    rng = np.random.default_rng(seed)
    x = random_input(rng, (max(1, math.prod(batch_shape)), 3) + g["spatial"], kind)
    args = (g["window"], g["strides"], g["pairs"])
    avg = ref.avg_pool(x, *args, g["ceil_mode"], count_include_pad)
    mx = ref.max_pool(x, *args, (1,) * len(g["window"]), g["ceil_mode"])[0]
    want = combined(avg, mx, combine)
    ct = rng.normal(size=want.shape)
    ct_avg, ct_max = split_cotangent(ct, combine)
    want_dx = ref.avg_pool_grad(x, ct_avg, *args, g["ceil_mode"], count_include_pad) + ref.max_pool_grad(
        x, ct_max, *args, (1,) * len(g["window"]), g["ceil_mode"]
    )

    def pool(v):
        return avgmax_pool(
            v,
            g["window"],
            g["strides"],
            g["padding"],
            combine=combine,
            ceil_mode=g["ceil_mode"],
            count_include_pad=count_include_pad,
            data_format=data_format,
        )

    @fast_jit
    def run(v, c):
        y, vjp = jax.vjp(pool, v)
        return y, vjp(c)[0]

    y, dx = run(
        jnp.asarray(to_layout(x, data_format, batch_shape)), jnp.asarray(to_layout(ct, data_format, batch_shape), jnp.float32)
    )
    np.testing.assert_allclose(from_layout(y, data_format, batch_shape), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_layout(dx, data_format, batch_shape), want_dx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("masked", [False, True])
def test_global_avgmax_pool_matches_reference(n, data_format, masked):
    """Every combine, with and without keepdims, in one compile; masked: fully masked rows give 0 and
    masked positions no gradient."""
    rng = np.random.default_rng(n)
    x = random_input(rng, (4, 3) + (5,) * n, "normal")
    mask = rng.random((4,) + (5,) * n) < 0.5 if masked else None
    if masked:
        mask[0] = False
        avg, mx = ref.masked_global_pool(x, mask, n, "avg"), ref.masked_global_pool(x, mask, n, "max")
    else:
        avg, mx = ref.global_avg_pool(x, n), ref.global_max_pool(x, n)
    kw = dict(num_spatial_dims=n, mask=mask, data_format=data_format)

    @fast_jit
    def run(v):
        pools = {(c, k): global_avgmax_pool(v, combine=c, keepdims=k, **kw) for c in COMBINES for k in (False, True)}
        return pools, jax.grad(lambda u: global_avgmax_pool(u, **kw).sum())(v)

    pools, dx = run(jnp.asarray(to_layout(x, data_format, (4,))))
    for (combine, keepdims), y in pools.items():
        want = combined(avg, mx, combine)
        channels = want.shape[1]
        if not keepdims:
            assert y.shape == (4, channels)
        else:
            assert y.shape == ((4,) + (1,) * n + (channels,) if data_format == "channels_last" else (4, channels) + (1,) * n)
        np.testing.assert_allclose(y.reshape(want.shape), want, rtol=1e-6, atol=1e-7)
    if masked:
        dx = from_layout(dx, data_format, (4,))
        assert (dx[0] == 0).all() and (dx[~np.broadcast_to(mask[:, None], x.shape)] == 0).all()


@pytest.mark.parametrize("data_format", FORMATS)
@pytest.mark.parametrize("combine", ["mean", "cat"])
def test_matches_torch_timm_formulas_2d(combine, data_format):
    """timm: avgmax = 0.5 * (avg + max), catavgmax = cat([avg, max], 1); windowed with padding and
    ceil_mode, and global (adaptive output 1), values and input gradients."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 9, 8)).astype(np.float32)

    def timm(avg, mx):
        return torch.cat([avg, mx], 1) if combine == "cat" else 0.5 * (avg + mx)

    cases = {
        "window": (
            lambda t: timm(F.avg_pool2d(t, 3, 2, 1, ceil_mode=True), F.max_pool2d(t, 3, 2, 1, ceil_mode=True)),
            lambda v: avgmax_pool(v, (3, 3), 2, 1, combine=combine, ceil_mode=True, data_format=data_format),
        ),
        "global": (
            lambda t: timm(F.adaptive_avg_pool2d(t, 1), F.adaptive_max_pool2d(t, 1)),
            lambda v: global_avgmax_pool(v, combine=combine, keepdims=True, data_format=data_format),
        ),
    }
    for torch_pool, pool in cases.values():
        t = torch.from_numpy(x).requires_grad_(True)
        want = torch_pool(t)
        ct = rng.normal(size=tuple(want.shape)).astype(np.float32)
        want.backward(torch.from_numpy(ct))
        y, dx = fast_jit(lambda v, c, pool=pool: (pool(v), jax.vjp(pool, v)[1](c)[0]))(
            jnp.asarray(to_layout(x, data_format, (2,))), jnp.asarray(to_layout(ct, data_format, (2,)))
        )
        np.testing.assert_allclose(from_layout(y, data_format, (2,)), want.detach().numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(from_layout(dx, data_format, (2,)), t.grad.numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------ dtypes, transforms

X = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, size=(2, 8, 8, 4)), jnp.float32)
POOLS = {
    "mean 3x3": lambda v: avgmax_pool(v, (3, 3), 2, 1),
    "sum 4x4": lambda v: avgmax_pool(v, (4, 4), combine="sum"),
    "cat 2x2": lambda v: avgmax_pool(v, (2, 2), combine="cat"),
    "global mean": lambda v: global_avgmax_pool(v),
    "global cat masked": lambda v: global_avgmax_pool(v, combine="cat", mask=jnp.arange(8)[:, None] < 5),
}


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", POOLS)
def test_half_precision_rounds_once(name, dtype):
    """The mean and sum are formed in float32 and rounded once: within half an ulp of the float32 result."""
    pool = POOLS[name]
    x = X.astype(dtype)
    y, want, dx = fast_jit(
        lambda v: (pool(v), pool(v.astype(jnp.float32)), jax.grad(lambda u: pool(u).astype(jnp.float32).sum())(v))
    )(x)
    assert y.dtype == dtype and dx.dtype == dtype
    np.testing.assert_allclose(y.astype(jnp.float32), want, rtol=float(jnp.finfo(dtype).eps) / 2, atol=0)


@pytest.mark.parametrize("combine", COMBINES)
def test_integers_pool_to_float32(combine):
    x = jnp.asarray(np.random.default_rng(1).integers(-50, 50, size=(2, 6, 6, 3)), jnp.int32)
    y = avgmax_pool(x, (2, 2), combine=combine)
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(y, avgmax_pool(x.astype(jnp.float32), (2, 2), combine=combine))


@pytest.mark.parametrize("name", POOLS)
def test_vmap_and_per_example_grads_match_batch_axes(name):
    pool = POOLS[name]
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 8, 8, 4)), jnp.float32)
    loss = lambda v: (pool(v) ** 2).sum()
    y, y_vmap, g, g_vmap = fast_jit(lambda v: (pool(v), jax.vmap(pool)(v), jax.grad(loss)(v), jax.vmap(jax.grad(loss))(v)))(x)
    np.testing.assert_allclose(y_vmap, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g_vmap, g, rtol=1e-6, atol=1e-6)


def test_backward_is_scatter_free():
    ops = compiled_opcodes(jax.grad(lambda v: avgmax_pool(v, (3, 3), 2, 1, combine="cat").sum()), X)
    assert ops["scatter"] == 0 and ops["select-and-scatter"] == 0


# ------------------------------------------------------------------------------------ validation

BAD_ARGUMENTS = [
    ("combine word", lambda x: avgmax_pool(x, (2, 2), combine="max"), ValueError, "combine"),
    ("combine None", lambda x: avgmax_pool(x, (2, 2), combine=None), ValueError, "combine"),
    ("combine list", lambda x: avgmax_pool(x, (2, 2), combine=["mean"]), ValueError, "combine"),
    ("window", lambda x: avgmax_pool(x, (0, 2)), ValueError, "window_shape"),
    ("window int", lambda x: avgmax_pool(x, 2), TypeError, "window_shape"),
    ("strides", lambda x: avgmax_pool(x, (2, 2), (1, 2, 3)), ValueError, "strides"),
    ("padding", lambda x: avgmax_pool(x, (2, 2), padding="FULL"), ValueError, "padding"),
    ("data_format", lambda x: avgmax_pool(x, (2, 2), data_format="NCHW"), ValueError, "data_format"),
    ("complex", lambda x: avgmax_pool(x.astype(jnp.complex64), (2, 2)), TypeError, "complex"),
    ("global combine", lambda x: global_avgmax_pool(x, combine="concat"), ValueError, "combine"),
    ("global dims", lambda x: global_avgmax_pool(x, num_spatial_dims=0), ValueError, "num_spatial_dims"),
    ("global too many dims", lambda x: global_avgmax_pool(x, num_spatial_dims=4), ValueError, "spatial axes"),
    ("global mask dtype", lambda x: global_avgmax_pool(x, mask=jnp.ones((2, 8, 8), jnp.int32)), TypeError, "mask"),
    ("global mask shape", lambda x: global_avgmax_pool(x, mask=jnp.ones((2, 5, 8), bool)), ValueError, "mask"),
    ("global data_format", lambda x: global_avgmax_pool(x, data_format="NHWC"), ValueError, "data_format"),
]

test_bad_arguments_raise_naming_the_argument = bad_argument_test(BAD_ARGUMENTS, np.zeros((2, 8, 8, 3), np.float32))
