"""Presenting ``python -m jaxpool.compare`` records: rich tables, JSON, and a matplotlib bar chart."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from rich import box
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table

HLO_COLUMNS = ("reduce-window", "select-and-scatter", "scatter", "gather", "sort", "collectives", "fusion")
GLIBC_FIX = "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"


def _bytes(n: int | None) -> str:
    """1536 -> '1.5K' (binary units, 3 significant digits below 100); None -> '–'."""
    if n is None:
        return "–"
    exponent = min((int(n).bit_length() - 1) // 10, 3) if n > 0 else 0
    value = n / 1024**exponent
    return (f"{value:.3g}" if value < 100 else f"{value:.0f}") + " KMG"[exponent].strip()


def _error(e: float | None) -> str:
    """'0', '4e-07', or '–' without a reference."""
    return "–" if e is None else "0" if e == 0 else f"{e:.0e}"


def _hlo(hlo: dict | None) -> str:
    """'1 0 1 0 12 (85)': reduce-window, select-and-scatter, scatter, gather, fusion (all instructions)."""
    return "–" if hlo is None else " ".join(str(hlo[k]) for k in HLO_COLUMNS) + f" ({hlo['instructions']})"


def _ms(v: float) -> str:
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _timing(t: dict) -> str:
    return f"{_ms(t['median_ms'])} ({_ms(t['iqr_ms'])})"


def _ratio(r: float) -> str:
    return "[bold green]1.00[/]" if r == 1.0 else f"{r:.2f}"


def _temp_bytes(r: dict) -> int | None:
    """Compiled forward+backward temp bytes, or None (PyTorch, or a backend without memory_analysis)."""
    return r["memory"] and r["memory"]["fwd_bwd"]["temp_bytes"]


def _compile(c: dict | None) -> str:
    return "–" if c is None else f"{c['fwd']:.2f} {c['fwd_bwd']:.2f}"


def _nan(recipients: dict | None) -> str:
    """The NaN window's gradient recipient; '*' when its forward output was not NaN; '–' when not probed."""
    return "–" if recipients is None else recipients["nan"] + ("" if recipients["nan_forward"] else "*")


COLUMNS: tuple[tuple[str, JustifyMethod, Callable[[dict], str]], ...] = (  # header, justification, cell(record)
    ("implementation", "left", lambda r: escape(r["implementation"])),
    ("err\nfwd", "right", lambda r: _error(r["errors"]["forward"])),
    ("err\ngrad", "right", lambda r: _error(r["errors"]["gradient"])),
    ("grad on\ntie", "left", lambda r: "–" if r["recipients"] is None else r["recipients"]["tie"]),
    ("grad on\nNaN", "left", lambda r: _nan(r["recipients"])),
    ("HLO fwd+bwd: rw s&s scat\ngath sort coll fus (all)", "right", lambda r: _hlo(r["hlo"] and r["hlo"]["fwd_bwd"])),
    ("compile s\nfwd f+b", "right", lambda r: _compile(r["compile_s"])),
    ("temp\nf+b", "right", lambda r: _bytes(_temp_bytes(r))),
    ("VJP\nresid.", "right", lambda r: _bytes(r["residual_bytes"])),
    ("fwd ms\n(IQR)", "right", lambda r: _timing(r["timings"]["fwd"])),
    ("×\nfwd", "right", lambda r: _ratio(r["ratios"]["fwd"])),
    ("fwd+bwd ms\n(IQR)", "right", lambda r: _timing(r["timings"]["fwd_bwd"])),
    ("×\nf+b", "right", lambda r: _ratio(r["ratios"]["fwd_bwd"])),
)


def table(config_name: str, records: list[dict]) -> Table:
    """One row per implementation of one configuration."""
    t = Table(title=config_name, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for header, justify, _ in COLUMNS:
        t.add_column(header, justify=justify, no_wrap=True)
    for r in records:
        t.add_row(*(cell(r) for _, _, cell in COLUMNS))
    return t


def _header(env: dict, rounds: int) -> str:
    torch = f", torch {env['torch']}" if env.get("torch") else ""
    return (
        f"[bold]jaxpool.compare[/] — backend {env['backend']} ({env['device']}), {env['cpu_count']} CPUs; "
        f"jax {env['jax']}, flax {env['flax']}{torch}; {rounds} interleaved rounds"
    )


def _legend(env: dict) -> list[str]:
    lines = [
        "err: max |implementation - float64 NumPy reference| on N(0,1) input and cotangent rounded to the dtype "
        "(includes rounding the result to the dtype; – = no reference for this op).",
        "grad on tie / NaN: who received the gradient in a window of equal values / in one holding a NaN at its centre "
        "(first, last, split; nan, best = the best non-NaN element, #k = flat window position k; * = output not NaN).",
        "HLO: reduce-window, select-and-scatter, scatter, gather, sort, collective, fusion counts (all instructions) "
        "over every computation "
        "of the compiled forward+backward.",
        "temp: its memory_analysis() temp bytes; VJP resid.: bytes jax.vjp keeps for the backward pass (K/M/G = 2^10/20/30).",
        "ms: median (IQR) per call; ×: median / the fastest median.",
    ]
    if env["backend"] == "cpu":
        state = "set" if env["glibc_mmap_threshold_set"] else "NOT set"
        lines.append(
            f"glibc mmap threshold tuning {state}: without it XLA:CPU page-faults fresh >32 MB output buffers on every call; "
            f"run with {GLIBC_FIX} to remove that."
        )
    return lines


def print_report(records: list[dict], console: Console | None = None) -> None:
    """Prints the header, one table per configuration, and the legend."""
    if not records:
        return
    console = console or Console()
    env = records[0]["environment"]
    console.print(_header(env, records[0]["timings"]["fwd"]["samples"]))
    for name in dict.fromkeys(r["config"]["name"] for r in records):
        console.print(table(name, [r for r in records if r["config"]["name"] == name]))
    for line in _legend(env):
        console.print(f"[dim]{line}[/]", highlight=False)


def _jsonable(obj):
    """Non-finite floats become None so that the file is strict JSON."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def write_json(records: list[dict], path: str) -> None:
    """Writes the records (the schema is in :mod:`jaxpool.compare`'s docstring)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(_jsonable(records), f, indent=1, allow_nan=False)
        f.write("\n")


def matplotlib_missing() -> str | None:
    """Why ``--plot`` cannot work here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib, which is not installed: pip install matplotlib"
    return None


def _bars(ax, records: list[dict], value, label: str) -> None:
    """Horizontal grouped bars: one group per configuration (top to bottom), one bar per implementation (missing left out)."""
    configs = list(dict.fromkeys(r["config"]["name"] for r in records))
    impls = list(dict.fromkeys(r["implementation"] for r in records))
    cells = {(r["config"]["name"], r["implementation"]): value(r) for r in records}
    height = 0.8 / len(impls)
    for j, impl in enumerate(impls):
        points = [(i + (j - (len(impls) - 1) / 2) * height, cells.get((c, impl))) for i, c in enumerate(configs)]
        points = [(p, v) for p, v in points if v is not None]
        ax.barh([p for p, _ in points], [v for _, v in points], height, label=impl, color=f"C{j}")
    ax.set_yticks(range(len(configs)), configs, fontsize=8)
    ax.set_ylim(len(configs) - 0.5, -0.5)  # first configuration on top
    ax.set_xlabel(label)
    ax.grid(alpha=0.3, axis="x")


def plot(records: list[dict], path: str) -> None:
    """Bars of forward+backward median time (log scale) and compiled temp memory per implementation and configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    n = len({r["config"]["name"] for r in records})
    impls = len({r["implementation"] for r in records})
    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(13.0, max(4.0, 0.5 + 0.12 * n * max(impls, 3))), sharey=True)
    _bars(ax_time, records, lambda r: r["timings"]["fwd_bwd"]["median_ms"], "forward+backward median (ms, log scale)")
    ax_time.set_xscale("log")
    ax_time.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax_time.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax_time.xaxis.set_minor_formatter(NullFormatter())
    _bars(ax_mem, records, lambda r: (b := _temp_bytes(r)) and b / 2**20, "forward+backward temp memory (MiB)")
    ax_mem.tick_params(labelleft=False)
    ax_time.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"jaxpool.compare on {records[0]['environment']['backend']} ({records[0]['environment']['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
