"""Compare how pooling implementations compute, compile and perform: ``python -m jaxpool.compare``.

For each configuration (op, NHWC shape, window, strides, padding, dtype) it runs, on whatever
backend JAX has (CPU, GPU, TPU), every implementation that has the op (:data:`jaxpool.compare.ops.OPS`
lists, per op, who has it):

* ``jaxpool`` — jaxpool's op with its custom backward (max/min: argmax offsets, no scatter);
* ``jaxpool[xla]`` — jaxpool's max/min with ``backward="xla"`` (``reduce_window``, XLA's autodiff);
* ``flax`` — ``flax.linen.max_pool`` / ``avg_pool`` / ``min_pool`` (strides always explicit);
* ``reduce_window`` — the textbook ``lax.reduce_window`` formulation, differentiated by JAX (max, min,
  avg, lp, soft, gem, avgmax, stochastic's expectation, the global pools);
* ``torch`` — ``torch.nn.functional`` on the CPU (channels_last), when PyTorch is installed (max, min,
  avg, lp, avgmax, fractional with the same samples, adaptive, global, spp, unpool).

Ops: max, min, avg, lp (p = 2), median, soft, gem (p = 3), avgmax, stochastic and mixed (their
``deterministic=True`` expectation), gated and tree (fixed weights), fractional (fixed samples),
blur, maxblur, adaptive_avg / adaptive_max (output size = the window's output size), global_avg /
global_max / global_avgmax (the window is ignored), spp (levels 1, 2, 4) and unpool
(``max_unpool`` of ``max_pool`` with indices).

and measures, per implementation:

* numerics — forward and gradient max abs error against a float64 NumPy reference (:mod:`.numerics`,
  :mod:`.windows`: PyTorch's rule for max/min, ties to the first element in row-major window order,
  NaN wins; null for ops without a reference: fractional, maxblur, spp, unpool), and, for
  windowed ops, which element receives the gradient in a window of tied values and in a window
  holding a NaN;
* compilation (JAX only) — compile time (lowering + XLA), the compiled HLO's opcode histogram
  (reduce-window, select-and-scatter, scatter, gather, sort, fusion, collectives, all instructions;
  parsed from the instruction lines, not by substring), ``memory_analysis()`` temp / argument /
  output bytes, and the bytes of the arrays ``jax.vjp`` keeps for the backward pass;
* speed — median and IQR per call of the forward and of forward+backward (``jit`` of ``jax.vjp``
  returning ``y`` and ``dx``, the cotangent an argument), implementations interleaved in shuffled
  rounds; ratios to the fastest median.

Usage::

    python -m jaxpool.compare                       # quick ladder of small float32 configs (< 1 min on 2 CPUs)
    python -m jaxpool.compare --full                # benchmark-sized float32 and bfloat16 configs
    python -m jaxpool.compare --op all --shape 8,32,32,32   # every op on one configuration
    python -m jaxpool.compare --op max,avg --shape 32,56,56,64 --window 3,3 --stride 2,2 --padding 1 --dtype bfloat16
    python -m jaxpool.compare --json out.json --plot out.png

JSON (``--json FILE``): a list of records, one per (configuration, implementation)::

    config          {name, op, shape, window, strides, padding: [[lo, hi], ...], padding_spec, dtype, out_shape}
    implementation  "jaxpool" | "jaxpool[xla]" | "flax" | "reduce_window" | "torch"
    framework       "jax" | "torch"
    errors          {forward, gradient}: max abs error vs the float64 reference (null if shapes differ or no reference)
    recipients      {tie, nan, nan_forward} (null for non-windowed ops): tie in "first" | "last" | "#k" (flat window
                    position) | "split" | "duplicated" | "none" | "non-finite"; nan in "nan" | "best" (the best non-NaN
                    element, placed first, the NaN at the centre) | the same others; nan_forward: whether that window's
                    output is NaN
    hlo             {fwd, fwd_bwd}: {reduce-window, select-and-scatter, scatter, gather, sort, fusion, collectives, instructions}
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

Modules: :mod:`.config` (configurations, ladders, inputs), :mod:`.ops` (each op and its peers),
:mod:`.windows` and :mod:`.numerics` (the reference), :mod:`.hlo`, :mod:`.peers_jax`,
:mod:`.peers_torch`, :mod:`.timing`, :mod:`.report` (tables, JSON, plot), :mod:`.cli`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable, Hashable, Iterable

import flax
import jax
import numpy as np

from jaxpool.compare import peers_jax, peers_torch
from jaxpool.compare.config import Config, Prepared, ladder, probe_input, random_inputs, rounded
from jaxpool.compare.numerics import max_abs_error, probe_recipients, reference
from jaxpool.compare.ops import OPS
from jaxpool.compare.timing import ratios_to_fastest, time_interleaved

__all__ = ["IMPLEMENTATIONS", "OPS", "Config", "compare", "ladder", "main"]

MODES = ("fwd", "fwd_bwd")


@dataclasses.dataclass(frozen=True)
class Implementation:
    """How to build one implementation's pool function for a config (None: not applicable) and run it."""

    framework: str
    build: Callable[[Config], Callable | None]
    prepare: Callable[..., Prepared]
    unavailable: Callable[[], str | None] = lambda: None


def _peer(field: str) -> Callable[[Config], Callable | None]:
    """The builder of the op's ``field`` peer (None where that peer lacks the op)."""
    return lambda c: (lambda build: None if build is None else build(c))(getattr(c.spec, field))


IMPLEMENTATIONS = {
    "jaxpool": Implementation("jax", _peer("jaxpool"), peers_jax.prepare),
    "jaxpool[xla]": Implementation("jax", _peer("xla"), peers_jax.prepare),
    "flax": Implementation("jax", _peer("flax"), peers_jax.prepare),
    "reduce_window": Implementation("jax", _peer("reduce_window"), peers_jax.prepare),
    "torch": Implementation("torch", peers_torch.torch_pool, peers_torch.prepare, peers_torch.unavailable_reason),
}


def environment(with_torch: bool) -> dict:
    """The machine and versions a run measured (``torch`` is imported only if compared)."""
    torch = peers_torch.load() if with_torch else None
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


def _run(impl: Implementation, config: Config, x: np.ndarray, ct: np.ndarray) -> tuple[Prepared, dict | None] | None:
    """Prepares ``impl`` on ``config`` and classifies its gradient on the tie / NaN probe; None if not applicable."""
    pool = impl.build(config)
    if pool is None:
        return None
    prepared = impl.prepare(pool, config, x, ct)
    if not config.spec.probed:
        return prepared, None
    probe = config.tie_probe()
    probed = impl.prepare(impl.build(probe), probe, *probe_input(probe), measure=False)
    return prepared, probe_recipients(probe, probed.y, probed.dx)


def _record(config: Config, name: str, run: tuple, expected: tuple | None, timings: dict, ratios: dict) -> dict:
    """One JSON-able record (see the module docstring), environment added by :func:`compare`."""
    prepared, recipients = run
    expected = expected or (None, None)
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
    runs, lacking = {}, []
    for name in names:
        try:
            run = _run(IMPLEMENTATIONS[name], config, x, ct)
        except Exception as e:  # report and go on: one broken peer must not stop the comparison
            log(f"{name} failed on {config.name}: {type(e).__name__}: {e}")
            continue
        if run is None:
            lacking.append(name)
        else:
            runs[name] = run
    if lacking:
        log(f"not applicable to {config.name}: {', '.join(lacking)}")
    if not runs:
        return []
    thunks: dict[Hashable, Callable] = {(name, m): prepared.thunks[m] for name, (prepared, _) in runs.items() for m in MODES}
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


def main(argv: list[str] | None = None) -> int:
    """The command line (:func:`jaxpool.compare.cli.main`); the ``jaxpool-compare`` script."""
    from jaxpool.compare.cli import main as cli_main

    return cli_main(argv)
