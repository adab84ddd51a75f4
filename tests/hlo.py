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


def instructions(fn, *args) -> list[str]:
    """The optimised HLO of ``jit(fn)(*args)`` as a sorted list of its instructions with every name
    (``%...``), parameter name, source location and backend configuration removed: equal lists mean
    the same program up to XLA's naming and the order it prints computations in."""
    text = jax.jit(fn).lower(*args).compile().as_text()
    tables = r"^(\d+ |FileNames|FunctionNames|FileLocations|StackFrames)"
    lines = (line for line in text.splitlines() if not re.match(tables, line))
    lines = (_without_backend_config(re.sub(r", metadata=\{[^}]*\}", "", line)) for line in lines)
    return sorted(re.sub(r"%[\w.\-]+|[\w\-]+(\.\d+)?(?=: )", "%", line) for line in lines)


def _without_backend_config(line: str) -> str:
    """``line`` without its ``backend_config={...}`` (nested JSON): how a backend tunes an
    instruction (XLA:GPU's fusion kinds, launch and autotuned tiling choices), not what it computes.
    XLA:CPU prints none."""
    start = line.find(", backend_config={")
    if start < 0:
        return line
    depth = 0
    for end in range(start + len(", backend_config="), len(line)):
        depth += {"{": 1, "}": -1}.get(line[end], 0)
        if depth == 0:
            return line[:start] + line[end + 1 :]
    return line[:start]


def assert_one_device_program_is_local(op, x):
    """``op``'s forward, backward (of ``sum(sin(op))``) and JVP compile on one device to the same
    instructions as with jaxpool._halo's maps called directly (``_halo.plain``, as ``jax.export``
    lowers them), with no partitioning call: the custom partitioning of spatially sharded inputs
    leaves the one-device program alone."""
    from jaxpool import _halo

    for f in (op, jax.grad(lambda v: jax.numpy.sum(jax.numpy.sin(op(v)))), lambda v: jax.jvp(op, (v,), (v,))[1]):
        partitioned = instructions(f, x)
        with _halo.plain():
            plain = instructions(lambda v: f(v), x)
        assert not any("CustomSPMDPartitioning" in line for line in partitioned)
        assert partitioned == plain
