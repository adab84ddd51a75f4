"""Opcode histogram of a function's compiled HLO (instruction opcodes only, never metadata text)."""

import jax

from jaxpool.compare.hlo import opcode_counts


def compiled_opcodes(fn, *args):
    return opcode_counts(jax.jit(fn).lower(*args).compile().as_text())
