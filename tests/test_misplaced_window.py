"""A window passed where the exponent belongs (``GeMPool((2, 2))``, ``lp_pool(x, (2, 2), ...)``): the contract keeps
PyTorch's argument orders, so the error must name the argument and point to ``window_shape=`` — eagerly, under jit,
and for the modules also with ``learn_p=True`` (where the exponent initialises a parameter)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jaxpool
import jaxpool.equinox as E
import jaxpool.linen as L
import jaxpool.nnx as N

X = jnp.ones((2, 4, 4, 3))
P = r"p must be a number, got \(2, 2\), which looks like a window: pass it as window_shape=, e.g. gem_pool\(x, window_shape="
NORM = r"norm_type must be a number, got \(2, 2\), which looks like a window: pass it as window_shape=, e.g. lp_pool\(x, 2.0"


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_functions(jit):
    wrap = jax.jit if jit else (lambda f: f)
    with pytest.raises(TypeError, match=P):
        wrap(lambda x: jaxpool.gem_pool(x, (2, 2)))(X)
    with pytest.raises(TypeError, match=NORM):
        wrap(lambda x: jaxpool.lp_pool(x, (2, 2), (2, 2)))(X)
    with pytest.raises(TypeError, match=r"p must be a number, got \[2, 2\]"):
        wrap(lambda x: jaxpool.gem_pool(x, [2, 2]))(X)


@pytest.mark.parametrize("learn_p", [False, True])
def test_modules(learn_p):
    with pytest.raises(TypeError, match=P):
        L.GeMPool((2, 2), learn_p=learn_p).init(jax.random.key(0), X)
    with pytest.raises(TypeError, match=P):
        N.GeMPool((2, 2), learn_p=learn_p, rngs=nnx.Rngs(0))(X)
    with pytest.raises(TypeError, match=P):
        E.GeMPool((2, 2), learn_p=learn_p, key=jax.random.key(0))(X[0])
    with pytest.raises(TypeError, match=NORM):
        L.LpPool((2, 2), (2, 2)).init(jax.random.key(0), X)
    assert isinstance(L.GeMPool(window_shape=(2, 2)), nn.Module)  # the keyword form is the fix
    assert L.GeMPool(window_shape=(2, 2)).apply({}, X).shape == (2, 2, 2, 3)
