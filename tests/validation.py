"""One parametrized test for tables of bad-argument cases: each must raise, eagerly and under jit,
an error of the expected type whose message names the argument."""

import jax
import jax.numpy as jnp
import pytest


def bad_argument_test(cases, x):
    """``cases``: ``(id, call(x), error type, word the message must contain)``; returns the test."""

    @pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
    @pytest.mark.parametrize("call, error, word", [c[1:] for c in cases], ids=[c[0] for c in cases])
    def test(call, error, word, jit):
        fn = jax.jit(call) if jit else call
        with pytest.raises(error, match=word):
            fn(jnp.asarray(x))

    return test
