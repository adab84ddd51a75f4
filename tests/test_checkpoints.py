"""Training faults in examples/training.py and examples/checkpoints.py: damaged checkpoints, NaN losses, Ctrl-C.

A small dense classifier on scikit-learn's 8x8 digits trains in-process in about a second per
epoch. An uninterrupted 3-epoch run is the reference: every faulty run, once resumed, must
reproduce its history, which shows that the state it resumed from was the good one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
from pathlib import Path

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import checkpoints  # noqa: E402
import data  # noqa: E402
import training  # noqa: E402


class Dense(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(32)(x.reshape(len(x), -1)))
        return nn.Dense(10)(nn.Dropout(0.1, deterministic=not train)(x))


MODEL = Dense()
CONFIG = training.TrainConfig(epochs=3, batch_size=64, learning_rate=3e-3, warmup_epochs=0.5, progress=False)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def train(digits, out, epochs=3, transform=None, **changes):
    config = dataclasses.replace(CONFIG, epochs=epochs, schedule_epochs=3, out_dir=str(out), **changes)
    return training.train(MODEL, digits, config, transform=transform)


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    return train(digits, tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def two_epochs(digits, tmp_path_factory):
    """A run stopped after 2 of 3 epochs: checkpoints 1 and 2."""
    out = tmp_path_factory.mktemp("two")
    train(digits, out, epochs=2)
    return out


def same_history(got, want):
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for g, w in zip(got, want):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "learning_rate"):
            np.testing.assert_allclose(g[key], w[key], rtol=1e-6, err_msg=f"epoch {w['epoch']} {key}")


def _data_files(step_dir: Path) -> list[Path]:
    """The state's array data files (ocdbt ``d/`` chunks), largest first."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no data files under {step_dir}"
    return sorted(files, key=lambda p: -p.stat().st_size)


def _flip(step_dir):
    path = _data_files(step_dir)[0]
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    path.write_bytes(bytes(raw))


def _truncate(step_dir):
    path = _data_files(step_dir)[0]
    os.truncate(path, path.stat().st_size // 2)


def _break_meta(step_dir):
    (step_dir / "meta" / "metadata").write_text('{"epoch": 2, "hist')


def _break_array_metadata(step_dir):
    (step_dir / "state" / "_METADATA").write_bytes(b"\x00garbage")


def _delete_data(step_dir):
    for path in _data_files(step_dir):
        path.unlink()


@pytest.mark.parametrize("damage", [_flip, _truncate, _break_meta, _break_array_metadata, _delete_data])
def test_damaged_newest_checkpoint_falls_back_to_the_last_good_one(damage, digits, two_epochs, reference, tmp_path, capfd):
    out = tmp_path / "run"
    shutil.copytree(two_epochs, out)
    damage(out / "checkpoints" / "2")
    capfd.readouterr()
    resumed = train(digits, out)
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(err) == 2 and "checkpoint of epoch 2 failed verification" in err[0], err
    assert "resuming from the newest checkpoint that verifies, epoch 1" in err[1]
    assert resumed["resumed_from_epoch"] == 1
    same_history(resumed["history"], reference["history"])
    assert (out / "corrupt_checkpoints" / "2").is_dir()  # kept for inspection, out of orbax's way
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]  # redone


def test_no_checkpoint_verifies_starts_afresh(digits, two_epochs, reference, tmp_path, capfd):
    out = tmp_path / "run"
    shutil.copytree(two_epochs, out)
    for step in ("1", "2"):
        _delete_data(out / "checkpoints" / step)
    capfd.readouterr()
    fresh = train(digits, out)
    assert "starting afresh" in capfd.readouterr().err
    assert fresh["resumed_from_epoch"] == 0
    same_history(fresh["history"], reference["history"])


def test_old_checkpoints_are_pruned_only_after_a_verified_save(digits, reference, tmp_path):
    # keep=2 with 3 epochs: epoch 1 is deleted once epoch 3 is saved and verified, not before.
    out = tmp_path / "run"
    seen = []

    def watch(key, images):
        steps = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
        if not seen or seen[-1] != steps:
            seen.append(steps)
        return images

    train(digits, out, transform=watch)
    assert seen == [[], [1], [1, 2]]
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]


def test_digest_refuses_non_finite_and_tells_states_apart():
    state = {"w": np.ones((2, 3), np.float32), "count": np.int32(4)}
    assert checkpoints.digest(state) == checkpoints.digest({k: v.copy() for k, v in state.items()})
    changed = {**state, "w": np.nextafter(state["w"], 2, dtype=np.float32)}
    assert checkpoints.digest(changed) != checkpoints.digest(state)
    with pytest.raises(ValueError, match=r"\['w'\] holds non-finite values"):
        checkpoints.digest({**state, "w": np.full((2, 3), np.nan, np.float32)})


def _after(steps, action):
    """A ``transform`` that runs ``action(images)`` from training step ``steps`` on."""
    calls = []

    def transform(key, images):
        calls.append(1)
        return action(images) if len(calls) > steps else images

    return transform


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(digits, reference, tmp_path, capfd):
    out = tmp_path / "run"
    steps_per_epoch = len(digits.train_images) // CONFIG.batch_size
    poison = _after(steps_per_epoch + 5, lambda images: images * jnp.nan)  # broken data in epoch 2
    with pytest.raises(SystemExit) as stop:
        train(digits, out, transform=poison)
    message = str(stop.value.code)
    assert "\n" not in message and message.startswith("error: the training loss became nan in epoch 2")
    assert "the last checkpoint, epoch 1," in message and "is intact" in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]
    capfd.readouterr()
    resumed = train(digits, out)  # the kept checkpoint is the good state
    assert resumed["resumed_from_epoch"] == 1
    same_history(resumed["history"], reference["history"])


def test_ctrl_c_exits_with_one_line_and_the_checkpoint_intact(digits, reference, tmp_path, capfd):
    out = tmp_path / "run"
    steps_per_epoch = len(digits.train_images) // CONFIG.batch_size

    def interrupt(images):  # a real SIGINT, as Ctrl-C sends
        os.kill(os.getpid(), signal.SIGINT)
        return images

    capfd.readouterr()
    with pytest.raises(SystemExit) as stop:
        train(digits, out, transform=_after(steps_per_epoch + 3, interrupt))
    assert stop.value.code == 130
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted in epoch 2: the last checkpoint, epoch 1,"), err
    resumed = train(digits, out)
    assert resumed["resumed_from_epoch"] == 1
    same_history(resumed["history"], reference["history"])


def test_train_sizes_match_the_data():
    for name in ("mnist5k", "digits"):
        assert data.TRAIN_SIZES[name] == len(data.load(name).train_images)
