"""Compare how pooling implementations compute, compile and perform: ``python -m jaxpool.compare``.

For each configuration (op, NHWC shape, window, strides, padding, dtype) it runs, on whatever
backend JAX has (CPU, GPU, TPU):

* ``jaxpool`` — jaxpool's op with its custom backward (max/min: argmax offsets, no scatter);
* ``jaxpool[xla]`` — jaxpool's max/min with ``backward="xla"`` (``reduce_window``, XLA's autodiff);
* ``flax`` — ``flax.linen.max_pool`` / ``avg_pool`` / ``min_pool`` (strides always explicit);
* ``reduce_window`` — the textbook ``lax.reduce_window`` formulation, differentiated by JAX;
* ``torch`` — ``torch.nn.functional`` on the CPU (channels_last), when PyTorch is installed.

and measures, per implementation:

* numerics — forward and gradient max abs error against a float64 NumPy reference (PyTorch's rule:
  ties to the first element in row-major window order, NaN wins), and which element receives the
  gradient in a window of tied maxima and in a window holding a NaN;
* compilation (JAX only) — compile time (lowering + XLA), the compiled HLO's opcode histogram
  (reduce-window, select-and-scatter, scatter, gather, fusion, all instructions; parsed from the
  instruction lines, not by substring), ``memory_analysis()`` temp / argument / output bytes, and the
  bytes of the arrays ``jax.vjp`` keeps for the backward pass;
* speed — median and IQR per call of the forward and of forward+backward (``jit`` of ``jax.vjp``
  returning ``y`` and ``dx``, the cotangent an argument), implementations interleaved in shuffled
  rounds; ratios to the fastest median.

Usage::

    python -m jaxpool.compare                       # quick ladder of small float32 configs (< 1 min on 2 CPUs)
    python -m jaxpool.compare --full                # benchmark-sized float32 and bfloat16 configs
    python -m jaxpool.compare --op max,avg --shape 32,56,56,64 --window 3,3 --stride 2,2 --padding 1 --dtype bfloat16
    python -m jaxpool.compare --json out.json --plot out.png

JSON (``--json FILE``): a list of records, one per (configuration, implementation)::

    config          {name, op, shape, window, strides, padding: [[lo, hi], ...], padding_spec, dtype, out_shape}
    implementation  "jaxpool" | "jaxpool[xla]" | "flax" | "reduce_window" | "torch"
    framework       "jax" | "torch"
    errors          {forward, gradient}: max abs error vs the float64 reference (null if shapes differ)
    recipients      {tie, nan, nan_forward}: tie in "first" | "last" | "#k" (flat window position) | "split" |
                    "duplicated" | "none" | "non-finite"; nan in "nan" | "best" (the best non-NaN element, placed
                    first, the NaN at the centre) | the same others; nan_forward: whether that window's output is NaN
    hlo             {fwd, fwd_bwd}: {reduce-window, select-and-scatter, scatter, gather, fusion, instructions}
    compile_s       {fwd, fwd_bwd}: seconds
    memory          {fwd, fwd_bwd}: {temp_bytes, argument_bytes, output_bytes} (values null if not reported)
    residual_bytes  bytes of the arrays the VJP keeps
    timings         {fwd, fwd_bwd}: {median_ms, q25_ms, q75_ms, iqr_ms, samples, calls_per_sample}
    ratios          {fwd, fwd_bwd}: median / fastest median in this configuration (fastest = 1.0)
    environment     {backend, device, cpu_count, python, jax, flax, numpy, torch, glibc_mmap_threshold_set, omp_wait_policy}

hlo, compile_s, memory and residual_bytes are null for torch. On CPU, glibc's dynamic mmap threshold
(at most 32 MB) makes XLA:CPU page-fault fresh large output buffers on every call; timings with
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736``
avoid that, and the report says whether it was set.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
from collections.abc import Callable, Iterable

import flax
import jax
import numpy as np
from rich.console import Console

from jaxpool import _compare_jax, _compare_report, _compare_torch
from jaxpool._compare_config import DTYPES, OPS, Config, Prepared, ladder, probe_input, random_inputs, rounded
from jaxpool._compare_numerics import max_abs_error, probe_recipients, reference
from jaxpool._compare_timing import ratios_to_fastest, time_interleaved

__all__ = ["IMPLEMENTATIONS", "Config", "compare", "ladder", "main"]

MODES = ("fwd", "fwd_bwd")


@dataclasses.dataclass(frozen=True)
class Implementation:
    """How to build one implementation's pool function for a config (None: not applicable) and run it."""

    framework: str
    build: Callable[[Config], Callable | None]
    prepare: Callable[..., Prepared]
    unavailable: Callable[[], str | None] = lambda: None


IMPLEMENTATIONS = {
    "jaxpool": Implementation("jax", _compare_jax.jaxpool_pool("argmax"), _compare_jax.prepare),
    "jaxpool[xla]": Implementation("jax", _compare_jax.jaxpool_pool("xla"), _compare_jax.prepare),
    "flax": Implementation("jax", _compare_jax.flax_pool, _compare_jax.prepare),
    "reduce_window": Implementation("jax", _compare_jax.reduce_window_pool, _compare_jax.prepare),
    "torch": Implementation("torch", _compare_torch.torch_pool, _compare_torch.prepare, _compare_torch.unavailable_reason),
}


def environment(with_torch: bool) -> dict:
    """The machine and versions a run measured (``torch`` is imported only if compared)."""
    torch = _compare_torch.load() if with_torch else None
    return {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "glibc_mmap_threshold_set": "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def _available(names: Iterable[str] | None, log: Callable[[str], None]) -> list[str]:
    """The requested implementation names (all by default) that can run here; unknown names raise."""
    names = list(IMPLEMENTATIONS) if names is None else list(names)
    unknown = [n for n in names if n not in IMPLEMENTATIONS]
    if unknown:
        raise ValueError(f"unknown implementation(s) {unknown}; choose from {list(IMPLEMENTATIONS)}")
    reasons = {n: IMPLEMENTATIONS[n].unavailable() for n in names}
    for name, reason in reasons.items():
        if reason:
            log(f"{name} skipped: {reason}")
    return [n for n in names if not reasons[n]]


def _run(impl: Implementation, config: Config, x: np.ndarray, ct: np.ndarray) -> tuple[Prepared, dict] | None:
    """Prepares ``impl`` on ``config`` and classifies its gradient on the tie / NaN probe; None if not applicable."""
    pool = impl.build(config)
    if pool is None:
        return None
    prepared = impl.prepare(pool, config, x, ct)
    probe = config.tie_probe()
    probed = impl.prepare(impl.build(probe), probe, *probe_input(probe), measure=False)
    return prepared, probe_recipients(probe, probed.y, probed.dx)


def _record(config: Config, name: str, run: tuple[Prepared, dict], expected: tuple, timings: dict, ratios: dict) -> dict:
    """One JSON-able record (see the module docstring), environment added by :func:`compare`."""
    prepared, recipients = run
    stats = prepared.stats or {}
    return {
        "config": config.to_json(),
        "implementation": name,
        "framework": IMPLEMENTATIONS[name].framework,
        "errors": {"forward": max_abs_error(prepared.y, expected[0]), "gradient": max_abs_error(prepared.dx, expected[1])},
        "recipients": recipients,
        **{key: stats.get(key) for key in ("hlo", "compile_s", "memory", "residual_bytes")},
        "timings": {m: timings[name, m] for m in MODES},
        "ratios": {m: ratios[m][name] for m in MODES},
    }


def _compare_config(config: Config, names: list[str], rounds: int, min_sample_s: float, seed: int, log) -> list[dict]:
    """All records of one configuration: run every implementation, then time them interleaved."""
    x, ct = random_inputs(config, seed)
    expected = reference(config, rounded(x, config.dtype), rounded(ct, config.dtype))
    runs = {}
    for name in names:
        try:
            run = _run(IMPLEMENTATIONS[name], config, x, ct)
        except Exception as e:  # report and go on: one broken peer must not stop the comparison
            log(f"{name} failed on {config.name}: {type(e).__name__}: {e}")
            continue
        if run is None:
            log(f"{name}: not applicable to {config.name}")
        else:
            runs[name] = run
    if not runs:
        return []
    thunks = {(name, m): prepared.thunks[m] for name, (prepared, _) in runs.items() for m in MODES}
    timings = time_interleaved(thunks, rounds, min_sample_s, seed)
    ratios = {m: ratios_to_fastest({name: timings[name, m]["median_ms"] for name in runs}) for m in MODES}
    return [_record(config, name, run, expected, timings, ratios) for name, run in runs.items()]


def compare(
    configs: Iterable[Config],
    implementations: Iterable[str] | None = None,
    rounds: int = 30,
    *,
    min_sample_ms: float = 5.0,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Runs the comparison and returns one record per (configuration, implementation).

    Args:
      configs: :class:`Config` objects (e.g. :func:`ladder`).
      implementations: names from :data:`IMPLEMENTATIONS` (default: all that can run here).
      rounds: interleaved timing rounds (samples per median).
      min_sample_ms: each sample repeats a call until it lasts at least this long.
      seed: fixes the random inputs and the shuffled timing order.
      log: receives progress and skip messages (default: discarded).

    Returns:
      Records as described in the module docstring (JSON-able).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    log = log or (lambda message: None)
    configs = list(configs)
    names = _available(implementations, log)
    env = environment(with_torch="torch" in names)
    records = []
    for i, config in enumerate(configs, start=1):
        log(f"[{i}/{len(configs)}] {config.name}")
        records += [{**r, "environment": env} for r in _compare_config(config, names, rounds, min_sample_ms / 1e3, seed, log)]
    return records


# --- command line -------------------------------------------------------------------------------------------------

DEFAULTS = {"op": ["max"], "shape": (32, 56, 56, 64), "window": (3, 3), "stride": (2, 2), "padding": 1, "dtype": ["float32"]}


def _int_list(text: str, minimum: int, example: str) -> tuple[int, ...]:
    """Parses comma-separated integers, all ``>= minimum``; argparse reports the error."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as {example}; got {text!r}") from None
    if min(values) < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise argparse.ArgumentTypeError(f"expected {kind} integers, got {text!r}")
    return values


def _positive_ints(text: str) -> tuple[int, ...]:
    """argparse type: '3,3' or '3' -> (3, 3) / (3,), all positive."""
    return _int_list(text, 1, "3,3")


def _padding(text: str) -> str | int | tuple[int, ...]:
    """argparse type: VALID, SAME, an int (all axes) or one non-negative int per axis (symmetric)."""
    if text.upper() in ("VALID", "SAME"):
        return text.upper()
    values = _int_list(text, 0, "1 or 1,0 (or VALID / SAME)")
    return values[0] if len(values) == 1 else values


def _choices(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    """argparse type: a comma-separated list drawn from ``allowed``."""

    def parse(text: str) -> list[str]:
        values = text.split(",")
        bad = [v for v in values if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {list(allowed)}")
        return values

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxpool.compare",
        description="Compare pooling implementations: numerics, compiled HLO, memory and speed. "
        "Without config flags, runs a default ladder; any config flag selects a single configuration "
        "(unset ones default to --op max --shape 32,56,56,64 --window 3,3 --stride 2,2 --padding 1 --dtype float32).",
    )
    p.add_argument("--op", type=_choices(OPS), help="comma-separated ops: max, avg, min")
    p.add_argument("--shape", type=_positive_ints, help="NHWC input shape, e.g. 32,56,56,64")
    p.add_argument("--window", type=_positive_ints, help="window, e.g. 3,3 (one int = every spatial axis)")
    p.add_argument("--stride", type=_positive_ints, help="strides, e.g. 2,2 (one int = every spatial axis)")
    p.add_argument("--padding", type=_padding, help="VALID, SAME, an int or one int per axis (symmetric)")
    p.add_argument("--dtype", type=_choices(DTYPES), help="comma-separated dtypes: float32, bfloat16, float16")
    p.add_argument("--impl", type=_choices(tuple(IMPLEMENTATIONS)), help=f"comma-separated subset of {list(IMPLEMENTATIONS)}")
    p.add_argument("--full", action="store_true", help="the benchmark-sized ladder (float32 and bfloat16; minutes)")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds (default 30)")
    p.add_argument("--min-sample-ms", type=float, default=5.0, help="repeat calls until one sample lasts this long (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the records as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of forward+backward time and temp memory (needs matplotlib)")
    return p


def _broadcast(values: tuple[int, ...], n: int) -> tuple[int, ...]:
    return values * n if len(values) == 1 else values


def _configs(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Config]:
    """The ladder, or the single configuration(s) the config flags describe; bad combinations exit 2."""
    flags = {k: getattr(args, k) for k in DEFAULTS if getattr(args, k) is not None}
    if not flags:
        return ladder(args.full)
    if args.full:
        parser.error("--full selects the default ladder; drop it or the config flags")
    given = {k: flags.get(k, default) for k, default in DEFAULTS.items()}
    n = len(given["shape"]) - 2
    try:
        return [
            Config(op, given["shape"], _broadcast(given["window"], n), _broadcast(given["stride"], n), given["padding"], dtype)
            for op in given["op"]
            for dtype in given["dtype"]
        ]
    except ValueError as e:
        parser.error(str(e))


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad arguments or --plot without matplotlib)."""
    parser = _parser()
    args = parser.parse_args(argv)
    configs = _configs(args, parser)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    console = Console(stderr=True)
    if args.plot and (reason := _compare_report.matplotlib_missing()):
        console.print(f"[red]{reason}[/]")
        return 2
    log = lambda message: console.print(message, style="dim", markup=False, highlight=False)
    records = compare(configs, args.impl, args.rounds, min_sample_ms=args.min_sample_ms, seed=args.seed, log=log)
    _compare_report.print_report(records, Console(width=None if sys.stdout.isatty() else 160))
    if args.json:
        _compare_report.write_json(records, args.json)
    if args.plot:
        _compare_report.plot(records, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
