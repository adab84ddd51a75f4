"""Smoke and unit tests of examples/spp.py, examples/compare_pooling.py and examples/colab_tpu.ipynb.

Tiny budgets on scikit-learn's 8x8 digits (offline): the scripts run end to end and write what
they promise; the notebook's cells execute in a real Jupyter kernel (the current interpreter).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)

import compare_pooling  # noqa: E402
import spp  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# spp.py


def test_spp_net_one_head_for_every_size():
    model = spp.SPPNet(10, widths=(4, 8))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    apply = jax.jit(model.apply)
    for size in (4, 13, 20):
        assert apply(variables, jnp.ones((3, size, size, 1))).shape == (3, 10)
    head_in = variables["params"]["Dense_0"]["kernel"].shape[0]
    assert head_in == 8 * (1 + 4 + 16)  # C * sum(level^2), whatever the input size


def test_random_rescale_draws_each_size_from_the_key():
    images = jnp.asarray(np.random.default_rng(0).random((2, 28, 28, 1)), jnp.float32)
    sizes = (12, 20, 36)
    drawn = [spp.random_rescale(jax.random.key(i), images, sizes).shape[1:3] for i in range(24)]
    assert set(drawn) == {(s, s) for s in sizes}
    again = spp.random_rescale(jax.random.key(5), images, sizes, max_shift=2)
    np.testing.assert_array_equal(again, spp.random_rescale(jax.random.key(5), images, sizes, max_shift=2))


def test_resize_keeps_constant_images_and_skips_the_native_size():
    x = jnp.full((2, 28, 28, 1), 0.25)
    for size in (16, 56):
        np.testing.assert_allclose(spp.resize(x, size), 0.25, atol=1e-6)
    assert spp.resize(x, 28) is x


def test_spp_script_smoke(tmp_path):
    out = tmp_path / "spp"
    argv = ["--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--width", "8", "8"]
    argv += ["--train-sizes", "8", "12", "--sizes", "8", "16", "--no-progress", "--out", str(out)]
    result = spp.main(argv)
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert set(metrics["accuracy_by_size"]) == {"8", "16"}
    assert metrics["train_sizes"] == [8, 12]
    assert set(metrics["baseline"]["accuracy_by_size"]) == {"8", "16"}
    assert metrics["epochs_completed"] == 1 and metrics["dataset"] == "digits"
    # At the native 8 px, rescaling is the identity: the per-size score is the training loop's own.
    assert metrics["accuracy_by_size"]["8"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["baseline"]["accuracy_by_size"]["8"] == pytest.approx(metrics["baseline"]["test_accuracy"])
    assert result["accuracy_by_size"] == metrics["accuracy_by_size"]
    assert _is_png(out / "accuracy_by_size.png")
    assert (out / "baseline" / "metrics.json").exists()


def test_spp_script_refuses_too_small_sizes(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        spp.main(["--dataset", "digits", "--sizes", "2", "8", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "must be >= 4 px" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# compare_pooling.py


def _fake_run(seed, test_acc, train_eval_acc, seconds, curve):
    history = [{"test_accuracy": a, "seconds": s} for a, s in zip(curve, seconds)]
    return {"config": {"seed": seed}, "test_accuracy": test_acc, "train_eval_accuracy": train_eval_acc, "history": history}


def test_summarize_statistics():
    runs = {
        "max": [
            _fake_run(0, 0.90, 0.95, [30.0, 2.0, 4.0], [0.5, 0.8, 0.90]),
            _fake_run(1, 0.94, 0.97, [20.0, 2.0, 2.0], [0.7, 0.8, 0.94]),
        ],
        "avg": [_fake_run(0, 0.95, 0.96, [9.0], [0.95])],
    }
    rows = compare_pooling.summarize(runs)
    assert [r["method"] for r in rows] == ["avg", "max"]  # best mean first
    avg, mx = rows
    assert mx["mean"] == pytest.approx(0.92) and mx["std"] == pytest.approx(0.04 / np.sqrt(2))  # sample std
    assert mx["gap"] == pytest.approx(0.04)  # mean of (0.05, 0.03)
    assert mx["seconds_per_epoch"] == pytest.approx(2.5)  # epoch 1 (compilation) left out: mean(3, 2)
    assert mx["curve"] == pytest.approx([0.6, 0.8, 0.92])
    assert avg["std"] == 0.0 and avg["seconds_per_epoch"] == 9.0  # one seed, one epoch


def test_compare_pooling_smoke(tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, os.path.join(EXAMPLES, "compare_pooling.py"), "--methods", "max", "avg", "--seeds", "0", "1"]
    cmd += ["--epochs", "1", "--dataset", "digits", "--width", "8", "8", "8", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "results.md").read_text()
    rows = re.findall(r"^\| (\w+) \| (\d\.\d{4}) \+- (\d\.\d{4}) \| ([+-]\d\.\d{4}) \| [\d.]+ \| (\d+) \|", table, re.M)
    assert sorted(r[0] for r in rows) == ["avg", "max"]
    assert all(r[4] == "2" for r in rows)
    results = json.loads((out / "results.json").read_text())
    for row, (method, mean, std, gap, _) in zip(results["methods"], rows):
        assert row["method"] == method and len(row["test_accuracy"]) == 2 and len(row["curve"]) == 1
        assert float(mean) == pytest.approx(np.mean(row["test_accuracy"]), abs=1e-4)
        assert float(std) == pytest.approx(np.std(row["test_accuracy"], ddof=1), abs=1e-4)
        assert float(gap) == pytest.approx(np.mean(row["train_eval_accuracy"]) - np.mean(row["test_accuracy"]), abs=1e-4)
    for method in ("max", "avg"):
        for seed in (0, 1):
            with open(out / "runs" / method / f"seed{seed}" / "metrics.json") as f:
                assert json.load(f)["config"]["seed"] == seed
    assert _is_png(out / "learning_curves.png")


# ---------------------------------------------------------------------------------------------
# colab_tpu.ipynb


def test_notebook_runs_on_cpu(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    out = tmp_path / "nb-run"
    settings = {"JAXPOOL_NB_DATASET": "digits", "JAXPOOL_NB_EPOCHS": "1", "JAXPOOL_NB_BATCH_SIZE": "60"}
    settings |= {"JAXPOOL_NB_WIDTH": "8", "JAXPOOL_NB_OUT": str(out), "JAXPOOL_NB_REPO": ROOT, "JAX_PLATFORMS": "cpu"}
    settings["JAXPOOL_NB_CACHE"] = str(tmp_path / "cache")  # nothing is downloaded: digits, and the checkout
    # 8 CPU devices stand in for a multi-chip TPU (Kaggle's v5e-8): the same data-parallel path, and batch rounding.
    settings["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    for key, value in settings.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    nb = nbformat.read(os.path.join(EXAMPLES, "colab_tpu.ipynb"), as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    # kernel "python3" is ipykernel's native spec, which jupyter_client launches with sys.executable.
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "stream"
    )
    assert "8 devices, global batch 64 = 8 per device" in text  # 60 rounded up to a multiple of 8
    assert "final test accuracy" in text
    with open(out / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["dataset"] == "digits" and metrics["epochs_completed"] == 1 and len(metrics["devices"]) == 8
    assert any(
        o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
        for c in nb.cells
        for o in c.get("outputs", [])
    )
    assert not (tmp_path / "cache").exists()  # inside a checkout nothing is downloaded or installed


def _notebook_cifar10_loader() -> dict:
    """The notebook's CIFAR-10 cell (tagged ``cifar10-loader``), executed: its functions and constants."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(os.path.join(EXAMPLES, "colab_tpu.ipynb"), as_version=4)
    (cell,) = [c for c in nb.cells if "cifar10-loader" in c.metadata.get("tags", [])]
    namespace = {"os": os, "urllib": __import__("urllib.request")}
    exec(compile(cell.source, "colab_tpu.ipynb cifar10-loader", "exec"), namespace)
    return namespace


def _fake_cifar10_archive(path) -> tuple[np.ndarray, np.ndarray]:
    """A tarball laid out as the official python archive (pickled dicts of uint8 rows), 2 images per batch."""
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)  # 5 train batches + test, 2 each
    labels = rng.integers(0, 10, 12)
    with tarfile.open(path, "w:gz") as tar:
        for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
            rows = images[2 * k : 2 * k + 2].transpose(0, 3, 1, 2).reshape(2, 3072)  # channel planes, as the archive
            blob = pickle.dumps({b"data": rows, b"labels": [int(v) for v in labels[2 * k : 2 * k + 2]]})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return images, labels


def test_notebook_cifar10_loader_verifies_and_parses(tmp_path):
    import hashlib

    loader = _notebook_cifar10_loader()
    assert loader["CIFAR10_URL"] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    images, labels = _fake_cifar10_archive(tmp_path / "fake.tar.gz")
    url = (tmp_path / "fake.tar.gz").as_uri()
    digest = hashlib.sha256((tmp_path / "fake.tar.gz").read_bytes()).hexdigest()
    with pytest.raises(RuntimeError, match="SHA-256 is .* not 0{64}"):
        loader["download_verified"](url, str(tmp_path / "dl" / "a.tar.gz"), "0" * 64)
    assert not (tmp_path / "dl" / "a.tar.gz").exists() and not (tmp_path / "dl" / "a.tar.gz.part").exists()
    with pytest.raises(RuntimeError, match="could not download"):
        loader["download_verified"]((tmp_path / "missing.tar.gz").as_uri(), str(tmp_path / "dl" / "b.tar.gz"), digest)
    path = loader["download_verified"](url, str(tmp_path / "dl" / "a.tar.gz"), digest)
    train_x, train_y, test_x, test_y = loader["read_cifar10"](path)
    assert train_x.shape == (10, 32, 32, 3) and test_x.shape == (2, 32, 32, 3) and train_x.dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([train_x, test_x]) * 255.0, images.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate([train_y, test_y]), labels)
    with pytest.raises(RuntimeError, match="not the CIFAR-10 python archive"):
        import tarfile

        with tarfile.open(tmp_path / "empty.tar.gz", "w:gz"):
            pass
        loader["read_cifar10"](str(tmp_path / "empty.tar.gz"))
