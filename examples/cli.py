"""Command-line checks shared by the example scripts: every bad value is refused before any work.

API::

    Parser(...)                               # argparse.ArgumentParser whose errors are ONE line, exit 2
    integer(low=None, high=None)              # argparse ``type=``: an int in [low, high]
    real(low=None, high=None, *, open_low=False, open_high=False)   # a finite float in the range
    check_out_dir(parser, path, flag="--out") # creates the directory and writes a test file, else parser.error

argparse's convention for a bad value is a message on stderr and exit code 2; :class:`Parser` keeps
that but prints one line (``prog: error: argument --lr: ... (see --help)``) instead of the usage
block, so a script driven by another program (a launcher, CI) fails with one readable line and no
Traceback. The ``type=`` factories name the accepted range in their message::

    parser = Parser(prog="nin.py")
    parser.add_argument("--lr", type=real(0, open_low=True))
    parser.parse_args(["--lr", "nan"])
    # stderr: nin.py: error: argument --lr: expected a finite number > 0, got 'nan' (see --help); exit code 2
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose :meth:`error` prints one line (no usage block) and exits 2."""

    def error(self, message):  # noqa: D102 - argparse's hook
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def _range_text(low, high, open_low=False, open_high=False) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if open_low else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if open_high else '<='} {high}")
    return " and ".join(parts)


def integer(low: int | None = None, high: int | None = None):
    """argparse ``type=``: an integer in ``[low, high]`` (either bound may be None)."""
    want = " ".join(filter(None, ["an integer", _range_text(low, high)]))

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {want}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def real(low: float | None = None, high: float | None = None, *, open_low: bool = False, open_high: bool = False):
    """argparse ``type=``: a finite float in the range (closed unless ``open_low``/``open_high``)."""
    want = " ".join(filter(None, ["a finite number", _range_text(low, high, open_low, open_high)]))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        bad = not math.isfinite(value)
        bad |= low is not None and (value <= low if open_low else value < low)
        bad |= high is not None and (value >= high if open_high else value > high)
        if bad:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    parse.__name__ = "real"
    return parse


def check_out_dir(parser: argparse.ArgumentParser, path: str | None, flag: str = "--out") -> None:
    """Creates directory ``path`` if needed and checks that a file can be written in it, else ``parser.error``.

    Trying is the only reliable check (permission bits do not bind root; ``/proc`` refuses anyway).
    """
    if path is None:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        parser.error(f"argument {flag}: {path!r} exists and is not a directory; pass a directory")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        parser.error(f"argument {flag}: cannot write to directory {path!r}: {error.strerror or error}")
