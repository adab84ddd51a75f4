"""One training loop for every jaxpool example: data parallel, checkpointed, resumable.

API (used by ``nin.py``, ``spp.py``, ``compare_pooling.py`` and the notebook)::

    TrainConfig(epochs=10, batch_size=128, learning_rate=3e-3, weight_decay=1e-4, optimizer="adamw",
                schedule="cosine", warmup_epochs=1.0, schedule_epochs=None, label_smoothing=0.0,
                eval_batch_size=500, seed=0, out_dir=None, progress=True)
    train(model, data, config, *, transform=None, extra_metrics=None) -> dict   # the metrics.json content
    evaluate(model, variables, images, labels, *, batch_size=500, mesh=None) -> (loss, accuracy)
    data_mesh(devices=None) -> Mesh                  # 1-D mesh, axis "data"
    local_rows(mesh, global_rows) -> slice            # this process's rows of a batch-sharded global batch
    shard_batch(mesh, *arrays) -> tuple[jax.Array]   # global host batch -> batch-sharded jax.Arrays
    shard_local(mesh, global_rows, *local_arrays)    # this process's rows only -> batch-sharded jax.Arrays
    print_table(history)                             # the per-epoch history as a small table
    add_common_args(parser, **defaults) / finish_args(parser, args) / config_from_args(args) -> TrainConfig
        flags: --epochs --batch-size --lr --weight-decay --optimizer --schedule --warmup-epochs
               --schedule-epochs --label-smoothing --seed --dataset --out --no-progress, and
               distributed.add_args' --coordinator-address --num-processes --process-id --heartbeat-timeout

The example scripts import ``data``, ``training`` and ``pooling_choices`` as top-level modules
(``sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))``, as ``nin.py`` does), so they run
as ``python examples/<script>.py`` with no package install.

``model`` is a ``flax.linen`` Module called as ``model.apply(variables, x, train=bool,
rngs={"dropout": key})`` that returns logits ``(N, num_classes)``. Its ``"params"`` are trained;
every other collection (``"batch_stats"`` of BatchNorm) is updated as mutable state in training and
read-only in evaluation. Random layers (dropout, stochastic/mixed pooling) draw from the
``"dropout"`` rng.

``transform(key, images) -> images`` augments each training batch. It runs *outside* the compiled
train step, on the device-sharded batch, so it may return a different spatial size per batch (SPP's
random rescaling): the train step compiles once per distinct shape. Jit its array work yourself
(``data.random_shift`` is an example). ``extra_metrics(model, variables) -> dict`` is called after
the last epoch and merged into the returned metrics (e.g. SPP's accuracy per input size).

Optimisation: AdamW (decoupled weight decay on kernels only, not on biases or BatchNorm scales) or
SGD with Nesterov momentum; learning rate ``"cosine"`` (linear warmup, then cosine decay to
``1e-3 * lr``), ``"onecycle"`` (optax's cosine one-cycle) or ``"constant"`` (after warmup); cross
entropy with optional label smoothing. The schedule spans ``schedule_epochs`` (default ``epochs``):
set it larger to train a long schedule in several shorter sessions (``--epochs 5
--schedule-epochs 20``, then ``--epochs 10`` ...), each rerun continuing the same curve.

Data order and randomness are functions of ``(seed, epoch, step)`` only: epoch ``e`` visits the
training set in ``numpy.random.default_rng([seed, e]).permutation`` order (the incomplete last batch
is dropped, so every step has one shape; a different remainder is dropped each epoch), and step
``s`` uses the key ``fold_in(fold_in(key(seed), e), s)`` for dropout, random pooling and ``transform``.
Hence a resumed run equals an uninterrupted one.

Checkpoints: with ``out_dir``, :class:`checkpoints.Checkpoints` (orbax) saves
``out_dir/checkpoints/<epoch>`` after every completed epoch (train state, epoch, history, config and
a sha256 of the state; the last 2 are kept), written to a temporary directory and renamed when
complete, then read back and verified before older ones are deleted. Rerunning the same command with
the same ``out_dir`` restores the newest checkpoint that verifies (hash and finite values; a damaged
one is moved to ``out_dir/corrupt_checkpoints`` with a one-line warning) and continues; after
``kill -9`` at most the interrupted epoch is lost. A checkpoint of a different model or of a
different config (batch size, learning rate, seed ...) is refused with an error rather than silently
mixed in. ``out_dir/metrics.json`` is rewritten
(atomically) after every epoch: ``test_accuracy``, ``test_loss``, ``history`` (one entry per epoch:
``epoch, train_loss, train_accuracy, test_loss, test_accuracy, learning_rate, seconds``),
``epochs_completed``, ``config``, ``model`` (its repr), ``dataset``, ``source``, ``devices``, ``process_count``,
``resumed_from_epoch``, ``wall_seconds`` (this invocation) and ``extra_metrics``' keys at the end.

Faults: a non-finite training loss (checked every 10 steps and at the end of each epoch) stops the
run with a one-line error (``SystemExit``, exit code 1) and saves nothing from that epoch, so the
last checkpoint is the last good state. We stop rather than skip the step as optax's
``apply_if_finite`` does: a loss that becomes NaN in these small, deterministic runs means a
learning rate too high or broken data, and skipping would hide that, silently training on fewer and
fewer steps (or none); stopping says so at once and the rerun, with a lower ``--lr`` in a new
``--out``, or fixed data, starts from a good state. Ctrl-C stops with one line (exit code 130) naming
the last checkpoint, which is intact: saves are synchronous and verified before anything is deleted.

Data parallelism: one code path for 1 CPU, 8 TPU cores or many hosts. :func:`data_mesh` puts all
``jax.devices()`` on one mesh axis ``"data"``; every batch is a global ``jax.Array`` sharded along
its first axis (``NamedSharding(mesh, P("data"))``) and the parameters, BatchNorm statistics and
optimizer state are replicated (``P()``). The train step is one ``jax.jit`` program; XLA's SPMD
partitioner runs each device on its slice of the batch and inserts the all-reduce of gradients (and
of BatchNorm's batch statistics, which are therefore those of the global batch), so the numbers equal
a single-device run up to float reduction order. On a Colab TPU (``jax.devices()`` lists 8 cores)
the same script runs unchanged, 8-way data parallel; batch sizes must be divisible by the device
count. On several hosts (a TPU pod slice, a GPU cluster) call ``jax.distributed.initialize()`` first,
then run the same script on every host: ``jax.devices()`` then lists every host's devices, every host
computes the same batch order from the seed and gathers only its own rows of each global batch
(:func:`local_rows`), which ``jax.make_array_from_process_local_data`` places on its local devices:
no host reads or sends another's rows. Evaluation is global the same way (each host feeds its rows
of every test batch; the sums are all-reduced). Only process 0 prints and writes metrics.json;
orbax coordinates the checkpoint writes of all hosts. (The small datasets are loaded whole on every
host, which costs nothing here; for big data, read only the local rows.) To see it on a CPU, run
with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``, or as several processes with
``examples/launch_local.py`` (see ``distributed.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import sys
import threading
import time
import warnings

import checkpoints as ckpt
import cli
import data as datasets
import distributed
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

SCHEDULES = ("cosine", "onecycle", "constant")
OPTIMIZERS = ("adamw", "sgd")
# Config fields that may change between a run and its resumption; every other one must match.
RESUMABLE_CHANGES = ("epochs", "schedule_epochs", "eval_batch_size", "out_dir", "progress")


@dataclasses.dataclass
class TrainConfig:
    """Hyperparameters of :func:`train` (see the module docstring for their meaning)."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    schedule_epochs: int | None = None  # None: epochs
    label_smoothing: float = 0.0
    eval_batch_size: int = 500
    seed: int = 0
    out_dir: str | None = None
    progress: bool = True

    def __post_init__(self):
        for field in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule_epochs is not None and self.schedule_epochs < self.epochs:
            raise ValueError(f"schedule_epochs ({self.schedule_epochs}) must be >= epochs ({self.epochs}), or None")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        for field in ("weight_decay", "warmup_epochs"):
            if not (math.isfinite(getattr(self, field)) and getattr(self, field) >= 0):
                raise ValueError(f"{field} must be a finite number >= 0, got {getattr(self, field)}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    @property
    def horizon(self) -> int:
        """Epochs the learning-rate schedule spans."""
        return self.schedule_epochs or self.epochs


# ----------------------------------------------------------------------------------------------
# Devices


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: every device of every process)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices), ("data",))


def local_rows(mesh: Mesh, global_rows: int) -> slice:
    """The rows of a ``global_rows`` batch, sharded ``P("data")`` over ``mesh``, that this process's devices hold.

    One contiguous block (the mesh lists each process's devices together); all rows with one process.
    """
    index = NamedSharding(mesh, P("data")).addressable_devices_indices_map((global_rows,))
    starts = [s[0].indices(global_rows) for s in index.values()]
    return slice(min(s[0] for s in starts), max(s[1] for s in starts))


def shard_local(mesh: Mesh, global_rows: int, *local_arrays) -> tuple[jax.Array, ...]:
    """This process's rows (:func:`local_rows`) of global batches -> global ``jax.Array`` sharded on axis 0."""
    sharding = NamedSharding(mesh, P("data"))
    return tuple(
        jax.make_array_from_process_local_data(sharding, np.asarray(a), (global_rows, *np.shape(a)[1:])) for a in local_arrays
    )


def shard_batch(mesh: Mesh, *arrays) -> tuple[jax.Array, ...]:
    """Global batches (host arrays, the same on every process) -> global ``jax.Array`` sharded on axis 0.

    Each process passes only its own rows to ``jax.make_array_from_process_local_data``.
    """
    n = len(arrays[0])
    rows = local_rows(mesh, n)
    return shard_local(mesh, n, *(np.asarray(a)[rows] for a in arrays))


def _check_divisible(name: str, size: int, mesh: Mesh) -> None:
    if size % mesh.size:
        raise ValueError(f"{name} ({size}) must be divisible by the number of devices ({mesh.size})")


# ----------------------------------------------------------------------------------------------
# Losses, steps and evaluation


def _cross_entropy(logits, labels, smoothing: float = 0.0):
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), smoothing) if smoothing else None
    if targets is None:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return optax.softmax_cross_entropy(logits, targets)


@functools.partial(jax.jit, static_argnums=0)
def _eval_batch(model, variables, images, labels, mask):
    logits = model.apply(variables, images, train=False)
    loss = _cross_entropy(logits.astype(jnp.float32), labels)
    correct = logits.argmax(-1) == labels
    return jnp.sum(jnp.where(mask, loss, 0.0)), jnp.sum(correct & mask)


def evaluate(model, variables, images, labels, *, batch_size: int = 500, mesh: Mesh | None = None):
    """Mean cross entropy and accuracy of ``model`` (in inference mode) over every image.

    ``images`` ``(N, H, W, C)`` and ``labels`` ``(N,)`` are host arrays; batches of ``batch_size``
    (rounded up to a multiple of the device count) are sharded over ``mesh`` (default: all devices).
    The last batch is padded and masked, so all ``N`` images count and one shape is compiled. With
    several processes each gathers only its own rows of every batch; the sums are global.
    Returns Python floats ``(loss, accuracy)``.
    """
    mesh = data_mesh() if mesh is None else mesh
    batch_size = -(-batch_size // mesh.size) * mesh.size
    n = len(images)
    mine = local_rows(mesh, batch_size)
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    loss_sum, correct = 0.0, 0
    for start in range(0, n, batch_size):
        lo, hi = start + mine.start, start + mine.stop
        x, y = images[lo:hi], labels[lo:hi]  # short (or empty) only at the end of the data
        mask = np.arange(hi - lo) < len(x)
        pad = hi - lo - len(x)
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros((pad,), y.dtype)])
        batch_loss, batch_correct = _eval_batch(model, variables, *shard_local(mesh, batch_size, x, y, mask))
        loss_sum += float(batch_loss)
        correct += int(batch_correct)
    return loss_sum / n, correct / n


def _learning_rate(config: TrainConfig, steps_per_epoch: int):
    total = config.horizon * steps_per_epoch
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    lr = config.learning_rate
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 0), total, end_value=lr * 1e-3)
    if config.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(total, lr, pct_start=max(warmup, 1) / total)
    if warmup <= 0:
        return optax.constant_schedule(lr)
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])


def _optimizer(config: TrainConfig, schedule):
    decay_kernels = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    if config.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=config.weight_decay, mask=decay_kernels)
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay, mask=decay_kernels),
        optax.sgd(schedule, momentum=0.9, nesterov=True),
    )


def _make_train_step(model, tx, label_smoothing: float, mesh: Mesh):
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    def step(state, images, labels, key):
        model_state = state.get("model_state", {})

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, **model_state}, images, train=True, rngs={"dropout": key}, mutable=list(model_state)
            )
            logits = logits.astype(jnp.float32)
            return _cross_entropy(logits, labels, label_smoothing).mean(), (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        param_updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {"params": optax.apply_updates(state["params"], param_updates), "opt_state": opt_state}
        if model_state:
            new_state["model_state"] = dict(updates)
        return new_state, loss, jnp.sum(logits.argmax(-1) == labels)

    return jax.jit(
        step,
        in_shardings=(replicated, batched, batched, replicated),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=0,
    )


def _init_state(model, tx, sample, seed: int):
    """Train state ``{"params", "opt_state"[, "model_state"]}`` on the host (replicated later)."""
    variables = model.init({"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}, sample, train=False)
    variables = dict(variables)
    params = variables.pop("params")
    state = {"params": params, "opt_state": tx.init(params)}
    if variables:
        state["model_state"] = variables
    return state


def _variables(state) -> dict:
    return {"params": state["params"], **state.get("model_state", {})}


# ----------------------------------------------------------------------------------------------
# Checkpoints and metrics


def _write_json(path: str, content: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2)
    os.replace(tmp, path)


def _check_resumable(meta: dict, config: TrainConfig, model_repr: str, out_dir: str) -> None:
    if meta.get("model") != model_repr:
        raise SystemExit(
            f"error: {out_dir} holds a checkpoint of a different model:\n{meta.get('model')}\n"
            f"this run builds:\n{model_repr}\nuse another --out directory (or delete that one) to start afresh"
        )
    saved, now = meta["config"], dataclasses.asdict(config)
    changed = {k: (saved.get(k), v) for k, v in now.items() if k not in RESUMABLE_CHANGES and saved.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise SystemExit(
            f"error: {out_dir} holds a checkpoint made with different settings ({details}); rerun with the same "
            "settings to resume, or use another --out directory to start afresh"
        )
    saved_horizon = saved.get("schedule_epochs") or saved["epochs"]
    if saved_horizon != config.horizon:
        warnings.warn(
            f"resuming with a learning-rate schedule of {config.horizon} epochs where the checkpoint followed one of "
            f"{saved_horizon}: the learning rate jumps; pass --schedule-epochs to plan runs in several parts",
            stacklevel=3,
        )


def print_table(history: list[dict]) -> None:
    """The per-epoch history as a small table on stdout."""
    print(f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'test loss':>9} {'test acc':>8} {'lr':>9} {'s':>6}")
    for h in history:
        print(
            f"{h['epoch']:>5} {h['train_loss']:>10.4f} {h['train_accuracy']:>9.4f} {h['test_loss']:>9.4f} "
            f"{h['test_accuracy']:>8.4f} {h['learning_rate']:>9.2e} {h['seconds']:>6.1f}"
        )


# ----------------------------------------------------------------------------------------------
# The loop


def _epoch_order(config: TrainConfig, epoch: int, n: int) -> np.ndarray:
    """The training images' order in ``epoch``: a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([config.seed, epoch]).permutation(n)


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite (see the module docstring: the run stops)."""


def _check_finite(loss_sum, epoch: int, step: int) -> float:
    value = float(loss_sum)
    if not math.isfinite(value):
        raise NonFiniteLoss(f"the training loss became {value} in epoch {epoch + 1} by step {step}")
    return value


@contextlib.contextmanager
def _interrupts_between_steps():
    """Yields ``check()``, which raises ``KeyboardInterrupt`` if Ctrl-C (SIGINT) came since the last
    check: the training loop stops between steps, at a point it handles, rather than wherever Python
    happens to be — a ``KeyboardInterrupt`` raised inside a finalizer (an asynchronous checkpoint's
    event loop being collected) is printed as ignored and lost, and training went on (seen once
    under load in CI). A second Ctrl-C before the check interrupts at once. Only in the main thread
    and where SIGINT is not ignored; elsewhere ``check`` does nothing."""
    pending: list[int] = []

    def record(signum, frame):
        if pending:  # pressed again: do not wait for the step
            raise KeyboardInterrupt
        pending.append(signum)

    def check():
        if pending:
            pending.clear()
            raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield lambda: None
        return
    previous = signal.signal(signal.SIGINT, record)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


def _train_epoch(train_step, state, data, config, epoch: int, mesh, transform, bar, interrupted=lambda: None):
    """One pass over the training set: ``(state, mean loss, accuracy)`` on the (augmented) batches.

    Each process gathers only its own rows of every batch. Raises :class:`NonFiniteLoss`.
    """
    steps = len(data.train_images) // config.batch_size
    order = _epoch_order(config, epoch, len(data.train_images))
    mine = local_rows(mesh, config.batch_size)
    epoch_key = jax.random.fold_in(jax.random.key(config.seed), epoch)
    loss_sum, correct = jnp.zeros(()), jnp.zeros((), jnp.int32)
    for s in range(steps):
        idx = order[s * config.batch_size : (s + 1) * config.batch_size][mine]
        images, labels = shard_local(mesh, config.batch_size, data.train_images[idx], data.train_labels[idx])
        key = jax.random.fold_in(epoch_key, s)
        if transform is not None:
            images = transform(jax.random.fold_in(key, 1), images)
        state, loss, batch_correct = train_step(state, images, labels, key)
        loss_sum, correct = loss_sum + loss, correct + batch_correct
        bar.update(1)
        interrupted()
        if s % 10 == 9:
            mean = _check_finite(loss_sum, epoch, s + 1) / (s + 1)
            bar.set_postfix(loss=f"{mean:.3f}", acc=f"{int(correct) / ((s + 1) * config.batch_size):.3f}")
    return state, _check_finite(loss_sum, epoch, steps) / steps, int(correct) / (steps * config.batch_size)


def train(model, data, config: TrainConfig, *, transform=None, extra_metrics=None) -> dict:
    """Trains ``model`` on ``data`` (a ``data.Dataset``) and returns the metrics dict (see module docstring).

    Resumes from ``config.out_dir`` when it holds a checkpoint of the same model and settings.
    """
    started = time.perf_counter()
    mesh = data_mesh()
    _check_divisible("batch_size", config.batch_size, mesh)
    steps_per_epoch = len(data.train_images) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size ({config.batch_size}) exceeds the {len(data.train_images)} training images")
    lead = jax.process_index() == 0
    schedule = _learning_rate(config, steps_per_epoch)
    tx = _optimizer(config, schedule)
    replicated = NamedSharding(mesh, P())
    sample = jnp.asarray(data.train_images[:1])
    init = jax.jit(lambda: _init_state(model, tx, sample, config.seed))  # one compile, not one per op
    model_repr = repr(model)

    # Ctrl-C is recorded from here on and acted on at the checks (below and between steps): raised
    # wherever Python was (a checkpoint restore's finalizers), it could be lost and training go on.
    interrupts = contextlib.ExitStack()
    interrupted = interrupts.enter_context(_interrupts_between_steps())
    try:
        history, start_epoch, checkpoints = [], 0, None
        if config.out_dir:
            os.makedirs(config.out_dir, exist_ok=True)
            checkpoints = ckpt.Checkpoints(config.out_dir)
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), jax.eval_shape(init))
            resumable = lambda meta: _check_resumable(meta, config, model_repr, config.out_dir)  # noqa: E731
            restored = checkpoints.restore_latest(abstract, resumable)
            if restored is not None:
                state, meta = restored
                history, start_epoch = meta["history"], meta["epoch"]
                if lead:
                    print(f"resuming from {config.out_dir}: epoch {start_epoch} of {config.epochs} completed")
        if start_epoch == 0:
            state = jax.device_put(init(), replicated)

        def metrics(final: bool) -> dict:
            last = history[-1] if history else {}
            out = {
                "test_accuracy": last.get("test_accuracy"),
                "test_loss": last.get("test_loss"),
                "epochs_completed": len(history),
                "history": history,
                "config": dataclasses.asdict(config),
                "model": model_repr,
                "dataset": data.name,
                "source": data.source,
                "num_train": len(data.train_images),
                "num_test": len(data.test_images),
                "devices": [str(d) for d in jax.devices()],
                "process_count": jax.process_count(),
                "resumed_from_epoch": start_epoch,
                "wall_seconds": time.perf_counter() - started,
            }
            if final and extra_metrics is not None:
                out.update(extra_metrics(model, _variables(state)))
            return out

        train_step = _make_train_step(model, tx, config.label_smoothing, mesh)
        total_steps = (config.epochs - start_epoch) * steps_per_epoch
        bar = tqdm(total=total_steps, disable=not (config.progress and lead), unit="step", dynamic_ncols=True)
        interrupted()
    except BaseException:
        interrupts.close()
        if checkpoints is not None:
            checkpoints.close()
        raise
    epoch = start_epoch
    try:
        with interrupts:
            for epoch in range(start_epoch, config.epochs):
                t0 = time.perf_counter()
                bar.set_description(f"epoch {epoch + 1}/{config.epochs}")
                state, train_loss, train_acc = _train_epoch(
                    train_step, state, data, config, epoch, mesh, transform, bar, interrupted
                )
                test_loss, test_acc = evaluate(
                    model, _variables(state), data.test_images, data.test_labels, batch_size=config.eval_batch_size, mesh=mesh
                )
                interrupted()
                bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{train_acc:.3f}", test_acc=f"{test_acc:.3f}")
                history.append(
                    {
                        "epoch": epoch + 1,
                        "train_loss": train_loss,
                        "train_accuracy": train_acc,
                        "test_loss": test_loss,
                        "test_accuracy": test_acc,
                        "learning_rate": float(schedule((epoch + 1) * steps_per_epoch - 1)),
                        "seconds": time.perf_counter() - t0,
                    }
                )
                if checkpoints is not None:
                    meta = {"epoch": epoch + 1, "history": history, "config": dataclasses.asdict(config), "model": model_repr}
                    checkpoints.save(epoch + 1, state, meta)
                    if lead:
                        _write_json(os.path.join(config.out_dir, "metrics.json"), metrics(final=False))
    except (NonFiniteLoss, KeyboardInterrupt) as stop:
        bar.close()
        last = checkpoints and checkpoints.latest_verified
        kept = f"the last checkpoint, epoch {last}, in {config.out_dir} is intact" if last else "no checkpoint was saved"
        if isinstance(stop, KeyboardInterrupt):
            print(f"interrupted in epoch {epoch + 1}: {kept}; rerun the same command to resume", file=sys.stderr)
            if jax.process_count() > 1:
                sys.stderr.flush()
                os._exit(130)  # no shutdown barrier: the other processes may be gone already
            raise SystemExit(130) from None
        raise SystemExit(
            f"error: {stop} (learning rate {float(schedule(epoch * steps_per_epoch)):.3g} at its start); nothing of that "
            f"epoch was saved and {kept}; lower --lr (in a new --out) or check the data"
        ) from None
    finally:
        bar.close()
        if checkpoints is not None:
            checkpoints.close()

    result = metrics(final=True)
    if lead:
        if config.out_dir:
            _write_json(os.path.join(config.out_dir, "metrics.json"), result)
        print_table(history)
        print(f"test accuracy {result['test_accuracy']:.4f} on {result['num_test']} {data.name} test images")
    return result


# ----------------------------------------------------------------------------------------------
# Command line


def add_common_args(parser: argparse.ArgumentParser, **defaults) -> argparse.ArgumentParser:
    """Adds the shared flags, each with its range checked by argparse (see ``cli.py``), and the
    multi-process flags of ``distributed.py``; ``defaults`` (TrainConfig field names, plus ``dataset``)
    override the defaults. Call :func:`finish_args` on the parsed arguments."""
    d = {**dataclasses.asdict(TrainConfig()), "dataset": "mnist5k", **defaults}
    add = parser.add_argument
    add("--epochs", type=cli.integer(1), default=d["epochs"], help="epochs to train (default %(default)s)")
    add("--batch-size", type=cli.integer(1), default=d["batch_size"], help="global batch size (default %(default)s)")
    add("--lr", type=cli.real(0, open_low=True), default=d["learning_rate"], help="peak learning rate (default %(default)s)")
    add("--weight-decay", type=cli.real(0), default=d["weight_decay"], help="decoupled weight decay (default %(default)s)")
    add("--optimizer", choices=OPTIMIZERS, default=d["optimizer"], help="default %(default)s")
    add("--schedule", choices=SCHEDULES, default=d["schedule"], help="learning-rate schedule (default %(default)s)")
    add("--warmup-epochs", type=cli.real(0), default=d["warmup_epochs"], help="linear warmup (default %(default)s)")
    add(
        "--schedule-epochs",
        type=cli.integer(1),
        default=d["schedule_epochs"],
        help="epochs the schedule spans (default: --epochs); larger to train in several parts",
    )
    smoothing = cli.real(0, 1, open_high=True)
    add("--label-smoothing", type=smoothing, default=d["label_smoothing"], help="in [0, 1) (default %(default)s)")
    add("--seed", type=cli.integer(0), default=d["seed"], help="init, data order and randomness (default %(default)s)")
    add(
        "--dataset",
        choices=datasets.NAMES,
        default=d["dataset"],
        help="mnist5k (offline), digits (offline), cifar10 (online); default %(default)s",
    )
    add("--out", default=d["out_dir"], help="directory for metrics.json and checkpoints; rerun to resume")
    add("--no-progress", action="store_true", help="no progress bar")
    distributed.add_args(parser)
    return parser


def finish_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Checks the shared flags together (one line and exit 2 on a bad combination), then joins the
    multi-process run if one is asked for (:func:`distributed.initialize`) and checks the batch size
    against the devices. Everything before any data is loaded or any model is built."""
    if args.schedule_epochs is not None and args.schedule_epochs < args.epochs:
        parser.error(f"argument --schedule-epochs: {args.schedule_epochs} must be >= --epochs ({args.epochs})")
    train_size = datasets.TRAIN_SIZES[args.dataset]
    if args.batch_size > train_size:
        parser.error(f"argument --batch-size: {args.batch_size} exceeds the {train_size} training images of {args.dataset}")
    cli.check_out_dir(parser, args.out)
    distributed.check_args(parser, args)
    distributed.initialize(args)
    devices = jax.device_count()
    if args.batch_size % devices:
        parser.error(f"argument --batch-size: {args.batch_size} must be a multiple of the {devices} devices")
    return args


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig named by the flags of :func:`add_common_args`."""
    try:
        return TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            weight_decay=args.weight_decay,
            optimizer=args.optimizer,
            schedule=args.schedule,
            warmup_epochs=args.warmup_epochs,
            schedule_epochs=args.schedule_epochs,
            label_smoothing=args.label_smoothing,
            seed=args.seed,
            out_dir=args.out,
            progress=not args.no_progress,
        )
    except ValueError as e:  # finish_args and the flags' types check the same ranges first
        raise SystemExit(f"error: {e}") from None
