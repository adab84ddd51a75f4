"""The adaptive bins' start rows (jaxpool._pick): an exact pick and its exact transpose, as linear
primitives, against NumPy indexing and in every transformation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxpool import _pick
from tests.hlo import compiled_opcodes


def _starts(size, out):
    return np.floor(np.arange(out) * size / out).astype(int)


@st.composite
def picks(draw):
    size = draw(st.integers(2, 40))
    out = draw(st.integers(1, size - 1))
    shape = [draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2)))]
    axis = draw(st.integers(0, len(shape)))
    shape.insert(axis, size)
    return tuple(shape), axis, size, out


@given(case=picks(), seed=st.integers(0, 2**16))
def test_pick_and_its_transpose_match_numpy(case, seed):
    shape, axis, size, out = case
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape).astype(np.float32)
    a.flat[rng.integers(a.size)] = np.nan  # exact rows: a NaN stays where it is
    rows = _starts(size, out)
    y, vjp = jax.vjp(lambda v: _pick.starts(v, axis, size, out), jnp.asarray(a))
    np.testing.assert_array_equal(y, np.take(a, rows, axis=axis))
    ct = rng.normal(size=y.shape).astype(np.float32)
    want = np.zeros(shape, np.float32)
    np.moveaxis(want, axis, 0)[rows] = np.moveaxis(ct, axis, 0)
    np.testing.assert_array_equal(vjp(jnp.asarray(ct))[0], want)


def test_pick_in_every_transformation():
    size, out, axis = 13, 5, 1
    a = jnp.asarray(np.random.default_rng(0).normal(size=(3, size, 4)), jnp.float32)
    f = lambda v: jnp.sum(jnp.sin(_pick.starts(v, axis, size, out)) ** 2)  # noqa: E731
    rows = _starts(size, out)
    np.testing.assert_array_equal(jax.jvp(lambda v: _pick.starts(v, axis, size, out), (a,), (a * 2,))[1], 2 * a[:, rows])
    np.testing.assert_allclose(jax.jit(jax.grad(f))(a), jax.grad(lambda v: jnp.sum(jnp.sin(v[:, rows]) ** 2))(a), rtol=1e-6)
    hess = jax.hessian(f)(a[:1])  # reverse over forward and back: the unpick's transpose is the pick
    want = jax.hessian(lambda v: jnp.sum(jnp.sin(v[:, rows]) ** 2))(a[:1])
    np.testing.assert_allclose(hess, want, rtol=1e-5, atol=1e-6)
    for batch_axis in (0, 1, 2):
        batched = jnp.stack([a, a + 1], axis=batch_axis)
        got = jax.vmap(lambda v: _pick.starts(v, axis, size, out), in_axes=batch_axis)(batched)
        np.testing.assert_array_equal(got, jnp.stack([a[:, rows], (a + 1)[:, rows]]))
        grads = jax.vmap(jax.grad(f), in_axes=batch_axis)(batched)
        np.testing.assert_allclose(grads[0], jax.grad(f)(a), rtol=1e-6)


def test_pick_backward_has_no_scatter_gather_or_dot():
    ops = compiled_opcodes(jax.grad(lambda v: jnp.sum(jnp.sin(_pick.starts(v, 1, 13, 5)))), jnp.ones((2, 13, 8)))
    assert ops["scatter"] == ops["gather"] == ops["dot"] == 0, ops


@pytest.mark.parametrize("size, out", [(5, 5), (4, 0), (4, 8)])
def test_pick_refuses_sizes_without_distinct_starts(size, out):
    with pytest.raises(ValueError, match="out < size"):
        _pick.starts(jnp.ones((size,)), 0, size, out)
