"""XLA:CPU alone: ``lax.reduce_window`` (plain and variadic) against jaxpool's forward pass.

Two questions from issue 10's rows above 1.0x PyTorch (max 3x3/3 pad 1, whose forward+backward
reads the input twice: once for the maxima, once for the winners' offsets):

* Is XLA's own window reduction a faster forward? jax 0.10's XLA:CPU hands reduce-windows of
  non-overlapping windows to YNNPACK (``ynn_fusion`` in the compiled HLO; the ``ynn`` column) and
  emits a loop nest for the others. Columns ``rw max`` / ``rw sum``: ``lax.reduce_window`` with
  ``max`` / ``add``; ``jaxpool max`` / ``jaxpool avg``: ``jaxpool.max_pool`` / ``avg_pool``
  (inference, under ``jit``).
* Can XLA give the maximum and its first offset from one read of the input? Only as a variadic
  reduce-window over ``(x, offset)`` with a comparator that keeps PyTorch's winner (the larger
  value, the smaller offset on ties, the larger one among NaNs): column ``rw (max, offset)``, for
  the windows that do not overlap (the offset is then an iota expression of the position).

    python benchmarks/xla_reduce_window.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jaxpool  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from xla_avg_floor import interleaved  # noqa: E402

CASES = (  # (shape, window, stride, padding), channels_last
    ((32, 56, 56, 64), (2, 2), (2, 2), (0, 0)),
    ((32, 56, 56, 64), (3, 3), (3, 3), (1, 1)),
    ((32, 56, 56, 64), (3, 3), (2, 2), (1, 1)),
    ((32, 56, 56, 64), (5, 5), (2, 2), (2, 2)),
    ((32, 56, 56, 64), (5, 5), (3, 3), (1, 1)),
    ((8, 56, 56, 64), (3, 3), (1, 1), (1, 1)),
    ((8, 20, 20, 256), (5, 5), (1, 1), (2, 2)),
    ((2, 64, 64, 8), (15, 15), (1, 1), (0, 0)),
    ((32, 4096, 64), (3,), (2,), (1,)),
)


def _reduce_window(x, init, op, window, strides, padding):
    pads = ((0, 0), *((p, p) for p in padding), (0, 0))
    return lax.reduce_window(x, init, op, (1, *window, 1), (1, *strides, 1), pads)


def _keeps_first(a, b):
    """PyTorch's winner of two ``(value, offset)`` pairs, whatever order XLA combines them in."""
    (av, ai), (bv, bi) = a, b
    an, bn = jnp.isnan(av), jnp.isnan(bv)
    take_b = jnp.where(an & bn, bi > ai, jnp.where(an | bn, bn, (bv > av) | ((bv == av) & (bi < ai))))
    return jnp.where(take_b, bv, av), jnp.where(take_b, bi, ai)


def _max_and_offset(x, window, strides, padding):
    """The variadic reduce-window: each non-overlapping window's maximum and its offset in it."""
    offset = jnp.zeros(x.shape, jnp.int32)
    for axis, (k, p) in enumerate(zip(window, padding), start=1):
        offset = offset * k + (lax.broadcasted_iota(jnp.int32, x.shape, axis) + p) % k
    init = (jnp.array(-jnp.inf, x.dtype), jnp.array(np.iinfo(np.int32).max, jnp.int32))
    pads = ((0, 0), *((p, p) for p in padding), (0, 0))
    return lax.reduce_window((x, offset), init, _keeps_first, (1, *window, 1), (1, *strides, 1), pads)


def _programs(window, strides, padding):
    fns = {
        "rw max": lambda x: _reduce_window(x, -jnp.inf, lax.max, window, strides, padding),
        "jaxpool max": lambda x: jaxpool.max_pool(x, window, strides, padding),
        "rw sum": lambda x: _reduce_window(x, 0.0, lax.add, window, strides, padding),
        "jaxpool avg": lambda x: jaxpool.avg_pool(x, window, strides, padding),
    }
    if all(k <= s for k, s in zip(window, strides)):
        fns["rw (max, offset)"] = lambda x: _max_and_offset(x, window, strides, padding)
    return {name: jax.jit(lambda x, _, fn=fn: fn(x)) for name, fn in fns.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; inference under jit, medians of {args.rounds} rounds")
    columns = ("rw max", "jaxpool max", "rw sum", "jaxpool avg", "rw (max, offset)")
    print("| case | ynn | " + " | ".join(f"{c} ms" for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for shape, window, strides, padding in CASES:
        x = jnp.asarray(rng.standard_normal(shape, np.float32))
        fns = _programs(window, strides, padding)
        reference = fns["jaxpool max"](x, None)
        if "rw (max, offset)" in fns:  # the variadic maxima are PyTorch's (jaxpool's) maxima
            assert bool(jnp.all(fns["rw (max, offset)"](x, None)[0] == reference))
        times = interleaved(fns, x, None, args.rounds)[0]
        ynn = "ynn" in fns["rw max"].lower(x, None).compile().as_text()
        cells = [f"{1e3 * np.median(times[c]):.2f}" if c in times else "–" for c in columns]
        case = f"{'x'.join(map(str, window))}/{strides[0]} p{padding[0]} {shape}"
        print(f"| {case} | {'yes' if ynn else 'no'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
