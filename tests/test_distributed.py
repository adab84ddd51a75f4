"""Multi-process training of examples/nin.py with jax.distributed on localhost (gloo CPU collectives).

One story, four runs on the digits data (batches of 32: 44 steps per epoch):

1. the reference: 1 process x 2 CPU devices, 2 epochs of a 3-epoch schedule;
2. 2 processes x 1 device started directly (as on two hosts); once epoch 1 is checkpointed,
   process 1 is killed with SIGKILL: process 0 must stop by itself, in time, naming process 1
   (JAX's coordination service and ``--heartbeat-timeout``; see ``distributed.py`` for the two
   ways it ends);
3. the same command rerun through ``examples/launch_local.py``: it resumes from epoch 1, both
   processes exit 0, one metrics.json says ``process_count == 2``, and the history equals the
   reference's: the 2 x 1 and 1 x 2 device runs differ only in float reduction order, which for a
   sum over 2 devices is none;
4. once more to epoch 3, interrupted by SIGINT (Ctrl-C) to the launcher: each process stops with one
   line, the launcher exits 130, the checkpoint of epoch 2 is still there.

A persistent compilation cache shared by the runs keeps their compilation cost down. Every process
is started in its own process group and killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NIN, LAUNCH = EXAMPLES / "nin.py", EXAMPLES / "launch_local.py"
sys.path.insert(0, str(EXAMPLES))

from launch_local import free_port  # noqa: E402

ARGS = (
    *("--dataset", "digits", "--width", "16", "16", "16", "--kernel", "3", "3", "3", "--dropout", "0.1"),
    *("--shift", "1", "--batch-size", "32", "--no-progress", "--schedule-epochs", "3"),
)
LOST_PEER_DEADLINE = 120  # seconds: the bound for the survivors to exit


def _env(cache, devices: int = 1) -> dict:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    return dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=" ".join(flags),
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )


def _popen(command, env, **kwargs):
    return subprocess.Popen(command, env=env, start_new_session=True, **kwargs)


def _kill(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("one_process")
    command = [sys.executable, str(NIN), *ARGS, "--epochs", "2", "--out", str(out)]
    proc = subprocess.run(command, env=_env(cache, devices=2), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "metrics.json").read_text())


def test_lost_peer_then_resume_and_interrupt_with_the_launcher(reference, cache, tmp_path):
    out = tmp_path / "run"
    address = f"127.0.0.1:{free_port()}"
    procs = []
    try:
        for rank in range(2):
            flags = ["--coordinator-address", address, "--num-processes", "2", "--process-id", str(rank)]
            command = [sys.executable, str(NIN), *ARGS, "--epochs", "3", "--out", str(out), "--heartbeat-timeout", "5", *flags]
            procs.append(_popen(command, _env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "1").is_dir():
            assert all(p.poll() is None for p in procs), "a process ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        os.killpg(procs[1].pid, signal.SIGKILL)
        killed = time.monotonic()
        _, err = procs[0].communicate(timeout=LOST_PEER_DEADLINE)
        waited = time.monotonic() - killed
    finally:
        _kill(procs)
    assert procs[0].returncode != 0 and waited < LOST_PEER_DEADLINE
    # Whether the failure surfaced in Python (a gloo all-reduce) or the runtime ended the process
    # (a peer lost between collectives), stderr ends with one line naming process 1, no stack trace.
    assert err.endswith("\n") and err.splitlines()[-1].startswith("error: process 0 of 2 stops: lost process 1 ("), err[-3000:]
    assert "Traceback" not in err and "Check failure stack trace" not in err and "    @ " not in err
    done = max(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert done < 3, "the kill came after the last epoch"

    # Rerun through the launcher: resume, finish 2 epochs, as the 1-process x 2-device reference.
    command = [sys.executable, str(LAUNCH), "-n", "2", "--", str(NIN), *ARGS, "--epochs", "2", "--out", str(out)]
    launcher = _popen(command, _env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = launcher.communicate(timeout=300)
    finally:
        _kill([launcher])
    assert launcher.returncode == 0, output[-3000:]
    assert f"[0] resuming from {out}: epoch 1 of 2 completed" in output
    assert "[0] test accuracy" in output and "[1] test accuracy" not in output  # only process 0 reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["process_count"] == 2 and len(metrics["devices"]) == 2 and metrics["resumed_from_epoch"] == 1
    assert len(reference["devices"]) == 2 and reference["process_count"] == 1
    for got, want in zip(metrics["history"], reference["history"], strict=True):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "learning_rate"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=f"epoch {want['epoch']} {key}")

    # Ctrl-C to the launcher while the run continues to epoch 3: forwarded, one line per process, exit 130.
    command = [sys.executable, str(LAUNCH), "-n", "2", "--", str(NIN), *ARGS, "--epochs", "3", "--out", str(out)]
    launcher = _popen(command, _env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        while not any(line.startswith("[0] resuming from") for line in lines):
            lines.append(launcher.stdout.readline())
            assert lines[-1], "".join(lines)[-3000:]
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=120)
    finally:
        _kill([launcher])
    output = "".join(lines) + output
    assert launcher.returncode == 130, output[-3000:]
    assert "launch_local: interrupted; stopping every process" in output and "Traceback" not in output
    for rank in range(2):
        assert any(line.startswith(f"[{rank}] interrupted") for line in output.splitlines()), output[-3000:]
    assert (out / "checkpoints" / "2").is_dir()


def test_launcher_stops_the_rest_when_a_process_dies(cache):
    # A long run; process 1 is killed as soon as it exists: the launcher names it, kills process 0
    # and exits 128 + SIGKILL.
    command = [sys.executable, str(LAUNCH), "-n", "2", "--", str(NIN), *ARGS, "--epochs", "50"]
    launcher = _popen(command, _env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = []
    try:
        while len(pids) < 2:
            line = launcher.stdout.readline()
            assert line, "the launcher ended early"
            if "started, pid" in line:
                pids.append(int(line.split("pid ")[1].split(",")[0]))
        os.kill(pids[1], signal.SIGKILL)
        _, err = launcher.communicate(timeout=60)
    finally:
        _kill([launcher])
    assert launcher.returncode == 128 + signal.SIGKILL
    assert "launch_local: error: process 1 was killed by SIGKILL; stopping process 0" in err
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_launcher_passes_on_a_bad_argument_exit_code(tmp_path):
    command = [sys.executable, str(LAUNCH), "-n", "2", "--", str(NIN), "--lr", "nan"]
    proc = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "nin.py: error: argument --lr: expected a finite number > 0, got 'nan'" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


# The XLA runtime's output when the coordination service ends a survivor (jaxlib 0.10, abridged).
RUNTIME_FATAL = """E1201 07:16:01.351571   18110 coordination_service.cc:1549] [153] Use error polling to propagate the \
following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):
1
The tasks have crashed. Check the task logs for an earlier error.
F1201 07:16:01.352324   18122 client.h:80] Terminating process because the JAX distributed service detected fatal errors. \
absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):
1
The tasks have crashed.
*** Check failure stack trace: ***
    @     0x7f306d340634  absl::lts_20260107::log_internal::LogMessage::SendToLog()
"""
LEADER_LOST = """E1201 07:16:36.165636   19666 coordination_service_agent.cc:289] Polled an error from coordination service.
F1201 07:16:36.165776   19666 client.h:80] Terminating process because the JAX distributed service detected fatal errors. \
absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted/died/restarted
*** Check failure stack trace: ***
"""


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("epoch 1\r" + RUNTIME_FATAL, "error: process 0 of 2 stops: lost process 1 (the JAX distributed runtime"),
        (LEADER_LOST, "error: process 0 of 2 stops: lost the coordinator (process 0) ("),
        ("E1201 07:16:01.3 1 coordination_service.cc:1] x\nerror: process 0 of 2 stops: lost process 1 (ValueError: y)\n", None),
        ("W1201 07:16:01.3 1 preemption_sync_manager.cc:147] just a warning\nbye\n", None),
    ],
)
def test_stderr_filter_condenses_the_runtime_failure(text, want):
    script = EXAMPLES / "_stderr_filter.py"
    proc = subprocess.run([sys.executable, str(script), "0", "2"], input=text.encode(), capture_output=True, timeout=60)
    err = proc.stderr.decode()
    if text.startswith("epoch 1\r"):
        assert err.startswith("epoch 1\r")  # output before the failure passes through, progress bars too
        err = err[len("epoch 1\r") :]
    if want is not None:
        assert err.count("\n") == 1 and err.startswith(want), err
    elif "error: process" in text:
        assert err == "error: process 0 of 2 stops: lost process 1 (ValueError: y)\n"  # the example's own line
    else:
        assert err == text  # held, but nothing failed: passed on unchanged


SAID = "interrupted in epoch 3: kept epoch 2; rerun the same command to resume\n"


@pytest.mark.parametrize(("before", "after"), [("", ""), ("", SAID), (SAID, "")])
def test_stderr_filter_reports_a_ctrl_c_not_a_lost_peer(before, after):
    # Ctrl-C reaches every process; process 0 exits at once, process 1 is still inside a compiled
    # step, and the runtime ends it for the lost coordinator before Python sees its KeyboardInterrupt.
    script = EXAMPLES / "_stderr_filter.py"
    proc = subprocess.Popen([sys.executable, str(script), "1", "2"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"epoch 3\n")
        proc.stdin.flush()
        assert proc.stderr.readline() == b"epoch 3\n"  # running, its SIGINT handler installed
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None, "the filter must outlive a Ctrl-C until the example's stderr closes"
        _, err = proc.communicate((before + LEADER_LOST + after).encode(), timeout=60)
    finally:
        _kill([proc])
    # One interrupt line: the example's own if it printed one, else the filter's; no lost peer.
    assert err.decode() == (before + after or "interrupted; rerun the same command to resume from the last checkpoint\n")
