"""XLA:CPU alone: how much of a jitted call is the page faulting of its fresh buffers, per glibc setting.

Every call of a jitted XLA:CPU function allocates its outputs, and one arena for its temporaries,
afresh. glibc's malloc serves blocks above its mmap threshold (128 KiB, raised dynamically up to
32 MiB when such a block is freed) with a new mmap, whose pages the kernel faults in on first touch,
one 4 KiB page at a time (transparent huge pages are madvise-only on this machine). Whether a call
pays for that depends on the process's allocation history, not on the computation. This program
measures it for three computations of the same size (the (32, 56, 56, 64) float32 activations of
the breadth table's 3x3/2 case, 25.7 MB):

* ``output``: ``x * 2`` (one fresh output);
* ``temp``: ``optimization_barrier(x * 2) + 1`` (the same, plus a temporary of the same size);
* ``jaxpool``: ``jaxpool.max_pool(x, 3, 2, 1)`` forward+backward returning y and dx.

and for NumPy's ``np.multiply(x, 2)`` (a fresh output through the same malloc) and PyTorch's
max_pool2d forward+backward. Each runs in a child process for each allocator setting: glibc's
default, and ``GLIBC_TUNABLES`` keeping large blocks on the heap (bench_core.HEAP_TUNABLES).
Reported per call: median milliseconds and minor page faults (``getrusage``).

    python benchmarks/xla_fresh_buffers.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

HEAP_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"
SHAPE = (32, 56, 56, 64)
CALLS = 30


def _measure(call) -> tuple[float, float]:
    call()
    call()
    times, faults = [], []
    for _ in range(CALLS):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    times.sort()
    faults.sort()
    return 1e3 * times[len(times) // 2], faults[len(faults) // 2]


def child(kind: str) -> None:
    import numpy as np

    x_np = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    if kind == "numpy":
        ms, faults = _measure(lambda: np.multiply(x_np, 2))
    elif kind == "torch":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        torch.set_num_threads(2)
        xt = torch.from_numpy(x_np).movedim(-1, 1).contiguous(memory_format=torch.channels_last).requires_grad_(True)

        def step():
            xt.grad = None
            y = torch.nn.functional.max_pool2d(xt, 3, 2, 1)
            y.backward(torch.ones_like(y))

        ms, faults = _measure(step)
    else:
        import jax
        import jax.numpy as jnp
        from jax import lax

        x = jnp.asarray(x_np)
        if kind == "jaxpool":
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            import jaxpool

            pool = lambda v: jaxpool.max_pool(v, (3, 3), 2, 1)  # noqa: E731
            ct = jnp.ones(pool(x).shape, x.dtype)

            @jax.jit
            def fn(x):
                y, vjp = jax.vjp(pool, x)
                return y, vjp(ct)[0]
        elif kind == "output":
            fn = jax.jit(lambda x: x * 2)
        else:
            fn = jax.jit(lambda x: lax.optimization_barrier(x * 2) + 1)
        ms, faults = _measure(lambda: jax.block_until_ready(fn(x)))
    print(f"{ms:.2f} {faults:.0f}")


def main() -> None:
    kinds = ("output", "temp", "numpy", "jaxpool", "torch")
    print(f"x {SHAPE} float32 ({4 * 32 * 56 * 56 * 64 / 1e6:.1f} MB); median of {CALLS} calls per cell; 4 KiB pages\n")
    print("| computation | default: ms | default: page faults | heap: ms | heap: page faults |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        cells = []
        for tunables in (None, HEAP_TUNABLES):
            env = dict(os.environ)
            env.pop("GLIBC_TUNABLES", None)
            if tunables:
                env["GLIBC_TUNABLES"] = tunables
            out = subprocess.run([sys.executable, __file__, "--child", kind], env=env, capture_output=True, text=True, check=True)
            cells += out.stdout.split()
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2])
    else:
        main()
