"""Runs a test module's ``main()`` in a subprocess with 4 CPU devices and returns the JSON it prints.

The device count must be set before JAX starts, so multi-device checks run as
``python tests/<module>.py`` with ``--xla_force_host_platform_device_count=4`` and print one JSON
summary line, which the module's tests then assert on.
"""

import json
import os
import subprocess
import sys


def four_device_summary(script: str, timeout: int) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ,
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
    )
    proc = subprocess.run([sys.executable, script], check=False, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.splitlines()[-1])
