"""jax.export with symbolic shapes: symbolic batch sizes everywhere; symbolic spatial sizes for
max_pool, min_pool, avg_pool and global pooling (as flax.linen's pooling), a clear ValueError for
the ops whose output shape or window positions need concrete sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jaxpool
from tests.test_transformations import OPS as TRANSFORMED_OPS

EXPORTABLE = {
    "max_pool 3x3/2 p1": lambda x: jaxpool.max_pool(x, (3, 3), 2, 1),
    "max_pool SAME": lambda x: jaxpool.max_pool(x, (2, 3), 1, "SAME"),
    "min_pool 2x2": lambda x: jaxpool.min_pool(x, (2, 2)),
    "avg_pool 3x3/2 p1": lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1),
    "avg_pool exclude pad": lambda x: jaxpool.avg_pool(x, (3, 3), 1, 1, count_include_pad=False),
    "avg_pool SAME": lambda x: jaxpool.avg_pool(x, (2, 3), 2, "SAME", count_include_pad=False),
    "avg_pool divisor_override": lambda x: jaxpool.avg_pool(x, (2, 2), divisor_override=3),
    "global_avg_pool": lambda x: jaxpool.global_avg_pool(x),
    "global_max_pool": lambda x: jaxpool.global_max_pool(x),
}


def _tie_free(shape):
    n = int(np.prod(shape))
    return jnp.asarray(((np.random.default_rng(0).permutation(n) + 0.5) / n).reshape(shape), jnp.float32)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_symbolic_spatial_sizes_export_and_match(name):
    op = EXPORTABLE[name]
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, h, w, 3"), jnp.float32)
    exported = export.export(jax.jit(op))(spec)
    grad_exported = export.export(jax.jit(jax.grad(lambda v: jnp.sum(op(v) ** 2))))(spec)
    for shape in ((2, 9, 12, 3), (1, 16, 7, 3)):
        x = _tie_free(shape)
        np.testing.assert_allclose(exported.call(x), op(x), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(grad_exported.call(x), jax.grad(lambda v: jnp.sum(op(v) ** 2))(x), rtol=1e-5, atol=1e-6)


def test_symbolic_batch_works_for_every_op_kind():
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 12, 12, 2"), jnp.float32)
    for op in (
        lambda x: jaxpool.adaptive_max_pool(x, (5, 5)),
        lambda x: jaxpool.spatial_pyramid_pool(x, (1, 2, 3)),
        lambda x: jaxpool.max_pool(x, (3, 3), 2, 1, ceil_mode=True, return_indices=True),
        lambda x: jaxpool.lp_pool(x, 2.0, (2, 2)),
    ):
        exported = export.export(jax.jit(op))(spec)
        x = _tie_free((3, 12, 12, 2))
        for a, b in zip(jax.tree.leaves(exported.call(x)), jax.tree.leaves(op(x))):
            np.testing.assert_allclose(a, b, rtol=1e-6)


def test_symbolic_batch_exports_large_max_windows_with_indices_and_their_gradient():
    """Large windows with ``return_indices`` (the doubling scheme carrying positions) and
    adaptive max over long bins (the rows-first passes): the zero tangents of their integer
    outputs were NumPy arrays of the batch's shape, which a symbolic size cannot make."""
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 16, 16, 2"), jnp.float32)
    for op in (
        lambda x: jaxpool.max_pool(x, (12, 12), 3, 6, return_indices=True),
        lambda x: jaxpool.adaptive_max_pool(jnp.tile(x, (1, 15, 15, 1)), (7, 7)),  # 240 -> 7: long bins
    ):
        loss = lambda v, op=op: sum(jnp.sum(a.astype(jnp.float32) ** 2) for a in jax.tree.leaves(op(v)))  # noqa: E731
        exported = export.export(jax.jit(jax.grad(loss)))(spec)
        x = _tie_free((2, 16, 16, 2))
        np.testing.assert_allclose(exported.call(x), jax.grad(loss)(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(TRANSFORMED_OPS))
def test_symbolic_batch_exports_every_op_and_its_gradient(name):
    """Every public op (tests/test_transformations.py's table), its value and gradient exported with
    a symbolic batch, equal the concrete run's (the max index's zero tangents of the offsets were
    NumPy arrays of the batch's shape, which a symbolic size cannot make)."""
    op = TRANSFORMED_OPS[name]
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, 8, 8, 2"), jnp.float32)
    loss = lambda v: jnp.sum(op(v) ** 2)  # noqa: E731
    exported, grad_exported = export.export(jax.jit(op))(spec), export.export(jax.jit(jax.grad(loss)))(spec)
    for batch in (1, 3):
        x = _tie_free((batch, 8, 8, 2)) + 0.25
        np.testing.assert_allclose(exported.call(x), op(x), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad_exported.call(x), jax.grad(loss)(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "op",
    [
        lambda x: jaxpool.max_pool(x, (2, 2), return_indices=True),
        lambda x: jaxpool.max_pool(x, (2, 2), ceil_mode=True),
        lambda x: jaxpool.adaptive_avg_pool(x, (3, 3)),
        lambda x: jaxpool.adaptive_max_pool(x, (3, 3)),
        lambda x: jaxpool.spatial_pyramid_pool(x, (1, 2)),
    ],
)
def test_symbolic_spatial_sizes_that_cannot_work_say_so(op):
    spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, h, w, 3"), jnp.float32)
    with pytest.raises(ValueError, match="concrete spatial sizes"):
        export.export(jax.jit(op))(spec)
