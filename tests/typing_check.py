"""The README's API as a user writes it, checked by pyright in CI (``pyright``, basic mode, see pyproject.toml)
and run by tests/test_typing.py: every ``assert_type`` is what an IDE shows for that call.

Not a pytest module (no ``test_`` prefix): it is a user's script.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from typing_extensions import assert_type

import jaxpool
import jaxpool.equinox as jpe
import jaxpool.linen as jpl
import jaxpool.nnx as jpn

Pair = tuple[jax.Array, jax.Array]


def functions() -> None:
    x = jnp.ones((2, 16, 16, 4))  # (batch, H, W, C): channels_last
    key = jax.random.key(0)
    y = jaxpool.max_pool(x, (3, 3), strides=2, padding=1)
    assert_type(y, jax.Array)
    y, idx = jaxpool.max_pool(x, (2, 2), return_indices=True)  # the overload on return_indices=True
    assert_type(idx, jax.Array)
    x_back = jaxpool.max_unpool(y, idx, (16, 16))
    assert_type(x_back, jax.Array)
    assert_type(jaxpool.max_pool(x, [2, 2], return_indices=bool(len(x))), "jax.Array | Pair")
    assert_type(jaxpool.adaptive_max_pool(x, (4, 4), return_indices=True), Pair)
    assert_type(jaxpool.adaptive_max_pool(x, (4, None)), jax.Array)
    feats = jaxpool.spatial_pyramid_pool(x, (1, 2, 4))
    assert_type(feats, jax.Array)
    g = jax.grad(lambda x: jaxpool.max_pool(x, (3, 3), 2, 1).sum())(x)
    assert g.shape == x.shape
    u = jax.random.uniform(key, (2, 4, 2))
    gate_weights = jnp.zeros((2, 2))
    assert_type(jaxpool.stochastic_pool(x, (3, 3), 2, 1, key=key), jax.Array)
    assert_type(jaxpool.stochastic_pool(x, (3, 3), 2, 1, deterministic=True), jax.Array)
    assert_type(jaxpool.mixed_pool(x, (2, 2), key=key, mix_prob=0.5, per="channel"), jax.Array)
    assert_type(jaxpool.fractional_max_pool(x, output_ratio=(0.7, 0.7), key=key), jax.Array)
    y, idx = jaxpool.fractional_max_pool(x, (2, 2), output_size=(10, 10), samples=u, return_indices=True)
    assert_type(jaxpool.gated_pool(x, gate_weights, (2, 2)), jax.Array)
    assert_type(jaxpool.avgmax_pool(x, (2, 2), combine="cat"), jax.Array)
    assert_type(jaxpool.lp_pool(x, 2.0, (2, 2)), jax.Array)
    assert_type(jaxpool.gem_pool(x, jnp.asarray(3.0), window_shape=(2, 2)), jax.Array)
    assert_type(jaxpool.global_avg_pool(x, mask=jnp.ones((2, 16, 16), bool)), jax.Array)


class Net(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = jpl.StochasticPool((3, 3), strides=2, padding=1)(x, deterministic=not train)
        x = jpl.GatedPool((2, 2))(x)  # learned param "gate", zeros: an even mix
        return jpl.SpatialPyramidPool(levels=(1, 2, 4))(x)  # fixed length for any H, W


def linen() -> None:
    key, x = jax.random.key(0), jnp.ones((1, 8, 8, 3))
    variables = Net().init(key, x, train=False)
    y = Net().apply(variables, x, train=True, rngs={"dropout": key})
    pool = jpl.MaxPool(window_shape=(2, 2), return_indices=True)
    assert_type(pool.window_shape, Sequence[int])
    y, idx = pool.apply({}, x)
    x_back = jpl.MaxUnpool(output_size=(8, 8)).apply({}, y, idx)  # flax types apply's result loosely
    assert isinstance(x_back, jax.Array) and x_back.shape == x.shape
    assert_type(jpl.GeMPool(p=3.0, learn_p=True).learn_p, bool)


def nnx_modules() -> None:
    x = jnp.ones((1, 8, 8, 3))
    pool = jpn.MaxPool(window_shape=(2, 2), return_indices=True)
    out = pool(x)
    assert isinstance(out, tuple)
    y, idx = out
    assert_type(jpn.MaxUnpool((8, 8))(y, idx), jax.Array)
    assert_type(pool.window_shape, Sequence[int])
    assert_type(jpn.GatedPool((2, 2), rngs=nnx.Rngs(0)).gate, nnx.Param)
    dropout_like = jpn.StochasticPool((2, 2), rngs=nnx.Rngs(dropout=0))
    assert_type(dropout_like(x), jax.Array)
    assert_type(dropout_like(x, deterministic=True), jax.Array)
    assert_type(jpn.TreePool((2, 2), depth=3, per_channel=True, num_features=3, rngs=nnx.Rngs(0))(x), jax.Array)


def equinox_modules() -> None:
    key, x = jax.random.key(0), jnp.ones((3, 8, 8))  # one (C, H, W) example
    model = eqx.nn.Sequential([jpe.GatedPool((2, 2), key=key), jpe.StochasticPool((2, 2)), jpe.GlobalAvgPool()])
    assert_type(jpe.AvgPool((2, 2))(x), jax.Array)
    assert_type(jpe.AvgPool((2, 2)).window_shape, Sequence[int])
    assert_type(jpe.GatedPool((2, 2), key=key).gate, jax.Array)
    assert_type(jpe.StochasticPool((2, 2))(x, key=key), jax.Array)
    assert_type(jpe.StochasticPool((2, 2), inference=True)(x), jax.Array)
    batched = jax.vmap(lambda x: model(x, key=key))(jnp.stack([x, x]))
    assert batched.shape == (2, 3)


if __name__ == "__main__":  # rejected() is for pyright only
    functions()
    linen()
    nnx_modules()
    equinox_modules()


def rejected() -> None:
    """Never run: each line is a mistake pyright must report (an unneeded ignore comment is itself an error)."""
    x = jnp.ones((2, 8, 8, 3))
    jpl.MaxPool(windw_shape=(2, 2))  # pyright: ignore[reportCallIssue]
    jpn.AvgPool((2, 2), strides="2")  # pyright: ignore[reportArgumentType]
    jpe.GatedPool((2, 2), per_channel=0.5)  # pyright: ignore[reportArgumentType]
    jaxpool.max_pool(x, 2)  # pyright: ignore[reportCallIssue, reportArgumentType]
    y, idx, extra = jaxpool.max_pool(x, (2, 2), return_indices=True)  # pyright: ignore[reportAssignmentType]
    _ = jaxpool.adaptive_max_pool(x, (2, 2), return_indices=True).shape  # pyright: ignore[reportAttributeAccessIssue]
