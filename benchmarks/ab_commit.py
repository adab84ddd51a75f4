"""A/B timing of the working tree's jaxpool against a committed one, in one process.

    python benchmarks/ab_commit.py [--rev HEAD] [--rounds 8] [--calls 5] OP SPEC [SPEC ...]

OP is ``max``, ``avg``, ``unpool`` (max_pool then max_unpool given the window, where the
committed one takes it; SPEC: ``"(shape, window, stride, padding)"``) or ``adaptive_max``,
``adaptive_avg`` (SPEC: ``"(shape, output_size)"``); shapes are channels_last. Prints, per spec,
forward+backward (given cotangent) medians of the committed and the working tree's jaxpool and
PyTorch (when installed; 2 threads), and the ratios; ``--forward`` times inference alone.

Why a tool: on this shared 2-core box the speed of the same program drifts 2-3x within minutes, so
runs in separate processes cannot be compared; within one process, the first executable compiled
runs slower, and with several executables alive identical programs have timed 2x apart (seventh
session's closing note of issue 10). So: the committed package is copied (``git archive``) under
the name ``jaxpool_rev`` and imported beside ``jaxpool``; for each spec only two executables live,
each sample is ``--calls`` consecutive calls, rounds alternate the order (ABBA), and a throwaway
executable is compiled first.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def committed_package(rev: str) -> str:
    """Extracts ``jaxpool/`` at ``rev`` as the package ``jaxpool_rev`` and returns its parent folder."""
    where = tempfile.mkdtemp(prefix="jaxpool_rev_")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "jaxpool"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", where], input=archive, check=True)
    package = pathlib.Path(where, "jaxpool_rev")
    pathlib.Path(where, "jaxpool").rename(package)
    for path in package.rglob("*.py"):
        text = path.read_text()
        text = re.sub(r"\bfrom jaxpool\b", "from jaxpool_rev", text)
        text = re.sub(r"\bimport jaxpool\b", "import jaxpool_rev as jaxpool", text)
        text = text.replace('"jaxpool_', '"jaxpoolrev_')  # primitive names must not collide
        path.write_text(text)
    return where


def pooling(module, op: str, spec: tuple):
    if op.startswith("unpool"):  # max_pool with indices, then max_unpool given the window where it takes one
        shape, window, stride, padding = spec
        n = len(shape) - 2
        win, strides = (window,) * n, (stride,) * n
        given = dict(window_shape=win, strides=strides, padding=padding)
        if op == "unpool_bare" or "window_shape" not in inspect.signature(module.max_unpool).parameters:
            given = {}
        return lambda x: module.max_unpool(*module.max_pool(x, win, strides, padding, return_indices=True), shape[1:-1], **given)
    if op.startswith("adaptive"):
        shape, out = spec
        return lambda x: getattr(module, f"{op}_pool")(x, out)
    shape, window, stride, padding = spec
    n = len(shape) - 2
    return lambda x: getattr(module, f"{op}_pool")(x, (window,) * n, (stride,) * n, padding)


def torch_step(op: str, spec: tuple, x, ct, forward: bool = False):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(2)
    n = x.ndim - 2
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.ndim, torch.contiguous_format)
    xt = torch.from_numpy(np.moveaxis(np.asarray(x), -1, 1).copy()).contiguous(memory_format=fmt).requires_grad_()
    ctt = torch.from_numpy(np.moveaxis(np.asarray(ct), -1, 1).copy()).contiguous(memory_format=fmt)
    fn = getattr(F, f"{op}_pool{n}d") if not op.startswith("unpool") else _torch_round_trip(n, x.shape[1:-1])
    args = (spec[1],) if op.startswith("adaptive") else spec[1:]

    def step():
        xt.grad = None
        fn(xt, *args).backward(ctt)

    def inference():
        with torch.no_grad():
            fn(xt, *args)

    return inference if forward else step


def _torch_round_trip(n: int, size):
    import torch.nn.functional as F

    pool, unpool = getattr(F, f"max_pool{n}d"), getattr(F, f"max_unpool{n}d")
    return lambda t, k, s, p: unpool(*pool(t, k, s, p, return_indices=True), k, s, p, output_size=size)


def sample(step, calls: int) -> float:
    step()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - start) / calls * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("op", choices=["max", "avg", "adaptive_max", "adaptive_avg", "unpool", "unpool_bare"])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--forward", action="store_true", help="time the forward pass alone (inference)")
    args = ap.parse_args()
    sys.path.insert(0, committed_package(args.rev))
    sys.path.insert(0, str(ROOT))
    libraries = {args.rev: importlib.import_module("jaxpool_rev"), "tree": importlib.import_module("jaxpool")}
    rng = np.random.default_rng(0)
    warm = True
    for text in args.specs:
        spec = ast.literal_eval(text)
        x = jnp.asarray(rng.standard_normal(spec[0], np.float32))
        ct_shape = jax.eval_shape(pooling(libraries["tree"], args.op, spec), x).shape
        ct = jnp.asarray(rng.standard_normal(ct_shape, np.float32))
        steps = {}
        for name, module in libraries.items():
            fn = pooling(module, args.op, spec)
            if args.forward:
                compiled = jax.jit(lambda v, c, fn=fn: fn(v))
            else:
                compiled = jax.jit(lambda v, c, fn=fn: (lambda y, vjp: (y, vjp(c)[0]))(*jax.vjp(fn, v)))
            if warm:  # the first executable of a process runs slower: throw one away
                jax.block_until_ready(jax.jit(lambda v, c, fn=fn: jax.vjp(fn, v)[1](c))(x, ct))
                warm = False
            jax.block_until_ready(compiled(x, ct))
            steps[name] = lambda compiled=compiled, x=x, ct=ct: jax.block_until_ready(compiled(x, ct))
        torch = torch_step(args.op, spec, x, ct, args.forward)
        times = {name: [] for name in steps}
        torch_times = []
        for r in range(args.rounds):
            order = list(steps) if r % 4 in (0, 3) else list(reversed(steps))  # ABBA
            for name in order:
                times[name].append(sample(steps[name], args.calls))
            if torch is not None:
                torch_times.append(sample(torch, args.calls))
        rev, tree = (np.median(times[k]) for k in steps)
        mode = " forward" if args.forward else ""
        line = f"{args.op} {text}{mode}: {args.rev} {rev:.2f} ms, tree {tree:.2f} ms, tree/{args.rev} {tree / rev:.2f}"
        if torch_times:
            line += f", torch {np.median(torch_times):.2f} ms, tree/torch {tree / np.median(torch_times):.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
