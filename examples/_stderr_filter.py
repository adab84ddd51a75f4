"""Reads a multi-process example's stderr and turns the XLA runtime's lost-peer output into one line.

Started by :func:`distributed.initialize` as ``python _stderr_filter.py RANK COUNT`` with its stdin
being the example's stderr and its own stderr the original one. Everything passes through
unchanged (progress bars included, piece by piece) until the JAX coordination service or its
client logs (absl ``E``/``W``/``F`` lines from ``coordination_service*``, ``client.h``,
``preemption_sync_manager``): from there on the output is held. At the end, the held text becomes:

- the example's own one-line error (``error: process ...``), if :func:`distributed.run` printed one;
- else, if the runtime terminated the process ("Terminating process because the JAX distributed
  service detected fatal errors"), one line naming the lost processes, taken from the runtime's
  "tasks are unhealthy (stopped sending heartbeats): 1" or "the leader task ... died";
- else the held text unchanged (nothing failed after all).

Ctrl-C is ignored here: the example handles it and this filter ends when the example's stderr closes.
"""

from __future__ import annotations

import os
import re
import signal
import sys

RUNTIME_LOG = re.compile(rb"^[EWF]\d{4} [\d:.]+\s+\d+ (coordination_service\w*|client|preemption_sync_manager)\.\w+:\d+\]")
FATAL = "Terminating process because the JAX distributed service detected fatal errors"


def summary(held: str, rank: str, count: str) -> str:
    """What to print for the held text (see the module docstring)."""
    ours = [line for line in held.splitlines() if line.startswith("error: process ")]
    if ours:
        return ours[-1] + "\n"
    if FATAL not in held:
        return held
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pending, held, holding = b"", [], False
    while True:
        chunk = os.read(0, 1 << 16)
        pieces = re.split(rb"(?<=[\r\n])", pending + chunk)
        pending = pieces.pop() if chunk else b""
        for piece in filter(None, pieces + ([pending] if not chunk else [])):
            holding = holding or bool(RUNTIME_LOG.match(piece))
            if holding:
                held.append(piece)
            else:
                os.write(2, piece)
        if not chunk:
            break
    if held:
        os.write(2, summary(b"".join(held).decode(errors="replace"), rank, count).encode())


if __name__ == "__main__":
    main(*sys.argv[1:3])
