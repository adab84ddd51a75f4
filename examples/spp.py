"""SPP-net (He, Zhang, Ren & Sun 2014, arXiv:1406.4729): one classifier for images of any size.

    python examples/spp.py --out runs/spp        # mnist5k, offline; ~1.5 minutes with the baseline
    python examples/spp.py --train-sizes 20 28 36 44 --out runs/spp-8apart   # see the note on parity

Network: two ``conv3x3-relu-maxpool2x2`` blocks (a 16 px digit becomes a 4x4 map, a 56 px one
14x14), then :class:`jaxpool.linen.SpatialPyramidPool` with levels (1, 2, 4): max pooling into
1x1, 2x2 and 4x4 bins of whatever size the map has, so the dense head always sees ``C * 21``
features and the same weights classify every size.

Multi-size training (the paper's section 2.3): each training batch is shifted by up to ``--shift``
pixels and rescaled with :func:`jax.image.resize` (bilinear, antialiased when shrinking) to a size
drawn from ``--train-sizes``. ``jax.jit`` compiles one program per input shape, so sizes drawn from
a continuous range would recompile the train step at almost every step; a small set of sizes costs
exactly ``len(train_sizes)`` compilations, after which every step reuses one of them. (The paper
alternated two sizes, 180 and 224, one per epoch, for the same reason.) The default sizes 18, 25,
32, 39, 46 are 7 apart so that their feature maps (4, 6, 8, 9, 11 px) have both parities: with
sizes 8 apart (all maps of one parity) accuracy dipped at sizes of the other parity, 0.88-0.93 at
28 px for 18/26/34/42, because 2x2 pooling and the pyramid's bins align differently on odd maps.

Evaluation: the 1,000 held-out test images rescaled to each of ``--sizes``; by default 16, 24, 28,
40, 48 and 56 px, none of them a training size (16 and 48-56 lie outside the trained range). The
baseline is the same trunk with ``flatten + dense`` instead of the pyramid, trained at the native
28 px only (with the same random shifts); a flattening head accepts one size, so it sees every test
image resized to 28 px. Both models are trained by :func:`training.train`.

On mnist5k (defaults, seeds 0-2; 1.3-1.5 minutes for both models on 2 shared CPU cores) SPP
scores 0.948-0.959 at 16 px and 0.959-0.976 at 24-56 px; the resize-to-28 baseline does a little
better (0.954-0.987), because a digit loses almost nothing when resized, so a fixed-size network
is a strong baseline here. SPP's advantage is that it needs no resizing at all (no fixed input
size; aspect ratio and fine detail kept), which matters for large natural images, the paper's
setting.

Outputs in ``--out``: ``metrics.json`` (:func:`training.train`'s metrics of the SPP model, with
``test_accuracy`` at the native size, plus ``accuracy_by_size`` ``{"size": accuracy}``,
``train_sizes`` and ``baseline``: the baseline's ``accuracy_by_size``, ``test_accuracy`` and
``input_size``), ``accuracy_by_size.png`` (accuracy against input size, both models),
``baseline/`` (the baseline's own run) and orbax checkpoints; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys

import flax.linen as nn
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cli  # noqa: E402
import data as datasets  # noqa: E402
import distributed  # noqa: E402
import training  # noqa: E402

import jaxpool.linen as jpl  # noqa: E402

TRAIN_SIZES = (18, 25, 32, 39, 46)
EVAL_SIZES = (16, 24, 28, 40, 48, 56)


class SPPNet(nn.Module):
    """``(N, H, W, C) -> (N, num_classes)`` logits.

    Trunk: one ``conv3x3(width)-relu-maxpool2x2`` block per entry of ``widths`` (SAME convs, VALID
    pools). Head: ``head="spp"``, spatial pyramid max pooling over ``levels`` (any H, W of at least
    ``2 ** len(widths)``), or ``head="flatten"`` (the fixed-size baseline: only the H, W it was
    initialised with); then ``dense(hidden)-relu-dropout-dense(num_classes)``.
    """

    num_classes: int
    widths: tuple[int, ...] = (32, 64)
    levels: tuple[int, ...] = (1, 2, 4)
    hidden: int = 128
    dropout: float = 0.3
    head: str = "spp"

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.head not in ("spp", "flatten"):
            raise ValueError(f"head must be 'spp' or 'flatten', got {self.head!r}")
        for width in self.widths:
            x = jpl.MaxPool((2, 2))(nn.relu(nn.Conv(width, (3, 3))(x)))
        x = jpl.SpatialPyramidPool(self.levels)(x) if self.head == "spp" else x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes)(x)


@functools.partial(jax.jit, static_argnums=1)
def _resize(images, size: int):
    n, _, _, c = images.shape
    return jax.image.resize(images, (n, size, size, c), "linear")


def resize(images, size: int):
    """``(N, H, W, C) -> (N, size, size, C)``, bilinear (antialiased when shrinking); jitted per size."""
    return images if images.shape[1:3] == (size, size) else _resize(images, int(size))


def random_rescale(key, images, sizes, max_shift: int = 0):
    """``transform`` for :func:`training.train`: each image shifted by up to ``max_shift`` pixels
    (:func:`data.random_shift`), then the whole batch resized to one size drawn from ``sizes``.

    The size is drawn on the host (it decides the shape, which must be static) from ``key`` only, so a
    resumed run draws the same sizes.
    """
    shift_key, size_key = jax.random.split(key)
    size = sizes[int(jax.random.randint(size_key, (), 0, len(sizes)))]
    return resize(datasets.random_shift(shift_key, images, max_shift), size)


def accuracy_by_size(model, variables, data, sizes, *, fixed_size=None, batch_size=500) -> dict[str, float]:
    """``{str(size): accuracy}`` on the test images rescaled to each size.

    With ``fixed_size`` (the baseline), every rescaled image is resized again to ``fixed_size``
    before the model sees it.
    """
    out = {}
    for size in sizes:
        images = resize(data.test_images, size)
        if fixed_size is not None:
            images = resize(images, fixed_size)
        _, acc = training.evaluate(model, variables, np.asarray(images), data.test_labels, batch_size=batch_size)
        out[str(size)] = acc
    return out


def plot(path, sizes, spp_acc, baseline_acc, train_sizes, native: int) -> None:
    """Accuracy against input size, SPP vs the fixed-size baseline; training sizes marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for s in train_sizes:
        ax.axvline(s, color="0.85", lw=6, zorder=0)
    ax.plot(sizes, [spp_acc[str(s)] for s in sizes], "o-", label="SPP, multi-size training (grey: training sizes)")
    if baseline_acc:
        label = f"flatten baseline, {native} px (test resized to {native})"
        ax.plot(sizes, [baseline_acc[str(s)] for s in sizes], "s--", label=label)
    ax.set_xlabel("test input size (px)")
    ax.set_ylabel("test accuracy")
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower center", fontsize=8)
    ax.set_title("Spatial pyramid pooling: accuracy against input size")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    """Parses and checks every flag (one line, exit 2 on a bad value), then joins a multi-process run if asked."""
    parser = cli.Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    training.add_common_args(parser, epochs=8, batch_size=64, learning_rate=3e-3, weight_decay=1e-4, warmup_epochs=0.5)
    add = parser.add_argument
    px = cli.integer(1)
    add("--train-sizes", type=px, nargs="+", default=list(TRAIN_SIZES), help="one drawn per batch (default %(default)s)")
    add("--sizes", type=px, nargs="+", default=list(EVAL_SIZES), help="test sizes (default %(default)s)")
    add("--width", type=cli.integer(1), nargs="+", default=[32, 64], help="channels of each conv-pool block (default 32 64)")
    add("--shift", type=cli.integer(0), default=2, help="random translation in pixels before rescaling (0: none; default 2)")
    add("--no-baseline", action="store_true", help="skip the fixed-size flatten baseline")
    args = parser.parse_args(argv)
    smallest = 2 ** len(args.width)  # each block halves the map
    if min(args.sizes + args.train_sizes) < smallest:
        parser.error(f"--sizes and --train-sizes must be >= {smallest} px ({len(args.width)} blocks halve the map)")
    return training.finish_args(parser, args)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = training.config_from_args(args)
    data = datasets.load(args.dataset)
    native = data.test_images.shape[1]
    sizes = sorted(set(args.sizes))
    train_sizes = tuple(sorted(set(args.train_sizes)))

    model = SPPNet(data.num_classes, widths=tuple(args.width))
    result = training.train(
        model,
        data,
        config,
        transform=functools.partial(random_rescale, sizes=train_sizes, max_shift=args.shift),
        extra_metrics=lambda m, v: {"accuracy_by_size": accuracy_by_size(m, v, data, sizes), "train_sizes": list(train_sizes)},
    )

    baseline = None
    if not args.no_baseline:
        base_config = dataclasses.replace(config, out_dir=config.out_dir and os.path.join(config.out_dir, "baseline"))
        base_model = SPPNet(data.num_classes, widths=tuple(args.width), head="flatten")
        fixed = lambda m, v: {"accuracy_by_size": accuracy_by_size(m, v, data, sizes, fixed_size=native)}
        shift = functools.partial(datasets.random_shift, max_shift=args.shift)  # same augmentation, minus rescaling
        base = training.train(base_model, data, base_config, transform=shift, extra_metrics=fixed)
        baseline = {"accuracy_by_size": base["accuracy_by_size"], "test_accuracy": base["test_accuracy"], "input_size": native}
        result["baseline"] = baseline

    if jax.process_index() != 0:  # only process 0 prints and writes
        return result
    print(f"{'size':>5} {'SPP':>7} {'baseline':>8}")
    for s in sizes:
        base_acc = f"{baseline['accuracy_by_size'][str(s)]:>8.4f}" if baseline else f"{'-':>8}"
        print(f"{s:>5} {result['accuracy_by_size'][str(s)]:>7.4f} {base_acc}")
    if config.out_dir:
        with open(os.path.join(config.out_dir, "metrics.json"), "w") as f:
            json.dump(result, f, indent=2)
        png = os.path.join(config.out_dir, "accuracy_by_size.png")
        plot(png, sizes, result["accuracy_by_size"], baseline and baseline["accuracy_by_size"], train_sizes, native)
        print(f"wrote {png}")
    return result


if __name__ == "__main__":
    distributed.run(main)
