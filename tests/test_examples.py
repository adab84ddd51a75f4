"""The examples: data loading, the pooling choices, and ``examples/nin.py`` end to end.

``nin.py`` runs as a subprocess (this interpreter) on the tiny offline ``digits`` dataset with a
narrow network, so each run takes seconds. One uninterrupted 3-epoch run is the reference that the
resumed, the killed-and-resumed and the 4-device data-parallel runs must reproduce.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NIN = EXAMPLES / "nin.py"
sys.path.insert(0, str(EXAMPLES))

import data  # noqa: E402
import pooling_choices  # noqa: E402
import training  # noqa: E402

# digits: 1,438 train images -> 179 steps of 8 per epoch, well under a second each (8x8 images: shifts of 1 px).
TINY = (
    *("--dataset", "digits", "--width", "16", "16", "16", "--kernel", "3", "3", "3"),
    *("--dropout", "0.1", "--shift", "1", "--batch-size", "8", "--no-progress"),
)
HISTORY_KEYS = {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "learning_rate", "seconds"}
METRICS_KEYS = {"test_accuracy", "test_loss", "history", "config", "model", "dataset", "source", "devices", "resumed_from_epoch"}


def _env(devices: int) -> dict:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))


def _command(out, *args) -> list[str]:
    return [sys.executable, str(NIN), *TINY, "--out", str(out), *args]


def run_nin(out, *args, devices: int = 1) -> dict:
    """Runs nin.py to completion and returns its metrics.json."""
    proc = subprocess.run(_command(out, *args), env=_env(devices), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((Path(out) / "metrics.json").read_text())


def assert_same_history(got: list[dict], want: list[dict], rtol: float = 1e-6) -> None:
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for g, w in zip(got, want):
        for key in HISTORY_KEYS - {"seconds"}:
            np.testing.assert_allclose(g[key], w[key], rtol=rtol, atol=rtol, err_msg=f"epoch {w['epoch']} {key}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 3-epoch run with max pooling."""
    return run_nin(tmp_path_factory.mktemp("reference"), "--epochs", "3")


# ----------------------------------------------------------------------------------------------
# data.py


def test_mnist5k_stratified_held_out_split():
    d = data.load("mnist5k")
    assert d.train_images.shape == (4000, 28, 28, 1) and d.test_images.shape == (1000, 28, 28, 1)
    assert d.train_images.dtype == np.float32 and d.train_labels.dtype == np.int32 and d.num_classes == 10
    assert 0.0 <= d.train_images.min() and d.train_images.max() == 1.0
    assert np.bincount(d.test_labels).tolist() == [100] * 10
    assert np.bincount(d.train_labels).tolist() == [400] * 10
    # No test image is also a training image (MNIST's 5,000 images are distinct).
    train_rows = {row.tobytes() for row in d.train_images.reshape(4000, -1)}
    assert not any(row.tobytes() in train_rows for row in d.test_images.reshape(1000, -1))
    # The split is fixed by its seed, and another seed gives another split.
    again, other = data.load("mnist5k"), data.load("mnist5k", seed=1)
    np.testing.assert_array_equal(again.test_images, d.test_images)
    assert not np.array_equal(other.test_images, d.test_images)


def test_stratified_split_partitions_indices():
    labels = np.repeat(np.arange(3), [10, 20, 7])
    train, test = data.stratified_split(labels, lambda n: n // 5, seed=3)
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(37))
    assert np.bincount(labels[test]).tolist() == [2, 4, 1]


def test_digits():
    d = data.load("digits")
    assert d.train_images.shape[1:] == (8, 8, 1) and len(d.train_images) + len(d.test_images) == 1797
    assert d.train_images.max() == 1.0 and d.test_labels.dtype == np.int32


def test_random_shift_translates_within_bounds():
    images = np.zeros((64, 9, 9, 1), np.float32)
    images[:, 4, 4] = 1.0
    shifted = np.asarray(data.random_shift(jax.random.key(0), images, 2))
    rows, cols = np.nonzero(shifted[..., 0])[1:]
    assert shifted.shape == images.shape and shifted.sum() == 64  # every dot moved, none lost
    assert set(rows) == set(range(2, 7)) and set(cols) == set(range(2, 7))  # all 5 x 5 offsets occur


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is not None, reason="tensorflow_datasets is installed")
def test_cifar10_without_tfds_exits_with_instructions():
    with pytest.raises(SystemExit, match="pip install tensorflow-datasets"):
        data.load("cifar10")
    command = [sys.executable, str(NIN), "--dataset", "cifar10", "--no-progress"]
    proc = subprocess.run(command, env=_env(1), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "pip install tensorflow-datasets" in proc.stderr and "mnist5k" in proc.stderr


# ----------------------------------------------------------------------------------------------
# pooling_choices.py and training.py in process


@pytest.mark.parametrize("name", pooling_choices.NAMES)
def test_pool_choice_halves_and_differentiates(name):
    x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 12, 12, 3)))
    layer = pooling_choices.DownPool(name)
    variables = layer.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, x, train=False)
    y = layer.apply(variables, x, train=True, rngs={"dropout": jax.random.key(3)})
    y_eval = layer.apply(variables, x, train=False)
    assert y.shape == y_eval.shape == (2, 6, 6, 3)  # 12 -> 6 (fractional: int(12 * 0.55) = 6)
    assert np.isfinite(np.asarray(y)).all() and np.isfinite(np.asarray(y_eval)).all()
    grad = jax.grad(lambda z: jnp.sum(layer.apply(variables, z, train=False) ** 2))(x)
    assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0


def test_unknown_pool_names_the_choices():
    with pytest.raises(ValueError, match="pool must be one of"):
        pooling_choices.DownPool("nope").init(jax.random.key(0), jnp.ones((1, 4, 4, 1)))


def test_evaluate_counts_every_image_once():
    import flax.linen as nn

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3)(x.reshape(len(x), -1))

    model = Linear()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((23, 2, 2, 1)).astype(np.float32)
    labels = rng.integers(0, 3, 23).astype(np.int32)
    variables = model.init(jax.random.key(0), images)
    logits = np.asarray(model.apply(variables, images), np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    want_loss, want_acc = -log_p[np.arange(23), labels].mean(), (logits.argmax(1) == labels).mean()
    for batch_size in (5, 23, 64):  # padded last batch, exact, a single padded batch
        loss, acc = training.evaluate(model, variables, images, labels, batch_size=batch_size)
        assert acc == pytest.approx(want_acc, abs=1e-12) and loss == pytest.approx(want_loss, rel=1e-5)


def test_config_validation_and_resume_refusal():
    with pytest.raises(ValueError, match="schedule_epochs"):
        training.TrainConfig(epochs=5, schedule_epochs=3)
    with pytest.raises(ValueError, match="schedule must be one of"):
        training.TrainConfig(schedule="step")
    planned = {"model": "M()", "config": vars(training.TrainConfig(epochs=2, schedule_epochs=5, learning_rate=1e-3))}
    training._check_resumable(planned, training.TrainConfig(epochs=5, learning_rate=1e-3), "M()", "d")  # no warning
    unplanned = {"model": "M()", "config": vars(training.TrainConfig(epochs=2, learning_rate=1e-3))}
    with pytest.warns(UserWarning, match="learning rate jumps"):  # its schedule spanned 2 epochs, now 5
        training._check_resumable(unplanned, training.TrainConfig(epochs=5, learning_rate=1e-3), "M()", "d")
    with pytest.raises(SystemExit, match="learning_rate: 0.001 -> 0.01"):
        training._check_resumable(planned, training.TrainConfig(epochs=5, learning_rate=1e-2), "M()", "d")
    with pytest.raises(SystemExit, match="different model"):
        training._check_resumable(planned, training.TrainConfig(epochs=5, learning_rate=1e-3), "N()", "d")


# ----------------------------------------------------------------------------------------------
# nin.py end to end


def _check_metrics(metrics: dict, epochs: int) -> None:
    assert METRICS_KEYS <= set(metrics)
    assert len(metrics["history"]) == epochs and all(set(h) == HISTORY_KEYS for h in metrics["history"])
    assert all(math.isfinite(h[k]) for h in metrics["history"] for k in ("train_loss", "test_loss"))
    assert metrics["test_accuracy"] == metrics["history"][-1]["test_accuracy"]
    assert metrics["dataset"] == "digits" and len(metrics["devices"]) >= 1


def test_nin_max_pool_learns(reference):
    _check_metrics(reference, 3)
    assert reference["resumed_from_epoch"] == 0
    assert reference["history"][-1]["train_loss"] < reference["history"][0]["train_loss"]
    assert reference["test_accuracy"] > 0.3  # 10 classes: chance is 0.1


@pytest.mark.parametrize("pool", ["stochastic", "gated"])
def test_nin_runs_with_random_and_learned_pooling(tmp_path, pool):
    metrics = run_nin(tmp_path, "--epochs", "1", "--pool", pool)
    _check_metrics(metrics, 1)
    assert f"pool = '{pool}'" in metrics["model"]


def test_resume_continues_exactly(reference, tmp_path):
    first = run_nin(tmp_path, "--epochs", "2", "--schedule-epochs", "3")
    assert len(first["history"]) == 2
    resumed = run_nin(tmp_path, "--epochs", "3")
    assert resumed["resumed_from_epoch"] == 2
    _check_metrics(resumed, 3)
    assert_same_history(resumed["history"], reference["history"])


def test_kill_9_mid_epoch_loses_at_most_that_epoch(reference, tmp_path):
    proc = subprocess.Popen(_command(tmp_path, "--epochs", "3"), env=_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints / "1").is_dir():
        assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    done = max(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())
    assert done < 3, "the kill came after the last epoch"
    resumed = run_nin(tmp_path, "--epochs", "3")
    assert resumed["resumed_from_epoch"] == done
    assert_same_history(resumed["history"], reference["history"])


def test_data_parallel_over_4_devices_matches_1(reference, tmp_path):
    # The reference's first epoch (same schedule). Only float reduction order differs, but over many
    # steps training amplifies such differences, so one epoch (179 steps) is compared.
    parallel = run_nin(tmp_path, "--epochs", "1", "--schedule-epochs", "3", devices=4)
    assert len(parallel["devices"]) == 4
    assert_same_history(parallel["history"], reference["history"][:1], rtol=1e-4)
