"""Where a jitted jaxpool call spends its time on XLA:CPU: per-fusion milliseconds, temporaries, page faults.

    python benchmarks/profile_fusions.py [--forward] [--calls 10] [--dtype bfloat16] [--ir] OP SPEC [SPEC ...]

OP and SPEC as in ``benchmarks/ab_commit.py`` (``max``/``avg``: ``"(shape, window, stride,
padding)"``; ``adaptive_max``/``adaptive_avg``: ``"(shape, output_size)"``). For each spec the
forward+backward (or, with ``--forward``, the forward) of the working tree's jaxpool is compiled
once and run ``--calls`` times under ``jax.profiler.trace``; the trace's complete events are summed
by name, so each line is one instruction of ``compiled.as_text()`` (a fusion, a copy, a
conditional) with its milliseconds per call. Also printed: the compiled program's temporary bytes
(``memory_analysis()``: above glibc's 32 MiB mmap ceiling the arena is mapped and faulted in afresh
every call under the default allocator) and the minor page faults per call (``getrusage``).

With ``--ir`` XLA dumps each kernel's optimised LLVM IR (``--xla_dump_to``) and every line says
whether its loop is vectorised (the number of vector-typed values in the IR; ``SCALAR`` for none):
an AVX2 host has masked vector loads of 32- and 64-bit elements only, so a loop that loads 8- or
16-bit elements conditionally (a pad fused into it) runs scalar — how the forty-second session
found bfloat16 3x3/2 pad 1 spending 37 of 44 ms in two scalar folds (jaxpool._lowering.upcasts_apart).

This is how the tenth session found that XLA:CPU ran a fused pad of a phase interleave 5-8x
slower than the interleave, and that an int32 winner score was materialised before its reduction.
"""

from __future__ import annotations

import argparse
import ast
import collections
import glob
import gzip
import json
import os
import re
import resource
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from ab_commit import pooling  # noqa: E402

import jaxpool  # noqa: E402

RUNTIME = ("ThunkExecutor", "PjitFunction", "CommonPjRt", "PythonRefManager", "AllocateOutputBuffers", "Handle inputs")


def fusion_times(step, calls: int) -> dict[str, float]:
    """Milliseconds per call of every instruction in ``calls`` calls of ``step``."""
    with tempfile.TemporaryDirectory() as where:
        with jax.profiler.trace(where):
            for _ in range(calls):
                step()
        (path,) = glob.glob(os.path.join(where, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(path) as f:
            events = json.load(f)["traceEvents"]
    total: dict[str, float] = collections.defaultdict(float)
    for event in events:
        name = event.get("name", "")
        if event.get("ph") == "X" and not name.startswith("$") and not name.startswith(RUNTIME):
            total[name] += event["dur"] / 1e3 / calls
    return dict(total)


_VECTOR = re.compile(r"<\d+ x (?:float|double|half|bfloat|i\d+)>")


def vector_values(dump: str, kernel: str) -> int | None:
    """Vector-typed values in the newest optimised LLVM IR that XLA dumped for ``kernel`` (``None``: no IR)."""
    paths = sorted(glob.glob(os.path.join(dump, f"*.{glob.escape(kernel)}_kernel_module.ir-with-opt.ll")))
    if not paths:
        return None
    with open(paths[-1]) as f:
        return len(_VECTOR.findall(f.read()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("op", choices=["max", "avg", "adaptive_max", "adaptive_avg", "unpool", "unpool_bare"])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--forward", action="store_true")
    ap.add_argument("--dtype", default="float32", help="the input's dtype, e.g. bfloat16")
    ap.add_argument("--ir", action="store_true", help="mark each kernel vectorised or SCALAR from XLA's dumped LLVM IR")
    args = ap.parse_args()
    dump = tempfile.mkdtemp(prefix="xla_dump_") if args.ir else None
    if dump:  # read when the backend starts, which no line above has done
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}".strip()
    rng = np.random.default_rng(0)
    for text in args.specs:
        spec = ast.literal_eval(text)
        fn = pooling(jaxpool, args.op, spec)
        x = jnp.asarray(rng.standard_normal(spec[0], np.float32), args.dtype)
        ct = jnp.asarray(rng.standard_normal(jax.eval_shape(fn, x).shape, np.float32), args.dtype)
        if args.forward:
            compiled = jax.jit(lambda v, c, fn=fn: fn(v)).lower(x, ct).compile()
        else:
            compiled = jax.jit(lambda v, c, fn=fn: (lambda y, vjp: (y, vjp(c)[0]))(*jax.vjp(fn, v))).lower(x, ct).compile()

        def step(compiled=compiled, x=x, ct=ct):
            jax.block_until_ready(compiled(x, ct))

        for _ in range(3):
            step()
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        for _ in range(args.calls):
            step()
        ms = (time.perf_counter() - start) / args.calls * 1e3
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / args.calls
        temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
        mode = "forward" if args.forward else "forward+backward"
        summary = f"{ms:.2f} ms per call, temporaries {temp:.1f} MiB, {faults:.0f} page faults per call"
        print(f"{args.op} {text} {args.dtype} {mode}: {summary}")
        for name, t in sorted(fusion_times(step, args.calls).items(), key=lambda kv: -kv[1])[: args.top]:
            vectors = vector_values(dump, name) if dump else None
            tag = "" if vectors is None else ("  SCALAR" if vectors == 0 else f"  ({vectors} vector values)")
            print(f"  {t:8.2f} ms  {name}{tag}")


if __name__ == "__main__":
    main()
