"""tests/typing_check.py (the README's API as a user writes it, which pyright checks in CI) also runs: its calls
are real and its runtime values agree with the types pyright was shown. Each part is traced once under jit
(one compilation instead of one per eager op)."""

import jax

from tests import typing_check
from tests.module_cases import fast_jit


def test_functions():
    fast_jit(typing_check.functions)()


def test_flax_modules():
    fast_jit(typing_check.linen)()
    fast_jit(typing_check.nnx_modules)()


def test_equinox_modules():
    fast_jit(typing_check.equinox_modules)()


def test_return_types_match_the_overloads():
    """What ``assert_type`` claims for the overloads holds at run time (a pair exactly when return_indices=True)."""

    @fast_jit
    def check(x):
        for fn in (typing_check.jaxpool.max_pool, typing_check.jaxpool.adaptive_max_pool):
            assert isinstance(fn(x, (2, 2)), jax.Array)
            pair = fn(x, (2, 2), return_indices=True)
            assert isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(a, jax.Array) for a in pair)
        y = typing_check.jaxpool.fractional_max_pool(x, output_size=(2, 2), deterministic=True, return_indices=True)
        assert isinstance(y, tuple) and len(y) == 2

    check(jax.numpy.ones((1, 4, 4, 2)))
