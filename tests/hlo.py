"""Opcode histogram of compiled HLO text (metadata and names excluded)."""

import collections
import re

import jax

# "%name = <shape> opcode(operands...)": the shape may be a tuple containing spaces.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(?:\([^=]*?\)|\S+)\s+([a-z][a-z0-9\-]*)\(", re.M)


def opcodes(hlo_text: str) -> collections.Counter:
    return collections.Counter(_INSTRUCTION.findall(hlo_text))


def compiled_opcodes(fn, *args) -> collections.Counter:
    return opcodes(jax.jit(fn).lower(*args).compile().as_text())
