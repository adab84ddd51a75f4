"""XLA:CPU alone: how many strided slices of a reshaped slice one loop reads before XLA copies it.

A *cut* is a reshape of a slice of the input — the cores of uneven adaptive bins (500 -> 7: 69 of
every 71 elements) are ``x[:, :, :497].reshape(8, 500, 7, 71, 8)[:, :, :, 2:]``. XLA:CPU's loop
fusion duplicates a producer's index computation into its consumer at most 15 times
(``FusionNodeIndexingEvaluation::kAllowedCodeDuplication`` in xla/service); past that it
materialises the producer: here a 63 MB copy of the cut. This program folds ``g`` strided slices of
the cut (taps ``t, t + g, ...`` along the core axis) with ``lax.max`` for several ``g``, and the
plain reduction ``cut.max(axis)`` (XLA:CPU's reductions fuse no producer), and prints per program
the median milliseconds per call and the materialised fusions (any output as large as the cut is
the copy). Also two folds of 8 in one loop: 16 uses, copied. This is why jaxpool._chunks reduces
long runs in pieces of ``jaxpool._lowering.CUT_TAPS`` = 15.

    python benchmarks/xla_fusion_limit.py
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

SHAPE = (8, 500, 500, 8)
CALLS = 20


def cut(x):
    """The cores of adaptive 500 -> 7 along axis 2: ``(8, 500, 7, 69, 8)``."""
    return x[:, :, :497].reshape(8, 500, 7, 71, 8)[:, :, :, 2:]


def fold(core, g: int, start: int = 0, taps: int | None = None):
    """``lax.max`` over taps ``start .. start + taps - 1`` of every chunk of ``g`` along axis 3."""
    n = core.shape[3] // g
    return functools.reduce(
        lax.max, [lax.slice_in_dim(core, t, t + (n - 1) * g + 1, g, axis=3) for t in range(start, start + (taps or g))]
    )


def programs() -> dict[str, Callable]:
    found: dict[str, Callable] = {f"fold of {g} slices": (lambda x, g=g: fold(cut(x), g)) for g in (2, 8, 15, 16, 32)}
    found["plain reduction"] = lambda x: cut(x).max(3)
    found["two folds of 8, one loop"] = lambda x: lax.max(fold(cut(x), 16, 0, 8), fold(cut(x), 16, 8, 8))
    return found


def _elements(shape: str) -> int:
    """Elements of an HLO shape such as ``f32[8,500,7,69,8]``."""
    return int(np.prod([int(d) for d in re.findall(r"\d+", shape.split("[")[1])]))


def main() -> None:
    x = jnp.asarray(np.random.default_rng(0).standard_normal(SHAPE), jnp.float32)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, input {SHAPE} float32 ({x.nbytes / 2**20:.0f} MiB)")
    for name, f in programs().items():
        jitted = jax.jit(f)
        text = jitted.lower(x).compile().as_text() or ""
        fusions = re.findall(r"^\s*%(\S+) = (\w+\[[\d,]*\])\S* fusion", text, re.M)
        large = [f"{n} {shape}" for n, shape in fusions if 4 * _elements(shape) > x.nbytes // 2]
        jitted(x).block_until_ready()
        times = []
        for _ in range(CALLS):
            start = time.perf_counter()
            jitted(x).block_until_ready()
            times.append(time.perf_counter() - start)
        print(f"{name:32s} {1e3 * float(np.median(times)):7.2f} ms   copies: {', '.join(large) or 'none'}")


if __name__ == "__main__":
    main()
