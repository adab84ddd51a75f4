"""XLA:CPU alone: the least work any average pooling's forward+backward must do, against flax.linen.

Issue 10 asks avg_pool forward+backward to take at most half of flax.linen's time. Whatever the
formulation, a forward+backward that returns ``y`` and ``dx`` reads ``x`` once and writes ``y``,
reads the cotangent once and writes ``dx`` (as large as ``x``). This program times the minimal XLA
programs doing exactly that traffic — no window arithmetic at all — beside flax.linen's avg_pool
and jaxpool's, interleaved in one process, with the minor page faults per call (``getrusage``):

* ``floor``: ``y = x * c`` / a one-pass reduction of ``x`` to ``y``'s shape, ``dx = ct * c`` /
  a broadcast of ``ct`` to ``x``'s shape (the two fresh outputs every forward+backward has);
* ``flax``: ``flax.linen.avg_pool`` forward+backward;
* ``jaxpool``: ``jaxpool.avg_pool`` forward+backward.

If ``floor`` alone exceeds half of ``flax``, the 0.5x target is out of reach for this shape on
XLA:CPU. Cases: 2x2/2 on (32, 56, 56, 64) (25.7 MB input) and 9/1 pad 4 on (32, 4096, 64)
(33.5 MB, above glibc's 32 MiB ceiling for reusing freed blocks: every fresh buffer is a new mmap).

    python benchmarks/xla_avg_floor.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jaxpool  # noqa: E402


def _fwd_bwd(pool):
    def run(x, ct):
        y, vjp = jax.vjp(pool, x)
        return y, vjp(ct)[0]

    return jax.jit(run)


def _cases():
    n, h, c = 32, 56, 64
    tiles = (n, h // 2, 2, h // 2, 2, c)
    yield (
        "avg 2x2/2 (32, 56, 56, 64)",
        (n, h, h, c),
        (n, h // 2, h // 2, c),
        {
            "floor": jax.jit(
                lambda x, ct: (
                    x.reshape(tiles).sum((2, 4)) * 0.25,
                    jnp.broadcast_to(ct[:, :, None, :, None, :] * 0.25, tiles).reshape(x.shape),
                )
            ),
            "flax": _fwd_bwd(lambda x: nn.avg_pool(x, (2, 2), (2, 2))),
            "jaxpool": _fwd_bwd(lambda x: jaxpool.avg_pool(x, (2, 2))),
        },
    )
    yield (
        "avg 9/1 p4 (32, 4096, 64)",
        (32, 4096, 64),
        (32, 4096, 64),
        {
            "floor": jax.jit(lambda x, ct: (x * (1 / 9), ct * (1 / 9))),
            "flax": _fwd_bwd(lambda x: nn.avg_pool(x, (9,), (1,), ((4, 4),))),
            "jaxpool": _fwd_bwd(lambda x: jaxpool.avg_pool(x, (9,), 1, 4)),
        },
    )


def _call(fn, x, ct) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    jax.block_until_ready(fn(x, ct))
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def interleaved(fns: dict, x, ct, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Each of ``fns`` called on ``(x, ct)`` in ``rounds`` interleaved rounds (two warm-up calls
    first), each sample the faster of two calls: seconds and minor page faults per sample."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    faults: dict[str, list[int]] = {k: [] for k in fns}
    for fn in fns.values():
        _call(fn, x, ct)
        _call(fn, x, ct)
    for _ in range(rounds):
        for key, fn in fns.items():
            seconds, count = min((_call(fn, x, ct) for _ in range(2)), key=lambda r: r[0])
            times[key].append(seconds)
            faults[key].append(count)
    return times, faults


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}")
    print("| case | floor ms | flax ms | jaxpool ms | floor / flax | jaxpool / flax | faults per call (floor / flax / jaxpool) |")
    print("|---|---|---|---|---|---|---|")
    for name, shape, out_shape, fns in _cases():
        x = jnp.asarray(rng.standard_normal(shape, np.float32))
        ct = jnp.asarray(rng.standard_normal(out_shape, np.float32))
        times, faults = interleaved(fns, x, ct, args.rounds)
        med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
        ratio = {k: float(np.median(np.array(times[k]) / np.array(times["flax"]))) for k in fns}
        pf = " / ".join(str(int(np.median(faults[k]))) for k in ("floor", "flax", "jaxpool"))
        print(
            f"| {name} | {med['floor']:.2f} | {med['flax']:.2f} | {med['jaxpool']:.2f} | "
            f"{ratio['floor']:.2f} | {ratio['jaxpool']:.2f} | {pf} |"
        )


if __name__ == "__main__":
    main()
