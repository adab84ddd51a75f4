"""Opcode histogram of a function's compiled HLO (instruction opcodes only, never metadata text),
and the barriers jaxpool._fusion leaves in it."""

import re

import jax

from jaxpool.compare.hlo import opcode_counts


def compiled_opcodes(fn, *args):
    return opcode_counts(jax.jit(fn).lower(*args).compile().as_text())


def barriers(text: str, array: str = "f32[") -> int:
    """How many of jaxpool._fusion's barriers (on XLA:CPU a while loop whose state is a flag and the
    array) hold an array whose compiled type starts with ``array`` in compiled HLO ``text``."""
    return len(re.findall(r"= \(pred\[\]\{?[^,]*, " + re.escape(array) + r"[^=]*\bwhile\(", text))
