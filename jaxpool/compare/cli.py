"""The command line of ``python -m jaxpool.compare``: every argument is checked before any work, as argparse does.

A bad value prints one ``error:`` line naming the argument and exits with status 2 (argparse's
code): unknown ops or dtypes, non-positive sizes, a geometry the op refuses, ``--rounds 0``,
non-finite or negative ``--min-sample-ms``, ``--json`` / ``--plot`` paths whose folder is missing
or not writable (or that name a folder), ``--plot`` without matplotlib.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

from rich.console import Console

from jaxpool.compare import IMPLEMENTATIONS, compare, report
from jaxpool.compare.config import DTYPES, Config, ladder
from jaxpool.compare.ops import OPS

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


def _count(text: str, minimum: int) -> int:
    """argparse type: an integer ``>= minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _milliseconds(text: str) -> float:
    """argparse type: a finite, non-negative number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _output_file(text: str) -> str:
    """argparse type: a file path that can be written (its folder exists and is writable; not a folder)."""
    folder = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name inside it")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"folder {folder!r} does not exist; create it first (mkdir -p)")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {folder!r} is not writable; choose another path")
    return text


def _choices(allowed: tuple[str, ...], everything: str | None = None) -> Callable[[str], list[str]]:
    """argparse type: a comma-separated list drawn from ``allowed`` (``everything``: a name for all of them)."""

    def parse(text: str) -> list[str]:
        if everything is not None and text == everything:
            return list(allowed)
        values = text.split(",")
        bad = [v for v in values if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {list(allowed)}")
        return values

    return parse


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument prints one line (no usage block): ``prog: error: ... (see --help)``, exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m jaxpool.compare",
        description="Compare pooling implementations: numerics, compiled HLO, memory and speed. "
        "Without config flags, runs a default ladder; any config flag selects a single configuration "
        "(unset ones default to --op max --shape 32,56,56,64 --window 3,3 --stride 2,2 --padding 1 --dtype float32). "
        "Adaptive ops take the windowed output size as their output size; global ops ignore the window; "
        "fractional, blur, adaptive, global, spp and unpool ignore --padding.",
    )
    p.add_argument("--op", type=_choices(tuple(OPS), "all"), help=f"comma-separated ops, or all: {', '.join(OPS)}")
    p.add_argument("--shape", type=_positive_ints, help="NHWC input shape, e.g. 32,56,56,64")
    p.add_argument("--window", type=_positive_ints, help="window, e.g. 3,3 (one int = every spatial axis)")
    p.add_argument("--stride", type=_positive_ints, help="strides, e.g. 2,2 (one int = every spatial axis)")
    p.add_argument("--padding", type=_padding, help="VALID, SAME, an int or one int per axis (symmetric)")
    p.add_argument("--dtype", type=_choices(DTYPES), help="comma-separated dtypes: float32, bfloat16, float16")
    p.add_argument("--impl", type=_choices(tuple(IMPLEMENTATIONS)), help=f"comma-separated subset of {list(IMPLEMENTATIONS)}")
    p.add_argument("--full", action="store_true", help="the benchmark-sized ladder (float32 and bfloat16; minutes)")
    p.add_argument("--rounds", type=lambda t: _count(t, 1), default=30, help="interleaved timing rounds (default 30)")
    p.add_argument(
        "--min-sample-ms", type=_milliseconds, default=5.0, help="repeat calls until one sample lasts this long (default 5)"
    )
    p.add_argument("--seed", type=lambda t: _count(t, 0), default=0)
    p.add_argument("--json", metavar="FILE", type=_output_file, help="write the records as JSON")
    p.add_argument(
        "--plot", metavar="FILE.png", type=_output_file, help="bar chart: fwd+bwd time, temp memory (needs matplotlib)"
    )
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
    if n < 1:
        parser.error(f"--shape must be N,*spatial,C with at least one spatial axis, got {','.join(map(str, given['shape']))}")
    try:
        return [
            Config(op, given["shape"], _broadcast(given["window"], n), _broadcast(given["stride"], n), given["padding"], dtype)
            for op in given["op"]
            for dtype in given["dtype"]
        ]
    except (ValueError, TypeError) as e:
        parser.error(str(e).splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    """The command line; returns 0, or exits with status 2 (argparse's) on a bad argument before any work."""
    parser = _parser()
    args = parser.parse_args(argv)
    configs = _configs(args, parser)
    if args.plot and (reason := report.matplotlib_missing()):
        parser.error(reason)
    console = Console(stderr=True)
    log = lambda message: console.print(message, style="dim", markup=False, highlight=False)
    records = compare(configs, args.impl, args.rounds, min_sample_ms=args.min_sample_ms, seed=args.seed, log=log)
    report.print_report(records, Console(width=None if sys.stdout.isatty() else 160))
    if args.json:
        report.write_json(records, args.json)
    if args.plot:
        report.plot(records, args.plot)
    return 0
