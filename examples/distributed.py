"""Multi-process (multi-host) runs of the examples with ``jax.distributed``: flags, start-up, lost peers.

API::

    add_args(parser)              # --coordinator-address HOST:PORT --num-processes N --process-id I --heartbeat-timeout S
    check_args(parser, args)      # one-line error, exit 2, for a bad address, N < 1, I >= N, a partial set
    initialize(args)              # jax.distributed.initialize(...) when asked to (or on a detected cluster)
    run(main, argv=None)          # calls main(argv); a lost peer or Ctrl-C ends it with one line

The flags are the names of :func:`jax.distributed.initialize`'s arguments. Every process runs the
same script with the same arguments except ``--process-id`` (``examples/launch_local.py`` does
that on one machine). Without the flags a run is a single process, unless JAX's own cluster
detection applies (a SLURM job with several tasks, a multi-host Cloud TPU slice): then
``jax.distributed.initialize()`` is called without arguments and finds them itself. On CPU the
cross-process collectives use gloo (``jax_cpu_collectives_implementation``), set before
initialisation.

Losing a process (``kill -9``, a crash, a lost host) ends the survivors in one of two ways, both
within ``--heartbeat-timeout`` seconds plus a few (JAX's ``heartbeat_timeout_seconds``; default
here 30, JAX's is 100), never a hang:

- if a survivor is inside a collective, gloo fails it at once with a Python exception; :func:`run`
  catches it, asks the coordination service which processes are alive (the answer comes when the
  heartbeat timeout has passed) and exits with code 1 and one line, ``error: process 0 of 2 stops:
  lost process 1 (...)``, leaving with ``os._exit`` so that no shutdown barrier waits for the dead;
- otherwise (between collectives, in a checkpoint barrier) the coordination service notices the
  missing heartbeats and the XLA runtime terminates the survivors itself (SIGABRT, exit code 134)
  with a long message ("Terminating process because the JAX distributed service detected fatal
  errors ... The following tasks are unhealthy (stopped sending heartbeats): 1") and a C++ stack
  trace, which Python cannot intercept (the runtime's ``missed_heartbeat_callback`` is not usable
  from Python in jaxlib 0.10). So in a multi-process run :func:`initialize` routes the process's
  stderr through ``_stderr_filter.py``, a small process that passes everything through until the
  runtime starts logging the failure and then prints one line instead: ``error: process 0 of 2
  stops: lost process 1 (the JAX distributed runtime ended this process); rerun ...``. The same
  happens when the coordinator (process 0) is lost ("lost the coordinator (process 0)"). After a
  Ctrl-C (which reaches every process, and the filter too) a process that the runtime ends because
  an interrupted peer left first says "interrupted; rerun ..." instead of naming a lost peer.

In every case the last checkpoint is intact: rerun the same command on every host to resume.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import jax

_heartbeat_timeout = 30  # as passed to jax.distributed.initialize by initialize()
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def add_args(parser) -> None:
    """Adds ``--coordinator-address``, ``--num-processes``, ``--process-id``, ``--heartbeat-timeout``."""
    from cli import integer

    group = parser.add_argument_group("multi-process runs (jax.distributed; see examples/launch_local.py)")
    add = group.add_argument
    add("--coordinator-address", metavar="HOST:PORT", help="process 0's address, the same on every process")
    add("--num-processes", type=integer(1), metavar="N", help="processes in the run (>= 1)")
    add("--process-id", type=integer(0), metavar="I", help="this process's rank, 0 <= I < N")
    add(
        "--heartbeat-timeout",
        type=integer(1),
        default=30,
        metavar="S",
        help="seconds without a heartbeat after which a process counts as lost (default %(default)s)",
    )


def check_args(parser, args) -> None:
    """``parser.error`` (one line, exit 2) unless the three flags are all absent or all valid together."""
    given = [args.coordinator_address is not None, args.num_processes is not None, args.process_id is not None]
    if any(given) and not all(given):
        parser.error("--coordinator-address, --num-processes and --process-id go together: pass all three or none")
    if not any(given):
        return
    match = _HOST_PORT.match(args.coordinator_address)
    if not match or not 1 <= int(match.group(2)) <= 65535:
        parser.error(
            f"argument --coordinator-address: expected HOST:PORT with a port in 1..65535, got {args.coordinator_address!r}"
        )
    if args.process_id >= args.num_processes:
        parser.error(f"argument --process-id: {args.process_id} must be < --num-processes ({args.num_processes})")


def _cluster_detected() -> bool:
    """A SLURM job step with several tasks or a multi-host Cloud TPU slice: JAX finds its own settings."""
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in os.environ:
        return True
    return len([h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1


def initialize(args) -> None:
    """Joins the multi-process run described by ``args`` (after :func:`check_args`), if any."""
    explicit = args.num_processes is not None
    if not explicit and not _cluster_detected():
        return
    if jax.distributed.is_initialized():
        return
    if os.environ.get("JAX_PLATFORMS", "cpu").split(",")[0] in ("cpu", ""):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    global _heartbeat_timeout
    _heartbeat_timeout = args.heartbeat_timeout
    kwargs = {"heartbeat_timeout_seconds": args.heartbeat_timeout}
    if explicit:
        kwargs.update(coordinator_address=args.coordinator_address, num_processes=args.num_processes)
        kwargs["process_id"] = args.process_id
    jax.distributed.initialize(**kwargs)
    if jax.process_count() > 1:
        _filter_stderr(jax.process_index(), jax.process_count())


def _filter_stderr(rank: int, count: int) -> None:
    """From now on this process's stderr (fd 2) goes through ``_stderr_filter.py`` (module docstring)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_stderr_filter.py")
    read, write = os.pipe()
    subprocess.Popen([sys.executable, script, str(rank), str(count)], stdin=read, close_fds=True)
    os.close(read)
    sys.stderr.flush()
    os.dup2(write, 2)
    os.close(write)


def _live_processes(timeout: float) -> set[int] | None:
    """The ranks the coordination service still counts alive, or None if it does not answer in time."""
    from jax._src import distributed as jax_distributed  # the client has no public accessor

    client = jax_distributed.global_state.client
    answer = {}

    def ask():
        try:
            answer["live"] = set(client.get_live_nodes(list(range(jax.process_count()))))
        except Exception:  # the coordinator itself is gone
            pass

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    return answer.get("live")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def run(main, argv=None):
    """``main(argv)``; in a multi-process run, a failure that lost a peer becomes one line and exit code 1.

    An error that every process raises alike (nobody lost) propagates as usual. Ctrl-C anywhere
    (also while a failure is being examined) ends with one line and exit code 130;
    :func:`training.train` says more when it is interrupted in its loop.
    """
    try:
        return _run(main, argv)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write("interrupted; rerun the same command to resume from the last checkpoint\n")
        sys.stderr.flush()
        if jax.distributed.is_initialized() and jax.process_count() > 1:
            os._exit(130)  # no shutdown barrier: the other processes may be gone already
        raise SystemExit(130) from None


def _run(main, argv):
    try:
        return main(argv)
    except Exception as error:
        if not jax.distributed.is_initialized() or jax.process_count() < 2:
            raise
        me, n = jax.process_index(), jax.process_count()
        live = _live_processes(_heartbeat_timeout + 15)
        if live is None:
            lost = "contact with the coordination service (process 0)"
        elif set(range(n)) - live:
            lost = "process " + ", ".join(map(str, sorted(set(range(n)) - live)))
        else:  # nobody lost: an ordinary error, shown in full
            raise
        sys.stdout.flush()
        sys.stderr.write(
            f"error: process {me} of {n} stops: lost {lost} ({_first_line(error)}); "
            "rerun the same command on every process to resume from the last checkpoint\n"
        )
        sys.stderr.flush()
        os._exit(1)
