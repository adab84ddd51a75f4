"""XLA alone: which strided windows over a spatially sharded axis make the SPMD partitioner gather.

No jaxpool here: a max window over H of a (4, 16, 16, 4) input sharded over H on 4 CPU devices,
forward+backward (``jit(grad)``), three ways:

* ``reduce_window``: ``lax.reduce_window`` (flax.linen's pooling);
* ``strided slices``: the window's taps as strided slices of the padded input;
* ``phase view``: the axis padded to a stride multiple and reshaped to (rows, stride) — the form
  jaxpool's taps take (``jaxpool._taps.Taps``); 16 is padded to 18 for stride 3.

    python benchmarks/xla_strided_gathers.py

Measured 2026-12-01 (jax 0.10.2, 4 forced CPU devices), all-gathers / collective-permutes:

| window | reduce_window | strided slices | phase view |
|---|---|---|---|
| 4/3 pad 0 (16 -> 5) | 0 / 6 | 0 / 12 | 2 / 5 |
| 12/3 pad 6 (16 -> 6) | 3 / 4 | 0 / 29 | 2 / 21 |
| 3/2 pad 1 (16 -> 8) | 0 / 6 | 0 / 8 | 0 / 2 |

The phase view gathers exactly when the stride does not divide the axis (18 rows over 4
devices); a window longer than a shard (12/3 over shards of 4) makes reduce_window gather too.
Strided slices exchange halos only, at a single-device cost (their transposes are interior pads:
adaptive avg 50 -> 7 forward+backward 6 -> 23 ms in one process), which is why jaxpool keeps the
phase view for ragged sizes.
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
CASES = ((4, 3, 0), (12, 3, 6), (3, 2, 1))  # (window, stride, padding) along H


def _out(k, s, p):
    return (SHAPE[1] + 2 * p - k) // s + 1


def reduce_window(x, k, s, p):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, 1, 1), (1, s, 1, 1), ((0, 0), (p, p), (0, 0), (0, 0)))


def strided_slices(x, k, s, p):
    xp = jnp.pad(x, ((0, 0), (p, p), (0, 0), (0, 0)), constant_values=-jnp.inf)
    last = (_out(k, s, p) - 1) * s
    taps = [lax.slice_in_dim(xp, t, t + last + 1, s, axis=1) for t in range(k)]
    return jnp.max(jnp.stack(taps), axis=0)


def phase_view(x, k, s, p):
    """As jaxpool's taps: the unpadded axis padded only to a stride multiple, viewed as (rows, s);
    tap ``t`` is phase ``(t - p) % s`` shifted by rows with one pad (negative = a slice)."""
    rows, out = -(-SHAPE[1] // s), _out(k, s, p)
    xp = jnp.pad(x, ((0, 0), (0, rows * s - SHAPE[1]), (0, 0), (0, 0)), constant_values=-jnp.inf)
    view = xp.reshape(SHAPE[0], rows, s, *SHAPE[2:])
    taps = []
    for t in range(k):
        q, phase = divmod(t - p, s)
        config = [(0, 0, 0), (-q, out - rows + q, 0), (0, 0, 0), (0, 0, 0)]
        taps.append(lax.pad(view[:, :, phase], -jnp.inf, config))
    return jnp.max(jnp.stack(taps), axis=0)


def collectives(fn, x, k, s, p) -> str:
    hlo = jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(fn(v, k, s, p))))).lower(x).compile().as_text()
    return " / ".join(str(len(re.findall(rf"\s{c}(-start)?\(", hlo))) for c in ("all-gather", "collective-permute"))


def main():
    mesh = Mesh(np.array(jax.devices()), ("x",))
    x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    x = jax.device_put(x, NamedSharding(mesh, PartitionSpec(None, "x")))
    print(f"jax {jax.__version__}, {len(jax.devices())} CPU devices, x {SHAPE} sharded over H, forward+backward")
    print("| window | reduce_window | strided slices | phase view |")
    print("|---|---|---|---|")
    for k, s, p in CASES:
        cells = [collectives(f, x, k, s, p) for f in (reduce_window, strided_slices, phase_view)]
        print(f"| {k}/{s} pad {p} (16 -> {_out(k, s, p)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
