"""Pooling inside a computation: forward+backward of ``sum(sin(pool(x)))`` against a given cotangent.

The breadth table (bench_breadth.py) times ``(y, vjp(ct))`` with the cotangent passed in, which
hides what XLA does when the caller computes something from the result: fused into the pooling's
loops, the caller's derivative (here ``cos(y)``) can recompute the forward window at every tap.
For each case: jaxpool's ``(y, dx)`` given ``ct``; jaxpool's ``grad(sum(sin(pool(x))))``; the
same in PyTorch (channels_last, 2 threads); ``<<<`` marks sin > 2 ct + 0.5 ms.

    python benchmarks/bench_consumer.py [SUBSTRING ...]
"""

import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_core  # noqa: E402  (torch_channels_last, TORCH_THREADS)

import jaxpool  # noqa: E402

torch.set_num_threads(bench_core.TORCH_THREADS)


def median_ms(thunk, n=10):
    """Median milliseconds of ``n`` calls of ``thunk`` after one warm-up call."""
    thunk()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        thunk()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e3


P = jaxpool
cases = [
    ("max 3x3/2 p1", (32, 56, 56, 64), lambda x: P.max_pool(x, (3, 3), (2, 2), 1), lambda t: F.max_pool2d(t, 3, 2, 1)),
    ("max 2x2/2", (32, 56, 56, 64), lambda x: P.max_pool(x, (2, 2), (2, 2)), lambda t: F.max_pool2d(t, 2, 2)),
    ("max 5x5/1 p2", (8, 20, 20, 256), lambda x: P.max_pool(x, (5, 5), (1, 1), 2), lambda t: F.max_pool2d(t, 5, 1, 2)),
    ("max 3x3/1 p1", (32, 28, 28, 64), lambda x: P.max_pool(x, (3, 3), (1, 1), 1), lambda t: F.max_pool2d(t, 3, 1, 1)),
    ("max 4x4/2 p1", (32, 56, 56, 64), lambda x: P.max_pool(x, (4, 4), (2, 2), 1), lambda t: F.max_pool2d(t, 4, 2, 1)),
    ("max 15x15/1", (2, 64, 64, 8), lambda x: P.max_pool(x, (15, 15), (1, 1)), lambda t: F.max_pool2d(t, 15, 1)),
    ("avg 3x3/2 p1", (32, 56, 56, 64), lambda x: P.avg_pool(x, (3, 3), (2, 2), 1), lambda t: F.avg_pool2d(t, 3, 2, 1)),
    ("avg 2x2/2", (32, 56, 56, 64), lambda x: P.avg_pool(x, (2, 2), (2, 2)), lambda t: F.avg_pool2d(t, 2, 2)),
    ("avg 5x5/2 p2", (32, 56, 56, 64), lambda x: P.avg_pool(x, (5, 5), (2, 2), 2), lambda t: F.avg_pool2d(t, 5, 2, 2)),
    ("avg 5x5/1 p2", (8, 20, 20, 256), lambda x: P.avg_pool(x, (5, 5), (1, 1), 2), lambda t: F.avg_pool2d(t, 5, 1, 2)),
    ("gmax 256", (2, 256, 256, 16), lambda x: P.global_max_pool(x), lambda t: t.amax((2, 3))),
    ("gavg 14", (64, 14, 14, 512), lambda x: P.global_avg_pool(x), lambda t: t.mean((2, 3))),
    ("amax 40->6", (32, 40, 40, 64), lambda x: P.adaptive_max_pool(x, (6, 6)), lambda t: F.adaptive_max_pool2d(t, 6)),
    ("amax 50->7", (32, 50, 50, 64), lambda x: P.adaptive_max_pool(x, (7, 7)), lambda t: F.adaptive_max_pool2d(t, 7)),
    ("amax 13->5", (64, 13, 13, 256), lambda x: P.adaptive_max_pool(x, (5, 5)), lambda t: F.adaptive_max_pool2d(t, 5)),
    ("amax 62->4", (16, 62, 62, 64), lambda x: P.adaptive_max_pool(x, (4, 4)), lambda t: F.adaptive_max_pool2d(t, 4)),
    ("amax 90->13", (8, 90, 90, 64), lambda x: P.adaptive_max_pool(x, (13, 13)), lambda t: F.adaptive_max_pool2d(t, 13)),
    ("amax 100->7", (8, 100, 100, 64), lambda x: P.adaptive_max_pool(x, (7, 7)), lambda t: F.adaptive_max_pool2d(t, 7)),
    ("amax 28->11", (16, 28, 28, 64), lambda x: P.adaptive_max_pool(x, (11, 11)), lambda t: F.adaptive_max_pool2d(t, 11)),
    ("amax 64->40", (16, 64, 64, 32), lambda x: P.adaptive_max_pool(x, (40, 40)), lambda t: F.adaptive_max_pool2d(t, 40)),
    ("aavg 40->6", (32, 40, 40, 64), lambda x: P.adaptive_avg_pool(x, (6, 6)), lambda t: F.adaptive_avg_pool2d(t, 6)),
    ("aavg 50->7", (32, 50, 50, 64), lambda x: P.adaptive_avg_pool(x, (7, 7)), lambda t: F.adaptive_avg_pool2d(t, 7)),
    ("aavg 13->5", (64, 13, 13, 256), lambda x: P.adaptive_avg_pool(x, (5, 5)), lambda t: F.adaptive_avg_pool2d(t, 5)),
    ("aavg 62->4", (16, 62, 62, 64), lambda x: P.adaptive_avg_pool(x, (4, 4)), lambda t: F.adaptive_avg_pool2d(t, 4)),
    ("aavg 90->13", (8, 90, 90, 64), lambda x: P.adaptive_avg_pool(x, (13, 13)), lambda t: F.adaptive_avg_pool2d(t, 13)),
    ("aavg 64->40", (16, 64, 64, 32), lambda x: P.adaptive_avg_pool(x, (40, 40)), lambda t: F.adaptive_avg_pool2d(t, 40)),
    ("aavg 50->30", (32, 50, 50, 64), lambda x: P.adaptive_avg_pool(x, (30, 30)), lambda t: F.adaptive_avg_pool2d(t, 30)),
    ("aavg 20->7", (32, 20, 20, 64), lambda x: P.adaptive_avg_pool(x, (7, 7)), lambda t: F.adaptive_avg_pool2d(t, 7)),
    ("spp max", (16, 13, 13, 256), lambda x: P.spatial_pyramid_pool(x, (1, 2, 4)), None),
    (
        "max3d 3x3x3/2 p1",
        (4, 32, 32, 32, 32),
        lambda x: P.max_pool(x, (3, 3, 3), (2, 2, 2), 1),
        lambda t: F.max_pool3d(t, 3, 2, 1),
    ),
    (
        "avg3d 3x3x3/2 p1",
        (4, 32, 32, 32, 32),
        lambda x: P.avg_pool(x, (3, 3, 3), (2, 2, 2), 1),
        lambda t: F.avg_pool3d(t, 3, 2, 1),
    ),
    ("max1d 3/2 p1", (32, 4096, 64), lambda x: P.max_pool(x, (3,), (2,), 1), lambda t: F.max_pool1d(t, 3, 2, 1)),
    ("aavg1d 100000->7", (1, 100000, 4), lambda x: P.adaptive_avg_pool(x, (7,)), lambda t: F.adaptive_avg_pool1d(t, 7)),
    ("amax1d 100000->7", (1, 100000, 4), lambda x: P.adaptive_max_pool(x, (7,)), lambda t: F.adaptive_max_pool1d(t, 7)),
]


def run_case(name, shape, f, tf):
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape, dtype=np.float32))
    ct = jnp.asarray(np.random.default_rng(1).standard_normal(f(x).shape, dtype=np.float32))
    fb = jax.jit(lambda x, ct: (lambda y, v: (y, v(ct)[0]))(*jax.vjp(f, x)))
    sn = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(f(x)))))
    r = {"ct": [], "sin": [], "torch": []}
    timed_torch = None
    if tf is not None:
        xt = bench_core.torch_channels_last(np.asarray(x)).requires_grad_()

        def tsin():
            xt.grad = None
            torch.sin(tf(xt)).sum().backward()
            return xt.grad

        timed_torch = tsin
    for _ in range(3):
        r["ct"].append(median_ms(lambda: jax.block_until_ready(fb(x, ct))))
        r["sin"].append(median_ms(lambda: jax.block_until_ready(sn(x))))
        if timed_torch is not None:
            r["torch"].append(median_ms(timed_torch))
    m = {k: np.median(v) if v else float("nan") for k, v in r.items()}
    flag = " <<<" if m["sin"] > 2 * m["ct"] + 0.5 else ""
    print(
        f"{name:18s} {str(shape):20s} ct {m['ct']:7.2f}  sin {m['sin']:7.2f}  torch-sin {m['torch']:7.2f}"
        f"  sin/torch {m['sin'] / m['torch']:5.2f}{flag}",
        flush=True,
    )


if __name__ == "__main__":
    only = sys.argv[1:]
    for case in cases:
        if not only or any(o in case[0] for o in only):
            run_case(*case)
