"""Tiling window sums (avg k x k / k) written three ways in plain JAX, against jaxpool, on this backend.

    python benchmarks/xla_tiling_sums.py [--rounds 10] [--batch-scale 1] [--calls 1]

Why: on an H100 (benchmarks/RESULTS_breadth_gpu.md, thirty-third session) jaxpool's avg 2x2/2 ran
1.39x flax's ``reduce_window`` forward+backward, slower than jaxpool's own max 2x2/2 on the same
input, while on XLA:CPU the tap sum is the fastest form. ``jaxpool._lowering`` chooses by geometry
alone; before it chooses by backend too (``lax.platform_dependent``), each backend's fastest form
must be measured. The forms (each differentiated by JAX):

- ``reshape``: a reshape that gives every window its own axes and one sum (``"tiling"``); its
  transpose is one broadcast.
- ``slices``: the sum of the ``k*k`` strided slices of the input (a tap fold); its transpose is one
  interior pad per tap.
- ``reduce_window``: ``lax.reduce_window`` with ``add`` (flax.linen's ``avg_pool``); its transpose
  is a padded ``reduce_window``.
- ``jaxpool``: :func:`jaxpool.avg_pool` as shipped.

Every form's value and gradient are checked against ``reshape`` before timing. A sample is
``--calls`` back-to-back calls and one synchronisation, divided by ``--calls`` (use 10 on a GPU);
times are medians over interleaved rounds (best of 2 per round).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jaxpool  # noqa: E402

CASES = [((32, 56, 56, 64), 2), ((32, 57, 57, 64), 3), ((32, 56, 56, 64), 4), ((8, 112, 112, 64), 2), ((32, 56, 56, 64), 7)]


def forms(k: int) -> dict:
    def reshape(x):
        n, h, w, c = x.shape
        return x.reshape(n, h // k, k, w // k, k, c).sum((2, 4)) / (k * k)

    def slices(x):
        return sum(x[:, i::k, j::k] for i in range(k) for j in range(k)) / (k * k)

    def reduce_window(x):
        return lax.reduce_window(x, 0.0, lax.add, (1, k, k, 1), (1, k, k, 1), "VALID") / (k * k)

    def pooled(x):
        return jaxpool.avg_pool(x, (k, k), k)

    return {"reshape": reshape, "slices": slices, "reduce_window": reduce_window, "jaxpool": pooled}


def fwd_bwd(fn):
    return jax.jit(lambda x, ct: (lambda y, vjp: (y, vjp(ct)[0]))(*jax.vjp(fn, x)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--batch-scale", type=int, default=1)
    ap.add_argument("--calls", type=int, default=1)
    args = ap.parse_args()
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), jax {jax.__version__}; batch x{args.batch_scale}")
    for shape, k in CASES:
        shape = (shape[0] * args.batch_scale, *shape[1:])
        keys = jax.random.split(jax.random.key(k))
        x = jax.random.normal(keys[0], shape, jnp.float32)[:, : shape[1] // k * k, : shape[2] // k * k]
        ct = jax.random.normal(keys[1], (shape[0], shape[1] // k, shape[2] // k, shape[3]), jnp.float32)
        compiled = {name: fwd_bwd(fn) for name, fn in forms(k).items()}
        y0, g0 = compiled["reshape"](x, ct)
        for name, f in compiled.items():
            y, g = f(x, ct)
            assert np.allclose(y, y0, atol=1e-5) and np.allclose(g, g0, atol=1e-6), name

        def sample(f, x=x, ct=ct):
            best = np.inf
            for _ in range(2):
                start = time.perf_counter()
                for _ in range(args.calls):
                    out = f(x, ct)
                jax.block_until_ready(out)
                best = min(best, (time.perf_counter() - start) / args.calls)
            return best

        times = {name: [] for name in compiled}
        for r in range(args.rounds):
            for name in list(compiled)[:: 1 if r % 2 else -1]:
                times[name].append(sample(compiled[name]))
        med = {name: np.median(t) * 1e3 for name, t in times.items()}
        best = min(med, key=med.get)
        cells = ", ".join(f"{name} {ms:.3f} ms" for name, ms in med.items())
        ratio = med["jaxpool"] / med[best]
        print(f"avg {k}x{k}/{k} {tuple(x.shape)}: {cells}; fastest {best}; jaxpool / fastest {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
