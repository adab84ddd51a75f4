"""Every example refuses bad command-line values before any work: one line on stderr, exit code 2.

Each bad value is checked in-process through the script's own ``parse_args`` (the code path of a
real run, in milliseconds), and a few as real subprocesses, to see that no Traceback escapes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import compare_pooling  # noqa: E402
import launch_local  # noqa: E402
import nin  # noqa: E402
import spp  # noqa: E402

SCRIPTS = {"nin": nin, "spp": spp, "compare_pooling": compare_pooling}

# (flags, a fragment of the one-line message); every script takes these.
COMMON = [
    (["--dataset", "bogus"], "argument --dataset: invalid choice: 'bogus'"),
    (["--batch-size", "100000"], "argument --batch-size: 100000 exceeds the 4000 training images of mnist5k"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1, got 0"),
    (["--epochs", "0"], "argument --epochs: expected an integer >= 1"),
    (["--epochs", "2.5"], "argument --epochs: expected an integer >= 1, got '2.5'"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["--lr", "-1"], "argument --lr: expected a finite number > 0, got '-1'"),
    (["--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
    (["--weight-decay", "-0.1"], "argument --weight-decay: expected a finite number >= 0"),
    (["--warmup-epochs", "-2"], "argument --warmup-epochs: expected a finite number >= 0, got '-2'"),
    (["--label-smoothing", "1"], "argument --label-smoothing: expected a finite number >= 0 and < 1"),
    (["--seed", "-1"], "expected an integer >= 0, got -1"),
    (["--epochs", "3", "--schedule-epochs", "2"], "argument --schedule-epochs: 2 must be >= --epochs (3)"),
    (["--optimizer", "lion"], "argument --optimizer: invalid choice: 'lion'"),
    (["--width", "0", "0", "0"], "argument --width: expected an integer >= 1, got 0"),
    (["--shift", "-1"], "argument --shift: expected an integer >= 0, got -1"),
    # multi-process flags
    (["--coordinator-address", "nohost", "--num-processes", "2", "--process-id", "0"], "expected HOST:PORT"),
    (["--coordinator-address", "h:70000", "--num-processes", "2", "--process-id", "0"], "a port in 1..65535"),
    (["--coordinator-address", "h:1234", "--num-processes", "2", "--process-id", "2"], "--process-id: 2 must be < --num"),
    (
        ["--coordinator-address", "h:1234", "--num-processes", "0", "--process-id", "0"],
        "--num-processes: expected an integer >= 1",
    ),
    (["--num-processes", "2"], "pass all three or none"),
    (["--heartbeat-timeout", "0"], "argument --heartbeat-timeout: expected an integer >= 1"),
]
NIN_ONLY = [
    (["--kernel", "0", "3", "3"], "argument --kernel: expected an integer >= 1, got 0"),
    (["--dropout", "1.5"], "argument --dropout: expected a finite number >= 0 and < 1, got '1.5'"),
    (["--pool", "bogus"], "argument --pool: invalid choice"),
]
SPP_ONLY = [
    (["--sizes", "2", "8"], "--sizes and --train-sizes must be >= 4 px"),
    (["--train-sizes", "0"], "argument --train-sizes: expected an integer >= 1, got 0"),
]
COMPARE_ONLY = [
    (["--methods", "max", "bogus"], "argument --methods: invalid choice: 'bogus'"),
    (["--seeds", "0", "-3"], "argument --seeds/--seed: expected an integer >= 0, got -3"),
    (["--kernel", "0", "3", "3"], "argument --kernel: expected an integer >= 1, got 0"),
    (["--dropout", "1.5"], "argument --dropout: expected a finite number >= 0 and < 1"),
]
CASES = [(name, flags, want) for name in SCRIPTS for flags, want in COMMON]
CASES += [("nin", f, w) for f, w in NIN_ONLY] + [("spp", f, w) for f, w in SPP_ONLY]
CASES += [("compare_pooling", f, w) for f, w in COMPARE_ONLY]


def _refused(script, argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        SCRIPTS[script].parse_args(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"{script}.py: error: "), err
    return err


@pytest.mark.parametrize(("script", "flags", "want"), CASES, ids=[f"{s}:{' '.join(f)}" for s, f, _ in CASES])
def test_bad_value_is_one_line_exit_2(script, flags, want, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])  # argparse names the program after argv[0]
    err = _refused(script, [*flags, "--out", str(tmp_path / "out")], capsys)
    assert want in err


@pytest.mark.parametrize("script", SCRIPTS)
def test_out_must_be_a_writable_directory(script, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert "exists and is not a directory" in _refused(script, ["--out", str(a_file)], capsys)
    assert "cannot write to directory" in _refused(script, ["--out", str(a_file / "below")], capsys)
    assert "cannot write to directory" in _refused(script, ["--out", "/proc/no/such/dir"], capsys)


def test_launcher_refuses_its_own_bad_values(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["launch_local.py"])
    for argv, want in [
        (["-n", "0", "examples/nin.py"], "argument -n/--num-processes: expected an integer >= 1, got 0"),
        (["-n", "2", str(tmp_path / "missing.py")], "no such file"),
        (["-n", "2", "--", str(EXAMPLES / "nin.py"), "--process-id", "1"], "the launcher sets --process-id itself"),
    ]:
        with pytest.raises(SystemExit) as stop:
            launch_local.parse_args(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and want in err, err


@pytest.mark.parametrize(
    ("script", "flags"),
    [
        ("nin.py", ["--dataset", "bogus"]),
        ("nin.py", ["--batch-size", "100000"]),
        ("spp.py", ["--lr", "nan"]),
        ("compare_pooling.py", ["--warmup-epochs", "-2", "--out", "/proc/x"]),
    ],
)
def test_subprocess_exit_2_without_traceback(script, flags):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *flags], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"{script}: error: argument --"), proc.stderr
