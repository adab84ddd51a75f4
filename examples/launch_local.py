"""Runs an example as N cooperating processes on this machine: multi-host training on a laptop.

    python examples/launch_local.py -n 2 -- examples/nin.py --dataset digits --out runs/nin-2proc
    python examples/launch_local.py -n 2 --cpu-devices 2 -- examples/spp.py --out runs/spp-4dev

Starts N copies of the script with the same arguments plus ``--coordinator-address
127.0.0.1:<a free port> --num-processes N --process-id <i>`` (see ``distributed.py``); on a real
cluster, run those same flags on each host instead. Every line a process prints is shown prefixed
with its rank, ``[i] ``. Ctrl-C is forwarded to every process (each stops with one line, its last
checkpoint intact; rerun the same command to resume). If a process fails or is killed, the launcher
says which in one line, stops the others (SIGTERM, then SIGKILL after 10 s) and exits non-zero: the
code of the first failure (128 + the signal number for a killed one). Processes run in their own
process groups and die with the launcher (Linux).

``--cpu-devices K`` gives each process K CPU devices (``--xla_force_host_platform_device_count``);
the processes then form one mesh of N x K devices.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cli  # noqa: E402

GRACE_SECONDS = 10.0


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: its own process group, and SIGKILL when the launcher dies (Linux)."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # not ignored even if the launcher was started with it ignored
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _relay(rank: int, stream, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        text = line.decode(errors="replace").rstrip("\n").split("\r")[-1]  # a progress bar's last state
        with lock:
            sys.stdout.write(f"[{rank}] {text}\n")
            sys.stdout.flush()
    stream.close()


def _describe(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _signal_all(procs, sig) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass


def _stop_all(procs, first=signal.SIGTERM) -> None:
    """``first`` to every live process group, SIGKILL to those still alive after the grace period."""
    _signal_all(procs, first)
    deadline = time.monotonic() + GRACE_SECONDS
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_all(procs, signal.SIGKILL)
    for p in procs:
        p.wait()


def parse_args(argv=None) -> argparse.Namespace:
    parser = cli.Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--num-processes", type=cli.integer(1), required=True, help="processes to start (>= 1)")
    parser.add_argument("--cpu-devices", type=cli.integer(1), help="CPU devices per process (default: JAX's default, 1)")
    parser.add_argument("script", help="the example to run, e.g. examples/nin.py (put -- before it)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.script):
        parser.error(f"argument script: no such file {args.script!r}")
    taken = {"--coordinator-address", "--num-processes", "--process-id"} & {a.split("=")[0] for a in args.args}
    if taken:
        parser.error(f"the launcher sets {', '.join(sorted(taken))} itself; leave them out of the script's arguments")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)  # also when started in the background (SIGINT ignored)
    signal.signal(signal.SIGTERM, _interrupt)  # stopping the launcher stops its processes the same way
    n = args.num_processes
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.cpu_devices:
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={args.cpu_devices}"])
    lock = threading.Lock()
    procs, relays = [], []
    flags = ["--coordinator-address", address, "--num-processes", str(n)]
    try:
        for rank in range(n):
            command = [sys.executable, args.script, *args.args, *flags, "--process-id", str(rank)]
            p = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            procs.append(p)
            print(f"launch_local: process {rank} of {n} started, pid {p.pid}, coordinator {address}", flush=True)
        for rank, p in enumerate(procs):  # threads only after the forks (preexec_fn and threads do not mix)
            relays.append(threading.Thread(target=_relay, args=(rank, p.stdout, lock), daemon=True))
            relays[-1].start()
        while True:
            failed = [(rank, p.returncode) for rank, p in enumerate(procs) if p.poll() not in (None, 0)]
            if failed:
                rank, code = failed[0]
                alive = [str(r) for r, p in enumerate(procs) if p.poll() is None]
                stopping = f"; stopping process {', '.join(alive)}" if alive else ""
                print(f"launch_local: error: process {rank} {_describe(code)}{stopping}", file=sys.stderr, flush=True)
                _stop_all(procs)
                return code if code > 0 else 128 - code
            if all(p.poll() == 0 for p in procs):
                return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("launch_local: interrupted; stopping every process", file=sys.stderr, flush=True)
        _stop_all(procs, first=signal.SIGINT)
        return 130
    finally:
        _stop_all(procs, first=signal.SIGKILL)
        for t in relays:
            t.join(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
