"""The breadth table: jaxpool against flax.linen and PyTorch on many shapes, in one process.

Cases span 1-D, 2-D and 3-D; tiling and overlapping windows from 2x2 to 31x31; global pooling on
small and large maps and on 100k-long sequences; adaptive pooling with even and uneven bins; SPP;
LP; stochastic; max unpooling; float32 and bfloat16. For each case: trace+compile time of the jitted forward+backward
(jaxpool and flax, fresh caches), and forward+backward run time, interleaved in shuffled rounds and
reported as medians of per-round ratios (robust on a shared, noisy machine). A second table shows
compile time against window size.

    python benchmarks/bench_breadth.py [--quick] [--rounds N] [--only SUBSTRING ...] [--out FILE] [--heap]
    python benchmarks/bench_breadth.py --gpu [--calls K] --out FILE   # JAX's GPU, PyTorch's CUDA

Defaults: 15 rounds, best of 2 calls per sample; --out benchmarks/RESULTS_breadth.md (or
RESULTS_breadth_heap.md with --heap: glibc told to keep large blocks on the heap, see bench_core).
PyTorch runs channels_last (channels_last_3d in 3-D) with 2 threads and OMP_WAIT_POLICY=PASSIVE.

With --gpu, JAX runs on its default GPU and PyTorch on CUDA (when its build has CUDA; otherwise the
PyTorch column is empty). A sample there is K (--calls, default 10) back-to-back calls and one
synchronisation, divided by K, so that the time is the device's rather than one dispatch's; each
case is compiled once (the compile column's executable is the one timed).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_core  # noqa: E402  (timing helpers, machine info, heap allocator switch)

import jaxpool  # noqa: E402

torch.set_num_threads(bench_core.TORCH_THREADS)


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple  # channels_last: (N, *spatial, C)
    jaxpool: Callable
    flax: Callable | None = None
    torch: Callable | None = None  # takes channels-first torch tensors
    dtype: str = "float32"
    tags: tuple = field(default=())


def _pads(p, n):
    return ((p, p),) * n


def windowed(kind, shape, k, s, p=0, dtype="float32"):
    n = len(shape) - 2
    win, strides = (k,) * n, (s,) * n
    jp = {"max": jaxpool.max_pool, "avg": jaxpool.avg_pool}[kind]
    fl = {"max": nn.max_pool, "avg": nn.avg_pool}[kind]
    tf = {("max", 1): F.max_pool1d, ("max", 2): F.max_pool2d, ("max", 3): F.max_pool3d}.get((kind, n))
    tf = tf or {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    name = f"{kind} {'x'.join([str(k)] * n)}/{s}" + (f" p{p}" if p else "") + f" {shape}"
    name += "" if dtype == "float32" else f" {dtype}"
    return Case(
        name,
        shape,
        lambda x: jp(x, win, strides, p),
        lambda x: fl(x, win, strides, _pads(p, n)),
        lambda t: tf(t, k, s, p),
        dtype,
    )


def global_case(kind, shape):
    """Global max/avg over every spatial axis; flax's peer is ``x.max``/``x.mean``, PyTorch's ``amax``/``mean``."""
    n = len(shape) - 2
    jp = {"max": jaxpool.global_max_pool, "avg": jaxpool.global_avg_pool}[kind]
    name = f"global {kind}{' 1-D' if n == 1 else ''} {shape}"
    flax_method, torch_method = ("max", "amax") if kind == "max" else ("mean", "mean")
    return Case(
        name,
        shape,
        lambda x: jp(x, num_spatial_dims=n),
        lambda x: getattr(x, flax_method)(axis=_spatial(x)),
        lambda t: getattr(t, torch_method)(dim=_torch_spatial(t)),
    )


def adaptive_case(kind, shape, out, label):
    """Adaptive max/avg to ``out`` bins per spatial axis; PyTorch's adaptive pools (flax has none)."""
    n = len(shape) - 2
    jp = {"max": jaxpool.adaptive_max_pool, "avg": jaxpool.adaptive_avg_pool}[kind]
    tf = getattr(F, f"adaptive_{kind}_pool{n}d")
    name = f"adaptive {kind}{' 1-D' if n == 1 else ''} {shape[1]}->{out}{' ' + label if label else ''} {shape}"
    return Case(name, shape, lambda x: jp(x, (out,) * n), None, lambda t: tf(t, out))


def unpool_case(shape, k, s, p=0, window=True):
    """max_pool with indices then max_unpool (PyTorch's takes the window; jaxpool's optionally)."""
    n = len(shape) - 2
    win, strides = (k,) * n, (s,) * n
    given = dict(window_shape=win, strides=strides, padding=p) if window else {}
    name = f"max_unpool round trip {'x'.join([str(k)] * n)}/{s}" + (f" p{p}" if p else "") + ("" if window else " no window")
    tp, tu = getattr(F, f"max_pool{n}d"), getattr(F, f"max_unpool{n}d")
    return Case(
        f"{name} {shape}",
        shape,
        lambda x: jaxpool.max_unpool(*jaxpool.max_pool(x, win, strides, p, return_indices=True), x.shape[1:-1], **given),
        None,
        lambda t: tu(*tp(t, k, s, p, return_indices=True), k, s, p, output_size=t.shape[2:]),
    )


def _spatial(x):
    return tuple(range(1, x.ndim - 1))


def _torch_spatial(t):
    return tuple(range(2, t.ndim))


def _spp_torch(t):
    return torch.cat([F.adaptive_max_pool2d(t, level).flatten(1) for level in (1, 2, 4)], 1)


CASES = [
    windowed("max", (32, 56, 56, 64), 2, 2),
    windowed("max", (32, 56, 56, 64), 3, 2, 1),
    windowed("max", (8, 56, 56, 64), 3, 1, 1),
    windowed("max", (8, 20, 20, 256), 5, 1, 2),
    windowed("max", (2, 64, 64, 8), 15, 1),
    windowed("max", (2, 64, 64, 8), 31, 1),
    windowed("max", (8, 32, 32, 64), 9, 1, 4),  # YOLO's SPP: 5, 9 and 13 at stride 1, "same" padding
    windowed("max", (8, 32, 32, 64), 13, 1, 6),
    windowed("max", (2, 64, 64, 8), 15, 1, 7),
    windowed("max", (2, 16, 32, 32, 8), 9, 1, 4),  # a 3-D "same" window of 729 taps: one 9-tap fold per axis
    windowed("max", (2, 128, 128, 8), 63, 1, 31),  # axes longer than CHAINED_TAPS: the doubling scheme
    windowed("max", (32, 56, 56, 64), 3, 2, 1, "bfloat16"),
    windowed("max", (32, 55, 55, 64), 3, 2),  # odd sizes (AlexNet's 55, Inception's 147/73/35)
    windowed("max", (32, 57, 57, 64), 3, 2, 1),
    windowed("avg", (32, 56, 56, 64), 2, 2),
    windowed("avg", (32, 56, 56, 64), 3, 2, 1),
    windowed("avg", (2, 64, 64, 8), 15, 1),
    windowed("avg", (32, 56, 56, 64), 3, 2, 1, "bfloat16"),
    windowed("avg", (32, 57, 57, 64), 3, 2, 1),
    windowed("avg", (8, 56, 56, 64), 3, 1, 1),
    windowed("avg", (8, 20, 20, 256), 5, 1, 2),
    windowed("max", (32, 56, 56, 64), 5, 3, 1),  # strided and padded: taps read the padding per tap
    windowed("avg", (32, 56, 56, 64), 5, 3, 1),
    windowed("avg", (32, 56, 56, 64), 5, 2, 2),
    windowed("max", (32, 56, 56, 64), 5, 2, 2),  # a joint 25-tap phase-view fold was 14x PyTorch
    windowed("max", (32, 57, 57, 64), 2, 2),  # odd size, a body alone
    windowed("avg", (32, 55, 55, 64), 3, 2),
    windowed("max", (32, 4096, 64), 3, 2, 1),
    windowed("avg", (32, 4096, 64), 9, 1, 4),
    windowed("max", (4, 16, 32, 32, 32), 2, 2),
    windowed("avg", (4, 16, 32, 32, 32), 3, 2, 1),
    windowed("max", (4, 16, 32, 32, 32), 3, 2, 1),  # a 3-D ResNet stem's pool: an (H, W) pass, then D
    windowed("max", (32, 56, 56, 64), 4, 2, 1),  # chained 4-tap passes whose derivative routes blocks
    windowed("max", (32, 56, 56, 64), 3, 3, 1),  # windows that never overlap, padded: one select per window
    windowed("max", (32, 56, 56, 64), 2, 2, 1),
    windowed("max", (32, 28, 28, 192), 3, 1, 1),  # Inception's 3x3/1 pool: chained passes, 19 MB input
    windowed("max", (4, 32, 64, 64, 32), 3, 2, 1),  # a larger 3-D volume: 67 MB input
    windowed("max", (8, 16, 56, 56, 16), 3, 2, 1),  # video clips, 16 channels
    global_case("max", (32, 14, 14, 512)),
    global_case("avg", (32, 14, 14, 512)),
    global_case("max", (2, 256, 256, 16)),
    global_case("max", (1, 512, 512, 4)),
    global_case("avg", (1, 512, 512, 4)),
    global_case("max", (1, 100000, 4)),
    global_case("avg", (1, 100000, 4)),
    adaptive_case("max", (32, 50, 50, 64), 7, "uneven"),
    adaptive_case("avg", (32, 50, 50, 64), 7, "uneven"),
    adaptive_case("avg", (32, 56, 56, 64), 7, "even"),
    adaptive_case("max", (1, 512, 512, 4), 7, "uneven"),
    adaptive_case("avg", (1, 100000, 4), 7, ""),
    adaptive_case("max", (64, 13, 13, 256), 6, "3 every 2"),  # SPP-net's 6-bin level on conv5: an odd-size pool
    adaptive_case("max", (64, 13, 13, 256), 5, "binned"),  # uneven bins: windows of q + r every q, masked
    adaptive_case("max", (16, 28, 28, 64), 11, "binned"),
    adaptive_case("max", (32, 40, 40, 64), 6, "binned"),
    adaptive_case("max", (8, 100, 100, 64), 7, "binned"),
    adaptive_case("avg", (32, 20, 20, 64), 7, "short bins"),
    adaptive_case("avg", (32, 40, 40, 64), 6, "binned"),
    adaptive_case("avg", (32, 56, 56, 64), 5, "12 every 11"),  # a regular pool whose blocks are not a power of two
    # uneven bins no 16-tap window covers: long (a core of 14 every 15 and fringes), short (two lengths, picked)
    adaptive_case("max", (16, 62, 62, 64), 4, "long bins"),
    adaptive_case("avg", (16, 62, 62, 64), 4, "long bins"),
    adaptive_case("max", (8, 90, 90, 64), 13, "short bins"),
    adaptive_case("avg", (8, 90, 90, 64), 13, "short bins"),
    adaptive_case("max", (16, 64, 64, 32), 40, "bins of 2-3"),
    adaptive_case("avg", (16, 64, 64, 32), 40, "bins of 2-3"),
    adaptive_case("avg", (64, 13, 13, 256), 5, "short bins"),
    adaptive_case("avg", (32, 50, 50, 64), 30, "bins of 2-3"),  # 20 MB: the gradient is a fresh buffer per call
    # a padded "blocks" pool (20 every 19, padded by 1): its blocks folded from the unpadded input
    adaptive_case("max", (32, 56, 56, 64), 3, "padded blocks"),
    adaptive_case("max", (4, 100000, 4), 7, "long bins"),
    # long blocks (44 every 43, padded by 1) and long cores (69 of every 71, fringes of 2): chunks
    adaptive_case("max", (8, 300, 300, 16), 7, "long padded blocks"),
    adaptive_case("max", (8, 500, 500, 8), 7, "long cores"),
    Case("SPP (1, 2, 4) max (32, 13, 13, 256)", (32, 13, 13, 256), lambda x: jaxpool.spatial_pyramid_pool(x), None, _spp_torch),
    Case(
        "lp p=2 3x3/2 (32, 56, 56, 64)",
        (32, 56, 56, 64),
        lambda x: jaxpool.lp_pool(x, 2.0, (3, 3), 2),
        None,
        lambda t: F.lp_pool2d(t, 2.0, 3, 2),
    ),
    Case(
        "stochastic 3x3/2 p1 (32, 56, 56, 64)",
        (32, 56, 56, 64),
        lambda x: jaxpool.stochastic_pool(jnp.abs(x), (3, 3), 2, 1, key=jax.random.key(0)),
    ),
    unpool_case((8, 112, 112, 64), 2, 2),  # SegNet's encoder-decoder
    unpool_case((8, 112, 112, 64), 2, 2, window=False),
    unpool_case((32, 56, 56, 64), 3, 2, 1),
]

WINDOW_SIZES = (2, 3, 5, 9, 15, 31, 63)


def _jax_fwd_bwd(fn, x, ct):
    def fwd_bwd(x, ct):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(ct)[0]

    return jax.jit(fwd_bwd)


def compile_seconds(fn, x, ct) -> float:
    return compiled_fwd_bwd(fn, x, ct)[0]


def compiled_fwd_bwd(fn, x, ct):
    """(trace + lower + compile seconds with cleared caches, the compiled forward+backward)."""
    jax.clear_caches()
    start = time.perf_counter()
    compiled = _jax_fwd_bwd(fn, x, ct).lower(x, ct).compile()
    return time.perf_counter() - start, compiled


def _calls(thunk, calls: int, sync):
    """``calls`` back-to-back calls of ``thunk`` and one ``sync`` of the last result (GPU timing)."""

    def run():
        for _ in range(calls):
            out = thunk()
        return sync(out)

    return run


def prepare(case: Case, rng, gpu: bool = False, calls: int = 1, batch_scale: int = 1):
    """Forward+backward thunks of jaxpool, flax and PyTorch for ``case``, and jaxpool's and flax's
    compile seconds. On a GPU each thunk runs ``calls`` asynchronous calls, then synchronises, the
    case's batch is multiplied by ``batch_scale`` (the table's shapes are launch-bound there), and
    the inputs are drawn on the device and shared with PyTorch by DLPack (no host copies)."""
    shape, dtype = (case.shape[0] * batch_scale, *case.shape[1:]), jnp.dtype(case.dtype)
    if gpu:
        keys = jax.random.split(jax.random.key(int(rng.integers(2**31))))
        x = jax.random.normal(keys[0], shape, jnp.float32).astype(dtype)
        ct = jax.random.normal(keys[1], jax.eval_shape(case.jaxpool, x).shape, jnp.float32).astype(dtype)
    else:
        x = jnp.asarray(rng.standard_normal(shape, dtype=np.float32), dtype)
        ct = jnp.asarray(rng.standard_normal(jax.eval_shape(case.jaxpool, x).shape, dtype=np.float32), dtype)
    thunks, compile_s, fwd_bwd = {}, {}, {}
    for name, fn in (("jaxpool", case.jaxpool), ("flax", case.flax)):
        if fn is None:
            continue
        if gpu:  # the compiled executable itself: a second compile costs seconds per case there
            compile_s[name], f = compiled_fwd_bwd(fn, x, ct)
            thunks[name] = _calls(lambda f=f: f(x, ct), calls, jax.block_until_ready)
        else:
            compile_s[name] = compile_seconds(fn, x, ct)
            f = _jax_fwd_bwd(fn, x, ct)
            thunks[name] = lambda f=f: jax.block_until_ready(f(x, ct))
        fwd_bwd[name] = f
    if case.torch is not None and (torch.cuda.is_available() or not gpu):
        xt = _torch_input(x, gpu, case.dtype).requires_grad_(True)
        ctt = _torch_input(ct, gpu, case.dtype) if ct.ndim == x.ndim else _torch_input(ct, gpu, case.dtype, layout=False)

        def torch_fwd_bwd():
            xt.grad = None
            out = case.torch(xt)
            out.backward(ctt.reshape(out.shape) if ctt.shape != out.shape else ctt)
            return xt.grad

        thunks["torch"] = _calls(torch_fwd_bwd, calls, lambda out: torch.cuda.synchronize()) if gpu else torch_fwd_bwd
        # jaxpool's value from its compiled forward+backward: called eagerly, every op would be
        # compiled on its own (seconds per case on a GPU)
        _warn_if_torch_differs(case, fwd_bwd["jaxpool"](x, ct)[0], case.torch(xt).detach().float().cpu().numpy())
    for thunk in thunks.values():
        thunk()
    return thunks, compile_s


def _torch_input(a, gpu: bool, dtype: str, layout: bool = True):
    """PyTorch's copy of channels-last ``a`` as (N, C, *spatial) in the channels_last memory format
    (``layout``; else as it is): from host memory on the CPU, by DLPack on a GPU (a channels-last
    array moved to channels-first is already channels_last-strided; 1-D is made contiguous, as
    :func:`bench_core.torch_channels_last` does)."""
    if not gpu:
        return (
            bench_core.torch_channels_last(np.asarray(a.astype(jnp.float32)), dtype)
            if layout
            else torch.from_numpy(np.asarray(a.astype(jnp.float32))).to(getattr(torch, dtype))
        )
    t = torch.from_dlpack(a)
    if not layout:
        return t.clone()
    t = t.movedim(-1, 1)
    return t.contiguous() if t.ndim == 3 else t.clone()


def _warn_if_torch_differs(case: Case, y, reference: np.ndarray) -> None:
    got = np.asarray(y.astype(jnp.float32))
    if reference.ndim == got.ndim and reference.ndim > 2 and reference.shape != got.shape:
        reference = np.moveaxis(reference, 1, -1)
    tol = 2e-2 if case.dtype != "float32" else 1e-4
    if reference.ndim > 2 and reference.shape == got.shape and not np.allclose(reference, got, rtol=tol, atol=tol):
        print(f"WARNING {case.name}: jaxpool and torch differ by {np.max(np.abs(reference - got)):.3g}", file=sys.stderr)


def window_table(rng) -> list[list[str]]:
    rows = []
    x = jnp.asarray(rng.standard_normal((2, 128, 128, 8), dtype=np.float32))
    for k in WINDOW_SIZES:
        row = [f"{k}x{k}/1"]
        for fn in (
            lambda v, k=k: jaxpool.max_pool(v, (k, k), 1),
            lambda v, k=k: nn.max_pool(v, (k, k), (1, 1)),
            lambda v, k=k: jaxpool.avg_pool(v, (k, k), 1),
            lambda v, k=k: nn.avg_pool(v, (k, k), (1, 1)),
        ):
            ct = jnp.ones(jax.eval_shape(fn, x).shape)
            row.append(f"{compile_seconds(fn, x, ct):.2f}")
        rows.append(row)
    return rows


def gpu_info(calls: int, batch_scale: int) -> str:
    cuda = f"PyTorch on CUDA {torch.version.cuda}" if torch.cuda.is_available() else "PyTorch without CUDA (no column)"
    sample = f"a sample is {calls} back-to-back calls, one synchronisation; every batch x{batch_scale}"
    return f"; GPU {jax.devices()[0].device_kind} ({cuda}); {sample}"


NOTES = "## Reading this run"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 rounds, 1 call per sample")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--only", nargs="*", default=(), help="run the cases whose name contains one of these")
    ap.add_argument("--out")
    ap.add_argument("--heap", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="JAX's GPU and PyTorch's CUDA (see above)")
    ap.add_argument("--calls", type=int, default=10, help="with --gpu: calls per sample")
    ap.add_argument("--batch-scale", type=int, default=1, help="with --gpu: multiply every case's batch")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N cases (resume a cut-off run)")
    args = ap.parse_args()
    if args.gpu and jax.default_backend() != "gpu":
        ap.error(f"--gpu: JAX's default backend is {jax.default_backend()!r}, not 'gpu'")
    if args.heap and os.environ.get("GLIBC_TUNABLES") != bench_core.HEAP_TUNABLES:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": bench_core.HEAP_TUNABLES})
    here = os.path.dirname(os.path.abspath(__file__))
    args.out = args.out or os.path.join(here, "RESULTS_breadth_heap.md" if args.heap else "RESULTS_breadth.md")
    rounds = args.rounds or (5 if args.quick else 15)
    repeat = 1 if args.quick else 2
    rng = np.random.default_rng(0)
    cases = [c for c in CASES[args.skip :] if not args.only or any(s in c.name for s in args.only)]
    load = os.getloadavg()[0]
    rows = []
    for case in cases:
        print(f"{case.name} ...", file=sys.stderr, flush=True)
        try:
            thunks, compile_s = prepare(case, rng, args.gpu, args.calls, args.batch_scale)
        except Exception as e:  # noqa: BLE001 -- one failing case (a new JAX on a GPU) must not lose the table
            rows.append([case.name, f"error: {type(e).__name__}: {str(e)[:80]}", *["–"] * 6])
            print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
            continue
        times = bench_core.run_rounds({case.name: thunks}, rounds, repeat)[case.name]
        times = {n: t / (args.calls if args.gpu else 1) for n, t in times.items()}
        med = {n: np.median(t) * 1e3 for n, t in times.items()}
        ms = "{:.3f}" if args.gpu else "{:.2f}"
        vs = {peer: bench_core.ratio(times["jaxpool"], times.get(peer)) for peer in ("torch", "flax")}
        rows.append(
            [
                case.name,
                f"{compile_s['jaxpool']:.2f}",
                f"{compile_s['flax']:.2f}" if "flax" in compile_s else "–",
                ms.format(med["jaxpool"]),
                ms.format(med["flax"]) if "flax" in med else "–",
                ms.format(med["torch"]) if "torch" in med else "–",
                bench_core.fmt_ratio(vs["torch"]),
                bench_core.fmt_ratio(vs["flax"]),
            ]
        )
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    header = ["case", "compile jaxpool s", "compile flax s", "jaxpool ms", "flax ms", "torch ms", "jaxpool/torch", "jaxpool/flax"]
    text = [
        "# Breadth benchmark: forward+backward under jit",
        "",
        f"{datetime.date.today()} — {bench_core.machine_info()}" + (gpu_info(args.calls, args.batch_scale) if args.gpu else ""),
        f"Load average at start {load:.2f}, at end {os.getloadavg()[0]:.2f}; {rounds} interleaved rounds, best of {repeat}.",
        "Times are medians; ratios are medians of per-round ratios [quartiles]. Compile = trace + lower + compile",
        "of jit(vjp) with cleared caches. `–`: the library has no such op.",
        "",
        *bench_core.md_table(header, rows),
    ]
    if not args.only and not args.skip:
        text += [
            "",
            "## Compile time (s) against window size: k x k, stride 1, (2, 128, 128, 8), forward+backward",
            "",
            *bench_core.md_table(["window", "jaxpool max", "flax max", "jaxpool avg", "flax avg"], window_table(rng)),
        ]
    text = "\n".join(text) + "\n"
    print(text)
    notes = ""  # the hand-written reading of the previous run is kept, to be updated by hand
    if os.path.exists(args.out):
        with open(args.out) as f:
            old = f.read()
        notes = old[old.index(NOTES) :] if NOTES in old else ""
    with open(args.out, "w") as f:
        f.write(text + ("\n" + notes if notes else ""))


if __name__ == "__main__":
    main()
