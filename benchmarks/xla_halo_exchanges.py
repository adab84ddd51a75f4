"""XLA alone: how many halo exchanges (collective-permutes) the SPMD partitioner emits for a
stride-1 k x k window over an H-sharded input, written as shifted taps versus as reduce_window.

No jaxpool here: the same window sum three ways, differentiated, on 4 CPU devices.

    python benchmarks/xla_halo_exchanges.py

* ``taps (one pad each)``: k*k shifted copies (one ``lax.pad`` each; negative = slice) — jaxpool's
  phase-view taps at stride 1;
* ``pad once + slices``: the input padded once, then k*k slices;
* ``reduce_window``: ``lax.reduce_window`` (flax.linen's pooling).

The partitioner exchanges a halo for every shifted operand on the sharded axis; reduce_window
exchanges once per direction. No formulation of shifted taps matches reduce_window.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"

import re

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SHAPE = (4, 16, 16, 4)


def taps_one_pad_each(x, k):
    lo = k // 2
    total = 0
    for a in range(k):
        for b in range(k):
            config = [(0, 0, 0), (lo - a, a - lo, 0), (lo - b, b - lo, 0), (0, 0, 0)]
            total = total + lax.pad(x, 0.0, config)
    return total


def pad_once_then_slices(x, k):
    lo = k // 2
    xp = lax.pad(x, 0.0, [(0, 0, 0), (lo, lo, 0), (lo, lo, 0), (0, 0, 0)])
    n = SHAPE[1]
    return sum(lax.slice(xp, (0, a, b, 0), (SHAPE[0], a + n, b + n, SHAPE[3])) for a in range(k) for b in range(k))


def reduce_window(x, k):
    lo = k // 2
    return lax.reduce_window(x, 0.0, lax.add, (1, k, k, 1), (1, 1, 1, 1), ((0, 0), (lo, lo), (lo, lo), (0, 0)))


def permutes(fn, x, k) -> int:
    hlo = jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(fn(v, k))))).lower(x).compile().as_text()
    return len(re.findall(r"\scollective-permute(-start)?\(", hlo))


def main():
    devices = np.array(jax.devices())
    x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    specs = {
        "H": (Mesh(devices, ("x",)), PartitionSpec(None, "x")),
        "HW": (Mesh(devices.reshape(2, 2), ("a", "b")), PartitionSpec(None, "a", "b")),
    }
    print(f"jax {jax.__version__}, {len(devices)} CPU devices, x {SHAPE}, forward+backward (jit(grad))")
    print("| window | sharding | taps (one pad each) | pad once + slices | reduce_window |")
    print("|---|---|---|---|---|")
    for k in (3, 5):
        for name, (mesh, spec) in specs.items():
            xs = jax.device_put(x, NamedSharding(mesh, spec))
            counts = [permutes(f, xs, k) for f in (taps_one_pad_each, pad_once_then_slices, reduce_window)]
            print(f"| {k}x{k}/1 | {name} | " + " | ".join(map(str, counts)) + " |")


if __name__ == "__main__":
    main()
