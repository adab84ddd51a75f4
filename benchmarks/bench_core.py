"""Benchmark jaxpool's max_pool / avg_pool against flax.linen and PyTorch (CPU), and jaxpool's
stochastic_pool (training, with a key, and deterministic=True) on the same cases (jaxpool only).

Everything runs in one process; implementations are timed round-robin (interleaved,
in shuffled order) and compared through per-round ratios, which is robust on a
shared, noisy machine.

    python benchmarks/bench_core.py [--quick] [--rounds N] [--repeat N] [--out FILE] [--heap]

--quick = --rounds 5 --repeat 1 (about 1 min); default 20 rounds, best of 2 calls
per sample (2-4 min on the shared 2-core machine). --out defaults to benchmarks/RESULTS.md.

--heap re-runs the script with glibc's malloc told to keep large blocks on the heap
(GLIBC_TUNABLES=HEAP_TUNABLES below). With glibc's default (mmap for blocks over 32 MB), every
call of a jitted XLA:CPU function maps its large output buffers afresh and page-faults them in
(transparent huge pages are madvise-only here): 10-15 ms on a 100 MB gradient, which dwarfs the
pooling itself. PyTorch's numbers barely move; XLA's (jaxpool and flax alike) do.
"""

from __future__ import annotations

import os

# libgomp's default spin-waiting of idle OpenMP workers makes 2-thread PyTorch about
# 3x slower on a busy 2-core machine (the spinning worker competes with the main
# thread and with the neighbours); it must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import gc
import platform
import random
import shlex
import sys
import time
from dataclasses import dataclass

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
try:  # the repository's own jaxpool
    import jaxpool
except Exception as e:  # noqa: BLE001 -- the library may not exist (or work) yet
    jaxpool, JAXPOOL_ERROR = None, f"{type(e).__name__}: {e}"
else:
    JAXPOOL_ERROR = None

HEAP_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"
TORCH_THREADS = 2
torch.set_num_threads(TORCH_THREADS)


@dataclass(frozen=True)
class Config:
    name: str
    shape: tuple  # NHWC
    k: int
    s: int
    p: int  # symmetric padding (PyTorch-style), 0 = "VALID"


CONFIGS = (
    Config("32x56x56x64 2x2/2", (32, 56, 56, 64), 2, 2, 0),
    Config("32x56x56x64 3x3/2 p1", (32, 56, 56, 64), 3, 2, 1),
    Config("64x32x32x96 2x2/2", (64, 32, 32, 96), 2, 2, 0),
)
OPS = {  # row name -> (jaxpool function, its keyword arguments); flax and torch have max_pool and avg_pool only
    "max_pool": ("max_pool", {}),
    "stochastic_pool": ("stochastic_pool", {"key": jax.random.key(0)}),  # training: one sample per window
    "stochastic_pool[det]": ("stochastic_pool", {"deterministic": True}),  # inference: the expectation
    "avg_pool": ("avg_pool", {}),
}
DTYPES = ("float32", "bfloat16")
MODES = ("fwd", "fwd+bwd")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# --- pooling functions: (op, cfg) -> callable, or None if unsupported ---------------


def jaxpool_pool(backward=None):
    def make(op, c):
        if backward is not None and op != "max_pool":
            return None
        name, kw = OPS[op]
        kw = kw if backward is None else {**kw, "backward": backward}
        fn, pad = getattr(jaxpool, name), ((c.p, c.p) if c.p else "VALID")
        return lambda x: fn(x, (c.k, c.k), (c.s, c.s), pad, **kw)

    return make


def flax_pool(op, c):
    if op not in ("max_pool", "avg_pool"):
        return None
    pad = ((c.p, c.p), (c.p, c.p)) if c.p else "VALID"
    kw = {"count_include_pad": True} if op == "avg_pool" else {}
    fn = getattr(nn, op)
    return lambda x: fn(x, (c.k, c.k), strides=(c.s, c.s), padding=pad, **kw)


def torch_pool(op, c):
    if op == "max_pool":
        return lambda x: F.max_pool2d(x, c.k, c.s, c.p)
    if op == "avg_pool":
        return lambda x: F.avg_pool2d(x, c.k, c.s, c.p, count_include_pad=True)
    return None


# --- benchmark thunks: each returns its (blocked) outputs as a tuple ----------------


def jax_thunks(pool, x, ct, dtype):
    x, ct = jnp.asarray(x, dtype), jnp.asarray(ct, dtype)

    def fwd_bwd(x, ct):  # returns y too, so the forward can't be dead-code eliminated
        y, vjp_fn = jax.vjp(pool, x)
        return y, vjp_fn(ct)[0]

    fwd, fb = jax.jit(pool), jax.jit(fwd_bwd)  # ct is an argument: no constant folding
    return {
        "fwd": lambda: (jax.block_until_ready(fwd(x)),),
        "fwd+bwd": lambda: jax.block_until_ready(fb(x, ct)),
    }


def torch_channels_last(a: np.ndarray, dtype: str = "float32"):
    """A copy of a channels-last array (N, *spatial, C) as PyTorch's (N, C, *spatial) tensor of ``dtype``,
    in the channels_last (3-D: channels_last_3d) memory format PyTorch's CPU pooling is fastest in."""
    t = torch.from_numpy(np.array(a)).movedim(-1, 1).to(getattr(torch, dtype))
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.ndim, torch.contiguous_format)
    return t.contiguous(memory_format=fmt)


def torch_thunks(pool, x, ct, dtype):
    x, ct = torch_channels_last(x, dtype), torch_channels_last(ct, dtype)
    xg = x.clone().requires_grad_(True)

    def fwd_bwd():
        xg.grad = None
        y = pool(xg)
        y.backward(ct)
        return y.detach(), xg.grad

    return {"fwd": lambda: (pool(x),), "fwd+bwd": fwd_bwd}


IMPLS = {  # name -> (pool factory, thunk builder); the first one is the reference
    "torch": (torch_pool, torch_thunks),
    "flax": (flax_pool, jax_thunks),
    "jaxpool": (jaxpool_pool(), jax_thunks),
    "jaxpool[xla]": (jaxpool_pool("xla"), jax_thunks),
}
JAX_IMPLS = ("flax", "jaxpool", "jaxpool[xla]")


def to_nhwc_f32(a):
    if isinstance(a, torch.Tensor):
        return a.detach().float().permute(0, 2, 3, 1).numpy()
    return np.asarray(jnp.asarray(a, jnp.float32))


def out_shape(c):
    n, h, w, ch = c.shape
    h, w = ((d + 2 * c.p - c.k) // c.s + 1 for d in (h, w))
    return (n, h, w, ch)


# --- setup: build, compile/warm up, sanity-check against the torch outputs ---------


def make_inputs():
    rng = np.random.default_rng(0)
    return {
        c.name: (
            rng.standard_normal(c.shape, np.float32),
            rng.standard_normal(out_shape(c), np.float32),
        )
        for c in CONFIGS
    }


def note(notes, message, case):
    """notes: {message: [cases]}, so that a repeated failure is reported once."""
    notes.setdefault(message, []).append(case)


def setup(inputs, notes):
    """Builds and warms up (compiles) every thunk and checks its outputs against the
    first implementation's. Returns {cell: {impl: thunk}} with
    cell = (op, cfg, dtype, mode), and {(op, cfg, dtype): {impl: forward output}}."""
    thunks, fwd_out = {}, {}
    for c in CONFIGS:
        for op in OPS:
            for dtype in DTYPES:
                refs = {}  # mode -> (impl, outputs)
                for name, (make_pool, make_thunks) in IMPLS.items():
                    if name.startswith("jaxpool") and jaxpool is None:
                        continue
                    try:
                        pool = make_pool(op, c)
                        ths = pool and make_thunks(pool, *inputs[c.name], dtype)
                    except Exception as e:  # noqa: BLE001 -- report and go on
                        note(notes, f"{name} skipped: {e!r}", f"{op} {c.name} {dtype}")
                        continue
                    for m, thunk in (ths or {}).items():
                        case = f"{name} {op} {c.name} {dtype} {m}"
                        try:
                            outs = [to_nhwc_f32(o) for o in thunk()]  # compiles
                        except Exception as e:  # noqa: BLE001 -- report and go on
                            note(notes, f"{name} skipped: {e!r}", case)
                            continue
                        thunks.setdefault((op, c.name, dtype, m), {})[name] = thunk
                        if m == "fwd":
                            fwd_out.setdefault((op, c.name, dtype), {})[name] = outs[0]
                        check(case, outs, refs.setdefault(m, (name, outs)), dtype, notes)
    return thunks, fwd_out


def check(case, outs, ref, dtype, notes):
    ref_name, ref_outs = ref
    tol = 1e-5 if dtype == "float32" else 0.1  # bf16 loose: flax sums avg_pool in bf16
    for label, a, b in zip(("y", "dx"), outs, ref_outs):
        err = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
        if not err <= tol:
            note(
                notes,
                f"MISMATCH vs {ref_name}: max|diff| = {err:.3g}",
                f"{case} {label}",
            )


# --- timing -------------------------------------------------------------------------


def best_of(thunk, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        thunk()
        best = min(best, time.perf_counter() - t0)
    return best


def run_rounds(thunks, rounds, repeat):
    """Each round times every implementation of every cell once (best of `repeat`
    back-to-back calls), in a shuffled order."""
    times = {cell: {name: [] for name in impls} for cell, impls in thunks.items()}
    order = random.Random(0)
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            for cell, impls in thunks.items():
                names = list(impls)
                order.shuffle(names)
                for name in names:
                    times[cell][name].append(best_of(impls[name], repeat))
    finally:
        gc.enable()
    return {cell: {n: np.array(t) for n, t in d.items()} for cell, d in times.items()}


def quartiles(a):
    return np.percentile(a, [25, 50, 75])


def ratio(num, den):
    """(q25, median, q75) of per-round ratios num/den, or None."""
    return None if num is None or den is None else quartiles(num / den)


def fmt_ms(t):
    if t is None:
        return "–"
    q1, med, q3 = quartiles(t) * 1e3
    return f"{med:.2f} ({q3 - q1:.2f})"


def fmt_ratio(r):
    return "–" if r is None else f"{r[1]:.2f} [{r[0]:.2f}–{r[2]:.2f}]"


# --- residual memory and bf16 accuracy ----------------------------------------------


def residual_fraction(pool, x):
    _, vjp_fn = jax.vjp(pool, x)
    leaves = jax.tree_util.tree_leaves(vjp_fn)
    arrays = {id(a): a for a in leaves if isinstance(a, (jax.Array, np.ndarray))}
    return sum(a.nbytes for a in arrays.values()) / x.nbytes


def residuals(inputs, notes):
    res = {}
    for c in CONFIGS:
        for dtype in DTYPES:
            x = jnp.asarray(inputs[c.name][0], dtype)
            for name in JAX_IMPLS:
                if name.startswith("jaxpool") and jaxpool is None:
                    continue
                try:
                    res[(c.name, dtype, name)] = residual_fraction(IMPLS[name][0]("max_pool", c), x)
                except Exception as e:  # noqa: BLE001 -- report and go on
                    note(notes, f"residual of {name} failed: {e!r}", f"{c.name} {dtype}")
    return res


def bf16_avg_errors(inputs, fwd_out):
    """max |avg_pool(x_bf16) - avg_pool in f32 of the same bf16-rounded input|."""
    errs = {}
    for c in CONFIGS:
        xb = jnp.asarray(inputs[c.name][0], jnp.bfloat16).astype(jnp.float32)
        ref = np.asarray(jax.jit(flax_pool("avg_pool", c))(xb))
        rounded = np.asarray(jnp.asarray(ref, jnp.bfloat16).astype(jnp.float32))
        errs[(c.name, "f32→bf16 rounding")] = float(np.max(np.abs(rounded - ref)))
        for name, y in fwd_out.get(("avg_pool", c.name, "bfloat16"), {}).items():
            errs[(c.name, name)] = float(np.max(np.abs(y - ref)))
    return errs


# --- report -------------------------------------------------------------------------


def md_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return [line(header), rule, *map(line, rows), ""]


def verdict(r, thr):
    """r: (q25, median, q75). Verdict on the median; flag if the IQR straddles thr."""
    v = "met" if r[1] <= thr else "NOT met"
    return v + (" (IQR straddles)" if r[0] <= thr <= r[2] else "")


TARGETS = (  # label, op, configs it applies to, denominator, threshold (fwd+bwd)
    ("max fwd+bwd jaxpool/torch", "max_pool", lambda c: True, "torch", 0.7),
    ("max fwd+bwd jaxpool/flax", "max_pool", lambda c: True, "flax", 0.1),
    ("avg fwd+bwd jaxpool/torch", "avg_pool", lambda c: c.k == 3, "torch", 1.0),
)


def targets(times, res):
    rows = []

    def add(target, case, r, thr):
        if r is not None:
            rows.append((target, case, fmt_ratio(r), f"≤ {thr}", verdict(r, thr)))

    for label, op, applies, den, thr in TARGETS:
        for c in filter(applies, CONFIGS):
            for dtype in DTYPES:
                t = times.get((op, c.name, dtype, "fwd+bwd"), {})
                tag = "" if dtype == "float32" else " (info)"
                r = ratio(t.get("jaxpool"), t.get(den))
                add(label + tag, f"{c.name} {dtype}", r, thr)
    for op in OPS:
        for c in CONFIGS:
            for m in MODES:
                t16 = times.get((op, c.name, "bfloat16", m), {}).get("jaxpool")
                t32 = times.get((op, c.name, "float32", m), {}).get("jaxpool")
                add("jaxpool bf16/f32 time", f"{op} {c.name} {m}", ratio(t16, t32), 1.0)
    for (cfg, dtype, name), frac in res.items():
        if name == "jaxpool":
            ok = "met" if frac <= 0.25 else "NOT met"
            rows.append(
                (
                    "max VJP residual / x bytes",
                    f"{cfg} {dtype}",
                    f"{frac:.3f}",
                    "≤ 0.25",
                    ok,
                )
            )
    return rows


def machine_info():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"python {platform.python_version()}, jax {jax.__version__} (backend {jax.default_backend()}), "
        f"flax {flax.__version__}, torch {torch.__version__} ({TORCH_THREADS} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), numpy {np.__version__}; "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset: glibc default malloc)')}"
    )


def compilation(notes):
    """How XLA compiled each f32 fwd+bwd, from ``jaxpool.compare`` (one timing round: not for speed)."""
    if jaxpool is None:
        return []
    from jaxpool.compare import Config, compare

    configs = [Config(op, c.shape, (c.k, c.k), (c.s, c.s), c.p, "float32") for c in CONFIGS for op in ("max", "avg")]
    try:
        records = compare(configs, ["jaxpool", "jaxpool[xla]", "flax"], rounds=1, min_sample_ms=0.0)
    except Exception as e:  # noqa: BLE001 -- the report still has its timings
        note(notes, f"compilation section skipped: {type(e).__name__}: {e}", "all")
        return []
    rows = []
    for r in records:
        hlo, mem = r["hlo"]["fwd_bwd"], r["memory"]["fwd_bwd"]
        temp = mem.get("temp_bytes")
        rows.append(
            (
                r["config"]["name"],
                r["implementation"],
                *(hlo[k] for k in ("reduce-window", "select-and-scatter", "scatter", "gather")),
                "–" if temp is None else f"{temp / 2**20:.1f}",
                f"{r['residual_bytes'] / np.prod(r['config']['shape']) / 4:.3f}",
                f"{r['compile_s']['fwd_bwd']:.2f}",
                r["recipients"]["tie"],
                r["recipients"]["nan"],
            )
        )
    header = [
        "config",
        "implementation",
        "reduce-window",
        "select-and-scatter",
        "scatter",
        "gather",
        "temp MiB",
        "residual / x",
        "compile s",
        "grad on tie",
        "grad on NaN",
    ]
    return [
        "## Compilation (from `python -m jaxpool.compare`)",
        "",
        "The compiled f32 forward+backward of each implementation: HLO opcode counts, XLA's",
        "`memory_analysis()` temp bytes, VJP residual bytes over x's bytes, compile time, and which",
        "element receives the gradient in a window of tied maxima / holding a NaN. `python -m",
        "jaxpool.compare --full` gives the same with timings, errors and bf16.",
        "",
        *md_table(header, rows),
    ]


def report(args, times, res, errs, notes, comp=()):
    names = list(IMPLS)
    out = [
        "# jaxpool core benchmark",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {machine_info()}",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- timing: {args.rounds} interleaved rounds (shuffled order)",
        f"- one sample: the best of {args.repeat} back-to-back call(s)",
        f"- run time: {args.elapsed[1]:.0f} s, of which {args.elapsed[0]:.0f} s setup (compiling)",
        f"- 1-min load average at start / end: {args.load[0]:.2f} / {args.load[1]:.2f}",
        f"- jaxpool: {'not importable: ' + JAXPOOL_ERROR if jaxpool is None else jaxpool.__file__}",
        "",
        "## Times and ratios",
        "",
        "Times: median ms over rounds (IQR). Ratios: median [IQR] over rounds of the per-round",
        "ratio. PyTorch uses NCHW tensors in channels_last memory format. fwd+bwd returns both",
        "y and dx (JAX: jit of jax.vjp with the cotangent as an argument; torch: y.backward(ct)).",
        "",
    ]
    header = [
        "op",
        "config",
        "dtype",
        "mode",
        *(f"{n} ms" for n in names),
        "jaxpool/torch",
        "jaxpool/flax",
        "jaxpool[xla]/torch",
    ]
    rows = []
    for (op, cfg, dtype, m), t in times.items():
        rows.append(
            (
                op,
                cfg,
                dtype,
                m,
                *(fmt_ms(t.get(n)) for n in names),
                fmt_ratio(ratio(t.get("jaxpool"), t.get("torch"))),
                fmt_ratio(ratio(t.get("jaxpool"), t.get("flax"))),
                fmt_ratio(ratio(t.get("jaxpool[xla]"), t.get("torch"))),
            )
        )
    out += md_table(header, rows)

    out += ["## bf16 / f32 time (per-round ratio, median [IQR])", ""]
    rows = []
    for (op, cfg, dtype, m), t in times.items():
        if dtype == "bfloat16":
            t32 = times.get((op, cfg, "float32", m), {})
            rows.append((op, cfg, m, *(fmt_ratio(ratio(t.get(n), t32.get(n))) for n in names)))
    out += md_table(["op", "config", "mode", *names], rows)

    out += [
        "## max_pool VJP residual memory (bytes of vjp_fn's array leaves / x.nbytes)",
        "",
    ]
    jnames = [n for n in JAX_IMPLS if any(k[2] == n for k in res)]
    rows = [
        (
            c.name,
            d,
            *(f"{res[(c.name, d, n)]:.3f}" if (c.name, d, n) in res else "–" for n in jnames),
        )
        for c in CONFIGS
        for d in DTYPES
    ]
    out += md_table(["config", "dtype", *jnames], rows)

    out += [
        "## bf16 avg_pool forward: max abs error vs f32 computation on the same input",
        "",
        "Input ~ N(0, 1). Last column: error of just rounding the f32 result to bf16.",
        "",
    ]
    enames = [n for n in [*names, "f32→bf16 rounding"] if any(k[1] == n for k in errs)]
    rows = [
        (
            c.name,
            *(f"{errs[(c.name, n)]:.2e}" if (c.name, n) in errs else "–" for n in enames),
        )
        for c in CONFIGS
    ]
    out += md_table(["config", *enames], rows)

    out += [
        "## Targets",
        "",
        'Verdict on the median ratio; "IQR straddles" = within this run\'s noise.',
        "(info) = bf16, reported; the target is for f32.",
        "",
    ]
    rows = targets(times, res)
    out += md_table(["target", "case", "measured", "threshold", "verdict"], rows)
    if not rows:
        out += ["(nothing to evaluate: no jaxpool measurements)", ""]
    out += list(comp)
    if notes:
        out += ["## Notes", ""]
        for message, cases in notes.items():
            more = f" and {len(cases) - 3} more" if len(cases) > 3 else ""
            out.append(f"- {message} ({'; '.join(cases[:3])}{more})")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="--rounds 5 --repeat 1 (~1 min)")
    ap.add_argument("--rounds", type=int, help="timing rounds (default 20)")
    ap.add_argument("--repeat", type=int, help="calls per sample, best taken (default 2)")
    ap.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"),
    )
    ap.add_argument("--heap", action="store_true", help="re-run with GLIBC_TUNABLES=HEAP_TUNABLES (see module doc)")
    args = ap.parse_args()
    if args.heap and os.environ.get("GLIBC_TUNABLES") != HEAP_TUNABLES:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "GLIBC_TUNABLES": HEAP_TUNABLES})
    args.rounds = args.rounds or (5 if args.quick else 20)
    args.repeat = args.repeat or (1 if args.quick else 2)

    start, load_start, notes = time.perf_counter(), os.getloadavg()[0], {}
    if jaxpool is None:
        note(notes, f"jaxpool rows skipped: import failed: {JAXPOOL_ERROR}", "all")
    inputs = make_inputs()
    print("compiling / warming up ...", file=sys.stderr)
    thunks, fwd_out = setup(inputs, notes)
    print(f"timing {args.rounds} rounds ...", file=sys.stderr)
    setup_s = time.perf_counter() - start
    times = run_rounds(thunks, args.rounds, args.repeat)
    res = residuals(inputs, notes)
    errs = bf16_avg_errors(inputs, fwd_out)
    comp = compilation(notes)
    args.elapsed = setup_s, time.perf_counter() - start
    args.load = load_start, os.getloadavg()[0]
    text = report(args, times, res, errs, notes, comp)
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
