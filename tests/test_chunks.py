"""jaxpool._chunks: max/min and PyTorch's winner over long runs, in chunks, against a NumPy loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from jaxpool import _chunks, _lowering


def _pytorch_rule(x: np.ndarray, axis: int, mode: str):
    """PyTorch's scan along ``axis``: take an element strictly better than the best so far, or NaN."""
    moved = np.moveaxis(x, axis, -1)
    best, where = moved[..., 0].copy(), np.zeros(moved.shape[:-1], np.int64)
    for t in range(1, moved.shape[-1]):
        v = moved[..., t]
        take = (v > best) if mode == "max" else (v < best)
        if np.issubdtype(x.dtype, np.floating):
            take |= np.isnan(v)
        best, where = np.where(take, v, best), np.where(take, t, where)
    return best, where


@given(
    k=st.integers(1, 5 * _lowering.CUT_TAPS + 3),
    axis=st.integers(0, 2),
    mode=st.sampled_from(["max", "min"]),
    kind=st.sampled_from(["ties", "special", "zeros", "int"]),
    seed=st.integers(0, 2**16),
)
def test_chunks_match_pytorch_rule(k, axis, mode, kind, seed):
    """Every run length (one piece, several, with and without a tail), each axis, ties, NaN, -inf,
    signed zeros and integers: the extremum and the offset of the first extremum or last NaN, and
    the extremum alone (jaxpool._chunks.extremum)."""
    rng = np.random.default_rng(seed)
    shape = [3, 2, 4]
    shape[axis] = k
    if kind == "int":
        x = rng.integers(-3, 4, size=shape).astype(np.int32)
    elif kind == "zeros":
        x = rng.choice(np.array([-0.0, 0.0, -1.0], np.float32), size=shape)
    else:
        x = rng.integers(-3, 4, size=shape).astype(np.float32)
        if kind == "special":
            x[rng.random(shape) < 0.05] = np.nan
            x[rng.random(shape) < 0.05] = -np.inf
    want, want_offset = _pytorch_rule(x, axis, mode)
    y, offset = jax.jit(lambda v: _chunks.extremum_and_winner(v, axis, mode))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), want)  # NaN equals NaN; -0.0 equals 0.0
    np.testing.assert_array_equal(np.asarray(offset), want_offset)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda v: _chunks.extremum(v, axis, mode))(jnp.asarray(x))), want)
