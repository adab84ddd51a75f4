"""What XLA made of a function: compile time, compiled HLO opcode histogram, buffer sizes, VJP residuals."""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from collections.abc import Callable
from typing import cast

import jax
import numpy as np

# One HLO instruction: "[ROOT] %name = <shape> opcode(operands...)". The shape may be a tuple with
# spaces and comments ("(f32[2]{0}, ..., /*index=5*/s32[2]{0})") and TPU layouts ("{1,0:T(8,128)}"),
# none of which has a space followed by a lower-case word and "(": the opcode is the first such word.
# Metadata (op_name="...", source file and function names) comes after the operands, so it is never
# mistaken for an opcode, unlike a substring search over the text.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*.*?\s([a-z][a-z0-9\-]*)\(", re.MULTILINE)
REPORTED_OPCODES = ("reduce-window", "select-and-scatter", "scatter", "gather", "sort", "fusion")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute", "collective-broadcast")


def opcode_counts(hlo_text: str) -> collections.Counter:
    """Count of every opcode over every computation of an HLO module's text, fused ones included."""
    return collections.Counter(_INSTRUCTION.findall(hlo_text))


def opcode_histogram(hlo_text: str) -> dict[str, int]:
    """Counts of :data:`REPORTED_OPCODES`, ``collectives`` and ``instructions`` (all), over every computation.

    Fused computations are included, so an op XLA wrapped in a fusion is still counted. ``collectives``
    sums :data:`COLLECTIVES` with their asynchronous ``-start`` halves (the ``-done`` halves are not counted twice).
    """
    counts = opcode_counts(hlo_text)
    collectives = sum(counts[op] + counts[f"{op}-start"] for op in COLLECTIVES)
    return {**{op: counts[op] for op in REPORTED_OPCODES}, "collectives": collectives, "instructions": sum(counts.values())}


def memory_bytes(compiled) -> dict[str, int | None]:
    """``memory_analysis()``'s temp / argument / output bytes; None where the backend does not report them."""
    try:
        stats = compiled.memory_analysis()
    except (NotImplementedError, RuntimeError, jax.errors.JaxRuntimeError):
        stats = None
    fields = ("temp", "argument", "output")
    return {f"{f}_bytes": None if stats is None else getattr(stats, f"{f}_size_in_bytes", None) for f in fields}


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A jit-compiled executable with what its compilation cost and produced."""

    call: Callable
    compile_s: float
    hlo: dict[str, int]
    memory: dict[str, int | None]


def compile_with_stats(fn: Callable, *args) -> Compiled:
    """``jax.jit(fn).lower(*args).compile()``, timed (lowering included), with its HLO histogram and memory."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    text = cast(str, compiled.as_text())  # cast: None only where a backend has no HLO text; CPU, GPU and TPU have it
    return Compiled(compiled, seconds, opcode_histogram(text), memory_bytes(compiled))


def residual_bytes(fn: Callable, x) -> int:
    """Bytes of the distinct arrays that ``jax.vjp(fn, x)``'s pullback keeps for the backward pass."""
    _, vjp_fn = jax.vjp(fn, x)
    arrays = {id(a): a for a in jax.tree_util.tree_leaves(vjp_fn) if isinstance(a, (jax.Array, np.ndarray))}
    return int(sum(a.nbytes for a in arrays.values()))
