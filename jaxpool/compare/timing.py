"""Interleaved wall-clock timing for ``python -m jaxpool.compare``.

Every thunk is warmed up, then given a number of calls per sample so that one sample lasts at least
``min_sample_s`` (tiny problems would otherwise measure the timer). Each round then takes one sample
of every thunk, in a freshly shuffled order, so that drifting machine load (other processes, thermal
state) spreads over all implementations instead of biasing whichever ran last. The garbage collector
is paused while timing.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Hashable

import numpy as np


def _per_call_seconds(thunk: Callable, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        thunk()
    return (time.perf_counter() - start) / calls


def calls_per_sample(thunk: Callable, min_sample_s: float, warmup: int = 2, limit: int = 1000) -> int:
    """Warms ``thunk`` up and returns how many back-to-back calls make a sample of ``min_sample_s``."""
    for _ in range(warmup):
        thunk()
    once = _per_call_seconds(thunk, 1)
    return int(min(limit, max(1, np.ceil(min_sample_s / max(once, 1e-9)))))


def summary(seconds: list[float], calls: int) -> dict:
    """Median and quartiles in milliseconds of per-call times."""
    q25, median, q75 = np.percentile(np.asarray(seconds) * 1e3, [25, 50, 75])
    return {
        "median_ms": float(median),
        "q25_ms": float(q25),
        "q75_ms": float(q75),
        "iqr_ms": float(q75 - q25),
        "samples": len(seconds),
        "calls_per_sample": calls,
    }


def time_interleaved(thunks: dict[Hashable, Callable], rounds: int, min_sample_s: float = 1e-3, seed: int = 0) -> dict:
    """``{key: summary}`` of ``rounds`` shuffled round-robin samples of every thunk."""
    calls = {key: calls_per_sample(thunk, min_sample_s) for key, thunk in thunks.items()}
    samples: dict[Hashable, list[float]] = {key: [] for key in thunks}
    order, shuffle = list(thunks), random.Random(seed).shuffle
    gc.collect()
    gc.disable()
    try:
        for _ in range(rounds):
            shuffle(order)
            for key in order:
                samples[key].append(_per_call_seconds(thunks[key], calls[key]))
    finally:
        gc.enable()
    return {key: summary(samples[key], calls[key]) for key in thunks}


def ratios_to_fastest(medians: dict[Hashable, float]) -> dict[Hashable, float]:
    """Each median divided by the smallest one (so the fastest is exactly 1.0)."""
    fastest = min(medians.values())
    return {key: m / fastest for key, m in medians.items()}
