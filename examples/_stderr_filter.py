"""Reads a multi-process example's stderr and turns the XLA runtime's lost-peer output into one line.

Started by :func:`distributed.initialize` as ``python _stderr_filter.py RANK COUNT`` with its stdin
being the example's stderr and its own stderr the original one. Everything passes through
unchanged (progress bars included, piece by piece) until the JAX coordination service or its
client logs (absl ``E``/``W``/``F`` lines from ``coordination_service*``, ``client.h``,
``preemption_sync_manager``): from there on the output is held. At the end, the held text becomes:

- the example's own one-line error (``error: process ...``), if :func:`distributed.run` printed one;
- else, if the runtime terminated the process ("Terminating process because the JAX distributed
  service detected fatal errors") after a Ctrl-C reached this filter, the example's interrupt line
  (``interrupted; rerun ...``): the peer was lost because the same Ctrl-C stopped it first, while
  this process was still inside a compiled computation and had not yet seen its own KeyboardInterrupt;
- else, if the runtime terminated the process, one line naming the lost processes, taken from the
  runtime's "tasks are unhealthy (stopped sending heartbeats): 1" or "the leader task ... died";
- else the held text unchanged (nothing failed after all).

The filter runs in the example's process group, so a Ctrl-C (a terminal's, or the SIGINT that
``launch_local.py`` forwards) reaches it too: it only notes it (see above) and goes on until the
example's stderr closes.
"""

from __future__ import annotations

import os
import re
import signal
import sys

RUNTIME_LOG = re.compile(rb"^[EWF]\d{4} [\d:.]+\s+\d+ (coordination_service\w*|client|preemption_sync_manager)\.\w+:\d+\]")
FATAL = "Terminating process because the JAX distributed service detected fatal errors"


INTERRUPTED = "interrupted; rerun the same command to resume from the last checkpoint\n"


def summary(held: str, rank: str, count: str, interrupted: bool = False, told: bool = False) -> str:
    """What to print for the held text (see the module docstring).

    ``interrupted``: a Ctrl-C reached this filter; ``told``: the example's interrupt line already
    passed through before the held text began.
    """
    ours = [line for line in held.splitlines() if line.startswith("error: process ")]
    if ours:
        return ours[-1] + "\n"
    if FATAL not in held:
        return held
    if interrupted:
        said = [line + "\n" for line in held.splitlines() if line.startswith("interrupted")]
        return "".join(said) or ("" if told else INTERRUPTED)
    unhealthy = re.search(r"stopped sending heartbeats\):\s*\n([\d,\s]+?)\n", held)
    if unhealthy:
        lost = "process " + ", ".join(re.findall(r"\d+", unhealthy.group(1)))
    elif "leader task" in held:
        lost = "the coordinator (process 0)"
    else:
        lost = "a peer"
    return (
        f"error: process {rank} of {count} stops: lost {lost} (the JAX distributed runtime ended this process); "
        "rerun the same command on every process to resume from the last checkpoint\n"
    )


def main(rank: str, count: str) -> None:
    interrupts = []
    signal.signal(signal.SIGINT, lambda signum, frame: interrupts.append(signum))
    pending, held, holding, told = b"", [], False, False
    while True:
        chunk = os.read(0, 1 << 16)  # retried after a Ctrl-C (PEP 475)
        pieces = re.split(rb"(?<=[\r\n])", pending + chunk)
        pending = pieces.pop() if chunk else b""
        for piece in filter(None, pieces + ([pending] if not chunk else [])):
            holding = holding or bool(RUNTIME_LOG.match(piece))
            if holding:
                held.append(piece)
            else:
                os.write(2, piece)
                told = told or piece.startswith(b"interrupted")
        if not chunk:
            break
    if held:
        os.write(2, summary(b"".join(held).decode(errors="replace"), rank, count, bool(interrupts), told).encode())


if __name__ == "__main__":
    main(*sys.argv[1:3])
