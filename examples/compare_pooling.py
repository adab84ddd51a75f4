"""Max or average, and when? The same Network in Network trained with every pooling method.

    python examples/compare_pooling.py --out runs/compare    # mnist5k, 13 methods x 2 seeds x 3 epochs
    python examples/compare_pooling.py --methods max avg gem --seeds 0 1 2 --epochs 10 --out runs/compare-long

Every method gets the same network (:class:`nin.NiN`, the ``--pool`` layer of ``nin.py`` swapped
between its blocks), the same data, the same training recipe and epoch budget
(:func:`training.train`), and several seeds; only the pooling layers differ. The defaults (NiN
widths 32 instead of nin.py's 32/32/64, batch 64 instead of 128) keep the
whole study (13 methods x 2 seeds x 3 epochs on mnist5k) to about 15 minutes on 2 CPU cores (max
and tree alone took 2.7 minutes on a shared machine, reaching 0.957 mean test accuracy).
``--out`` receives:

- ``results.md``: one row per method, best mean first: test accuracy mean +- standard deviation
  over the seeds (sample std, ddof=1), the train-test gap (final *training-set* accuracy, measured
  in inference mode after the last epoch, minus test accuracy: how much the method over-fits),
  seconds per epoch (training plus the test evaluation; mean over epochs 2 and later, which exclude
  compilation; epoch 1 if there is only one), and the number of seeds;
- ``results.json``: the same numbers per seed, with each run's per-epoch test accuracy;
- ``learning_curves.png``: test accuracy per epoch, mean over the seeds, one line per method;
- ``runs/<method>/seed<seed>/``: each run's ``metrics.json`` and checkpoints. Rerunning the same
  command resumes an interrupted study and skips the finished runs.

Seeds after the first reuse the first one's compiled programs through JAX's persistent
compilation cache (``--out/jax_cache``), so a method costs one compilation, not one per seed.

What to expect (Boureau, Ponce & LeCun 2010, "A theoretical analysis of feature pooling in visual
recognition"): max pooling suits sparse, ReLU-like features where a single strong response matters;
averaging keeps more of dense features but blurs them; the mixed, gated, tree, GeM and soft poolings
interpolate between the two, and the random ones (stochastic, mixed, fractional) act as
regularisers, which should show as a smaller train-test gap. With the short default budget the
ranking reflects early training as much as final quality: run more epochs and seeds for a firmer
answer.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cli  # noqa: E402
import data as datasets  # noqa: E402
import distributed  # noqa: E402
import nin  # noqa: E402
import pooling_choices  # noqa: E402
import training  # noqa: E402

# median is offered by pooling_choices but is slow (a sorting network per window): opt in with --methods.
DEFAULT_METHODS = tuple(m for m in pooling_choices.NAMES if m != "median")


def run_one(method: str, seed: int, data, config: training.TrainConfig, args) -> dict:
    """Trains NiN with pooling ``method`` and ``seed``; returns ``training.train``'s metrics plus
    ``train_eval_accuracy`` (the final model on the training set, inference mode)."""
    model = nin.NiN(data.num_classes, widths=tuple(args.width), kernels=tuple(args.kernel), pool=method, dropout=args.dropout)
    run_dir = os.path.join(args.out, "runs", method, f"seed{seed}")
    transform = functools.partial(datasets.random_shift, max_shift=args.shift) if args.shift else None

    def train_accuracy(m, variables):
        _, acc = training.evaluate(m, variables, data.train_images, data.train_labels, batch_size=config.eval_batch_size)
        return {"train_eval_accuracy": acc}

    return training.train(
        model, data, dataclasses.replace(config, seed=seed, out_dir=run_dir), transform=transform, extra_metrics=train_accuracy
    )


def _seconds_per_epoch(history: list[dict]) -> float:
    seconds = [h["seconds"] for h in history]
    return statistics.fmean(seconds[1:] if len(seconds) > 1 else seconds)


def summarize(runs: dict[str, list[dict]]) -> list[dict]:
    """One row per method from its runs' metrics, sorted by mean test accuracy (best first)."""
    rows = []
    for method, metrics in runs.items():
        acc = [m["test_accuracy"] for m in metrics]
        gaps = [m["train_eval_accuracy"] - m["test_accuracy"] for m in metrics]
        curves = [[h["test_accuracy"] for h in m["history"]] for m in metrics]
        rows.append(
            {
                "method": method,
                "about": pooling_choices.POOLS[method].about,
                "seeds": [m["config"]["seed"] for m in metrics],
                "test_accuracy": acc,
                "mean": statistics.fmean(acc),
                "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "train_eval_accuracy": [m["train_eval_accuracy"] for m in metrics],
                "gap": statistics.fmean(gaps),
                "seconds_per_epoch": statistics.fmean(_seconds_per_epoch(m["history"]) for m in metrics),
                "curve": [statistics.fmean(epoch) for epoch in zip(*curves)],
                "curves": curves,
            }
        )
    return sorted(rows, key=lambda r: -r["mean"])


def markdown(rows: list[dict], settings: dict) -> str:
    """``results.md``: the settings, then the table."""
    lines = [
        "# Pooling methods compared on Network in Network",
        "",
        f"Dataset {settings['dataset']} ({settings['num_train']} train / {settings['num_test']} test images), "
        f"{settings['epochs']} epochs, batch {settings['batch_size']}, NiN widths {settings['width']}, "
        f"dropout {settings['dropout']}, seeds {settings['seeds']}, devices: {settings['devices']}.",
        "Gap = final training-set accuracy (inference mode) - test accuracy: larger means more over-fitting.",
        "",
        "| method | test accuracy (mean +- std) | train-test gap | s/epoch | seeds | what it is |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['mean']:.4f} +- {r['std']:.4f} | {r['gap']:+.4f} | {r['seconds_per_epoch']:.1f} "
            f"| {len(r['seeds'])} | {r['about']} |"
        )
    return "\n".join(lines) + "\n"


MARKERS = ("o", "s", "^", "v", "D", "P", "X")  # 7 markers, 10 colours, 4 line styles: lcm 140 distinct styles
LINESTYLES = ("-", "--", "-.", ":")


def line_style(i: int) -> dict:
    """Method ``i``'s colour, marker and line style: all three change from one method to the next, none repeats before 140."""
    import matplotlib.pyplot as plt

    return {
        "color": plt.get_cmap("tab10").colors[i % 10],
        "marker": MARKERS[i % len(MARKERS)],
        "ls": LINESTYLES[i % len(LINESTYLES)],
    }


def zoomed_limits(values: list[float], margin: float = 0.15) -> tuple[float, float]:
    """A y-range around ``values`` with ``margin`` of their spread on each side (at least 0.002 wide)."""
    lo, hi = min(values), max(values)
    pad = max(hi - lo, 0.002) * margin
    return lo - pad, hi + pad


def plot_curves(path: str, rows: list[dict]) -> None:
    """Left: mean test error (1 - accuracy) per epoch on a log scale, one distinguishable line per method
    (early epochs and the small final differences both readable). Right: final accuracy per method with
    its seed standard deviation, on a y-range fitted to the differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    fig, (ax, ax_final) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    for i, r in enumerate(rows):
        epochs = range(1, len(r["curve"]) + 1)
        ax.plot(epochs, [1 - a for a in r["curve"]], ms=5, lw=1.4, label=r["method"], **line_style(i))
    ax.set_yscale("log")
    for set_formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        set_formatter(FormatStrFormatter("%.2f"))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"test error = 1 - accuracy (mean over {len(rows[0]['seeds'])} seeds, log scale)")
    ax.set_title("test error per epoch")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    order = sorted(range(len(rows)), key=lambda i: rows[i]["mean"])
    for pos, i in enumerate(order):
        style = line_style(i)
        ax_final.errorbar(pos, rows[i]["mean"], yerr=rows[i]["std"], fmt=style["marker"], color=style["color"], ms=7, capsize=3)
    ax_final.set_xticks(range(len(order)), [rows[i]["method"] for i in order], rotation=45, ha="right", fontsize=8)
    ax_final.set_ylim(*zoomed_limits([rows[i]["mean"] + s * rows[i]["std"] for i in order for s in (-1, 1)]))
    ax_final.set_ylabel("final test accuracy (mean ± std over seeds)")
    ax_final.set_title("final accuracy, zoomed to the differences")
    ax_final.grid(alpha=0.3, axis="y")
    fig.suptitle("NiN: test accuracy by pooling method")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.Parser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, conflict_handler="resolve"
    )
    training.add_common_args(
        parser, epochs=3, batch_size=64, learning_rate=3e-3, label_smoothing=0.1, out_dir="runs/compare_pooling"
    )
    add = parser.add_argument
    seeds = cli.integer(0)
    add("--seeds", "--seed", type=seeds, nargs="+", default=[0, 1], dest="seeds", help="seeds per method (default 0 1)")
    add("--methods", nargs="+", choices=pooling_choices.NAMES, default=list(DEFAULT_METHODS), help="default: all but median")
    nin.add_network_args(parser, width=[32, 32, 32], kernel=[5, 5, 3], pool=False)
    args = parser.parse_args(argv)
    args.seed = args.seeds[0]  # for training.config_from_args; each run replaces it
    if not args.out:
        parser.error("argument --out: a directory is required")
    return training.finish_args(parser, args)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = training.config_from_args(args)
    os.makedirs(args.out, exist_ok=True)

    jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(args.out, "jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    data = datasets.load(args.dataset)
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    for method in dict.fromkeys(args.methods):
        for seed in dict.fromkeys(args.seeds):
            if jax.process_index() == 0:
                print(f"== {method}, seed {seed}", flush=True)
            runs.setdefault(method, []).append(run_one(method, seed, data, config, args))

    rows = summarize(runs)
    settings = {
        "dataset": data.name,
        "source": data.source,
        "num_train": len(data.train_images),
        "num_test": len(data.test_images),
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "width": list(args.width),
        "dropout": args.dropout,
        "shift": args.shift,
        "seeds": list(dict.fromkeys(args.seeds)),
        "devices": [str(d) for d in jax.devices()],
        "wall_seconds": time.perf_counter() - started,
    }
    results = {"settings": settings, "methods": rows}
    if jax.process_index() == 0:
        table = markdown(rows, settings)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(table)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        plot_curves(os.path.join(args.out, "learning_curves.png"), rows)
        print(table + f"wrote {args.out}/results.md, results.json, learning_curves.png")
    return results


if __name__ == "__main__":
    distributed.run(main)
