"""Spatially sharded inputs: every public op gives the unsharded values and gradients, and windowed
pooling communicates no more than flax.linen's ``reduce_window`` (halos only, no all-gather).

Runs itself in a 4-device subprocess (``--xla_force_host_platform_device_count=4``), as
tests/test_sharding.py does, and asserts on the JSON summary it prints. Shardings: H, W, channels,
and H and W at once (a 2x2 mesh); volumes (3-D pooling) over D, H, W, and D and H at once.
"""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpool
from tests.devices import four_device_summary
from tests.lowerings import doubling

SHAPE = (4, 16, 16, 4)  # channels_last: (batch, H, W, C)
KEY = jax.random.key(0)
SHARDINGS = {"H": (None, "x"), "W": (None, None, "x"), "C": (None, None, None, "x"), "HW": (None, "a", "b")}
VOLUME_SHAPE = (2, 8, 16, 16, 4)  # (batch, D, H, W, C)
VOLUME_SHARDINGS = {"D": (None, "x"), "H": (None, None, "x"), "W": (None, None, None, "x"), "DH": (None, "a", "b")}
GATHERS = ("all-gather", "all-to-all")


def _fl(kind, window, strides, pad=0):
    """flax.linen's pooling with PyTorch-style symmetric padding."""
    return lambda x: getattr(_flax(), kind)(x, window, strides, ((pad, pad),) * len(window))


def _unpool(x):
    y, idx = jaxpool.max_pool(x, (2, 2), return_indices=True)
    return jaxpool.max_unpool(y, idx, (16, 16))


def _unpool_in_windows(x):  # overlapping windows: repeated indices
    y, idx = jaxpool.max_pool(x, (3, 3), 2, 1, return_indices=True)
    return jaxpool.max_unpool(y, idx, (16, 16), window_shape=(3, 3), strides=2, padding=1)


OPS = {  # name -> (jaxpool op, flax.linen equivalent or None)
    "max_pool 3x3/2 p1": (lambda x: jaxpool.max_pool(x, (3, 3), 2, 1), _fl("max_pool", (3, 3), (2, 2), 1)),
    "max_pool 5x5/1 p2": (lambda x: jaxpool.max_pool(x, (5, 5), 1, 2), _fl("max_pool", (5, 5), (1, 1), 2)),
    "max_pool 2x2/2": (lambda x: jaxpool.max_pool(x, (2, 2)), _fl("max_pool", (2, 2), (2, 2))),
    "max_pool 16x16 (whole map)": (lambda x: jaxpool.max_pool(x, (16, 16)), _fl("max_pool", (16, 16), (16, 16))),
    "max_pool 9x9/1 (chained)": (lambda x: jaxpool.max_pool(x, (9, 9), 1, 4), _fl("max_pool", (9, 9), (1, 1), 4)),
    "max_pool 9x9/1 (doubling)": (doubling(lambda x: jaxpool.max_pool(x, (9, 9), 1, 4)), _fl("max_pool", (9, 9), (1, 1), 4)),
    # flax.linen's reduce_window all-gathers the padded input along a sharded H (3 all-gathers
    # forward+backward H-sharded, 6 with H and W): no permute count to compare (CEILINGS below)
    "max_pool 33x3/1 (runs, blocks)": (lambda x: jaxpool.max_pool(x, (33, 3), 1, (16, 1)), None),
    "max_pool 12x12/3 (blocked)": (lambda x: jaxpool.max_pool(x, (12, 12), 3, 6, return_indices=True), None),
    "max_pool 3x3/4 p1 (disjoint)": (lambda x: jaxpool.max_pool(x, (3, 3), 4, 1), _fl("max_pool", (3, 3), (4, 4), 1)),
    "max_pool 3x3/3 p1 (disjoint, ragged)": (lambda x: jaxpool.max_pool(x, (3, 3), 3, 1), _fl("max_pool", (3, 3), (3, 3), 1)),
    "max_pool indices": (lambda x: jaxpool.max_pool(x, (3, 3), 2, 1, return_indices=True), None),
    "min_pool": (lambda x: jaxpool.min_pool(x, (3, 3), 1, "SAME"), None),
    "avg_pool 3x3/2 p1": (lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1), _fl("avg_pool", (3, 3), (2, 2), 1)),
    "avg_pool 3x3/2 p1 vmapped": (jax.vmap(lambda v: jaxpool.avg_pool(v, (3, 3), 2, 1)), _fl("avg_pool", (3, 3), (2, 2), 1)),
    "avg_pool 9x9/1 (separable)": (lambda x: jaxpool.avg_pool(x, (9, 9), 1, 4), _fl("avg_pool", (9, 9), (1, 1), 4)),
    "avg_pool 5x5/2 p2 (passes)": (lambda x: jaxpool.avg_pool(x, (5, 5), 2, 2), _fl("avg_pool", (5, 5), (2, 2), 2)),
    "lp_pool": (lambda x: jaxpool.lp_pool(x, 2.0, (2, 2)), None),
    "gem_pool": (lambda x: jaxpool.gem_pool(jnp.abs(x), 3.0, (3, 3), 1, 1), None),
    "adaptive_avg_pool 16->5": (lambda x: jaxpool.adaptive_avg_pool(x, (5, 5)), None),
    "adaptive_max_pool 16->5": (lambda x: jaxpool.adaptive_max_pool(x, (5, 5), return_indices=True), None),
    "adaptive_max_pool 16->4": (lambda x: jaxpool.adaptive_max_pool(x, (4, 4)), None),
    "adaptive_max_pool 16->6": (lambda x: jaxpool.adaptive_max_pool(x, (6, 6)), None),
    "adaptive_max_pool 16->7": (lambda x: jaxpool.adaptive_max_pool(x, (7, 7)), None),
    "global_avg_pool": (lambda x: jaxpool.global_avg_pool(x), lambda x: jnp.mean(x, axis=(1, 2))),
    "global_max_pool": (lambda x: jaxpool.global_max_pool(x), lambda x: jnp.max(x, axis=(1, 2))),
    "global_max_pool mask": (lambda x: jaxpool.global_max_pool(x, mask=np.arange(256).reshape(16, 16) % 3 > 0), None),
    "spatial_pyramid_pool": (lambda x: jaxpool.spatial_pyramid_pool(x, (1, 2, 5)), None),
    "max_unpool": (_unpool, None),
    "max_unpool in windows": (_unpool_in_windows, None),
    "stochastic_pool": (lambda x: jaxpool.stochastic_pool(jnp.abs(x), (3, 3), 2, 1, key=KEY), None),
    "stochastic_pool deterministic": (lambda x: jaxpool.stochastic_pool(jnp.abs(x), (2, 2), deterministic=True), None),
    "mixed_pool": (lambda x: jaxpool.mixed_pool(x, (2, 2), key=KEY), None),
    "fractional_max_pool": (lambda x: jaxpool.fractional_max_pool(x, (2, 2), output_size=(10, 10), key=KEY), None),
    "soft_pool": (lambda x: jaxpool.soft_pool(x, (2, 2)), None),
    "median_pool": (lambda x: jaxpool.median_pool(x, (3, 3), 1, 1), None),
    "blur_pool": (lambda x: jaxpool.blur_pool(x, (2, 2)), None),
    "max_blur_pool": (lambda x: jaxpool.max_blur_pool(x, (2, 2)), None),
    "avgmax_pool": (lambda x: jaxpool.avgmax_pool(x, (2, 2)), None),
    "global_avgmax_pool": (lambda x: jaxpool.global_avgmax_pool(x), None),
    "gated_pool": (lambda x: jaxpool.gated_pool(x, jnp.full((2, 2), 0.1), (2, 2)), None),
    "tree_pool": (lambda x: jaxpool.tree_pool(x, jnp.full((2, 2, 2), 0.2), jnp.full((1, 2, 2), -0.1), (2, 2)), None),
}
VOLUME_OPS = {  # 3-D pooling of VOLUME_SHAPE, sharded per VOLUME_SHARDINGS
    "3-D max_pool 3x3x3/2 p1 (joint inner pass)": (
        lambda x: jaxpool.max_pool(x, (3, 3, 3), 2, 1),
        _fl("max_pool", (3, 3, 3), (2, 2, 2), 1),
    ),
    "3-D max_pool 3x3x3/1 p1 (chained)": (
        lambda x: jaxpool.max_pool(x, (3, 3, 3), 1, 1),
        _fl("max_pool", (3, 3, 3), (1, 1, 1), 1),
    ),
    "3-D max_pool 2x2x2/2": (lambda x: jaxpool.max_pool(x, (2, 2, 2)), _fl("max_pool", (2, 2, 2), (2, 2, 2))),
    "3-D avg_pool 3x3x3/2 p1 (passes)": (
        lambda x: jaxpool.avg_pool(x, (3, 3, 3), 2, 1),
        _fl("avg_pool", (3, 3, 3), (2, 2, 2), 1),
    ),
    "3-D avg_pool 2x2x2/2": (lambda x: jaxpool.avg_pool(x, (2, 2, 2)), _fl("avg_pool", (2, 2, 2), (2, 2, 2))),
}
CASES = [(name, s) for name in OPS for s in SHARDINGS] + [(name, s) for name in VOLUME_OPS for s in VOLUME_SHARDINGS]
# Ops whose window spans the whole (sharded) map reduce locally and combine with all-reduces.
GLOBAL = {
    "max_pool 16x16 (whole map)",
    "global_avg_pool",
    "global_max_pool",
    "global_max_pool mask",
    "global_avgmax_pool",
    "spatial_pyramid_pool",
    "gem_pool",
}
EXTREMA = ("max_pool", "min_pool", "global_max", "adaptive_max", "max_unpool", "fractional")  # bit for bit
EXACT = {n for n in [*OPS, *VOLUME_OPS] if n.removeprefix("3-D ").startswith(EXTREMA)}


def _flax():
    import flax.linen

    return flax.linen


def _loss(op):
    return lambda x: sum(jnp.sum(jnp.sin(a)) for a in jax.tree.leaves(op(x)) if jnp.issubdtype(a.dtype, jnp.floating))


def _collectives(hlo: str) -> dict:
    """Counts of each collective, and ``gathered``: the most elements any all-gather/all-to-all returns."""
    counts = {}
    for name in ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter"):
        counts[name] = len(re.findall(rf"\s{name}(-start)?\(", hlo))
    sizes = [0]
    for dims in re.findall(r"= \w+\[([\d,]*)\][^=]*? (?:all-gather|all-to-all)(?:-start)?\(", hlo):
        sizes.append(int(np.prod([int(d) for d in dims.split(",") if d])))
    counts["gathered"] = max(sizes)
    return counts


def main():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = np.array(jax.devices())
    line, grid = Mesh(devices, ("x",)), Mesh(devices.reshape(2, 2), ("a", "b"))
    summary = {}
    for ops, shape, shardings in ((OPS, SHAPE, SHARDINGS), (VOLUME_OPS, VOLUME_SHAPE, VOLUME_SHARDINGS)):
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        for name, (op, flax_op) in ops.items():
            grad = jax.grad(_loss(op))
            expected = [np.asarray(a) for a in jax.tree.leaves(op(x))], np.asarray(grad(x))
            for shard_name, spec in shardings.items():
                sharding = NamedSharding(grid if "a" in spec else line, PartitionSpec(*spec))
                summary[f"{name} | {shard_name}"] = _sharded_run(op, flax_op, grad, expected, jax.device_put(x, sharding))
    summary["export"] = _exported_run(line)
    summary["axis over two mesh axes"] = _two_mesh_axes_runs(grid)
    summary["extrema at the edges"] = _edge_runs(line, grid)
    summary["random geometries"] = _random_geometry_runs(line, grid, trials=RANDOM_TRIALS)
    summary["plain programs"] = _plain_runs(line, grid)
    summary["drifting windows"] = _drift_runs(devices)
    print(json.dumps(summary))


def _two_mesh_axes_runs(grid) -> dict:
    """H split over both axes of the 2x2 mesh, in the mesh's order and against it (blocks numbered
    b-major): values, gradients and collectives of window sums and maxima, whose halos go by ppermute."""
    from jax.sharding import NamedSharding, PartitionSpec

    x = np.random.default_rng(2).standard_normal(SHAPE, dtype=np.float32)
    runs = {}
    sums = ("avg_pool 3x3/2 p1", "avg_pool 5x5/2 p2 (passes)", "avg_pool 9x9/1 (separable)")
    for name in (*sums, "max_pool 3x3/2 p1", "max_pool 5x5/1 p2"):
        op, flax_op = OPS[name]
        grad = jax.grad(_loss(op))
        expected = [np.asarray(a) for a in jax.tree.leaves(op(x))], np.asarray(grad(x))
        for names in (("a", "b"), ("b", "a")):
            xs = jax.device_put(x, NamedSharding(grid, PartitionSpec(None, names)))
            runs[f"{name} | {names}"] = _sharded_run(op, flax_op, grad, expected, xs)
    return runs


EDGE_OPS = {  # extrema whose windows at the input's ends hold real elements equal to the padding
    "max_pool 3x3/2 p1 indices": lambda x: jaxpool.max_pool(x, (3, 3), 2, 1, return_indices=True),
    "max_pool 5x5/1 p2 indices": lambda x: jaxpool.max_pool(x, (5, 5), 1, 2, return_indices=True),
    "min_pool 3x3/1 SAME": lambda x: jaxpool.min_pool(-x, (3, 3), 1, "SAME"),
    "max_pool 9x9/1 p4 (chained)": lambda x: jaxpool.max_pool(x, (9, 9), 1, 4),
    "max_pool 9x9/1 p4 (doubling)": doubling(lambda x: jaxpool.max_pool(x, (9, 9), 1, 4)),
    "max_pool 33x3/1 p16 (runs, blocks)": lambda x: jaxpool.max_pool(x, (33, 3), 1, (16, 1)),
    "max_pool int32 3x3/1 p1": lambda x: (  # integers: the padding is the dtype's minimum; with a float
        jaxpool.max_pool(jnp.where(jnp.isinf(x), jnp.iinfo(jnp.int32).min, 7), (3, 3), 1, 1),
        jaxpool.max_pool(x, (3, 3), 1, 1),
    ),
}


def _edge_runs(line, grid) -> dict:
    """Extrema of an input whose first 3 and last 2 rows and columns are -inf (and a NaN): sharded
    over H, W or both, the windows at the ends see padding equal to their real elements, which
    must still win (PyTorch's first real element; the gradient goes to it)."""
    from jax.sharding import NamedSharding, PartitionSpec

    x = np.random.default_rng(4).standard_normal(SHAPE, dtype=np.float32)
    for axis in (1, 2):
        x[(slice(None),) * axis + (slice(0, 3),)] = -np.inf
        x[(slice(None),) * axis + (slice(-2, None),)] = -np.inf
    x[0, 6, 6, 0] = np.nan
    runs = {}
    for name, op in EDGE_OPS.items():
        grad = jax.grad(_loss(op))
        expected = [np.asarray(a) for a in jax.tree.leaves(op(x))], np.asarray(grad(x))
        for shard_name, spec in SHARDINGS.items():
            xs = jax.device_put(x, NamedSharding(grid if "a" in spec else line, PartitionSpec(*spec)))
            values = [np.asarray(a) for a in jax.tree.leaves(jax.jit(op)(xs))]
            runs[f"{name} | {shard_name}"] = {
                "values": all(np.array_equal(a, b, equal_nan=True) for a, b in zip(values, expected[0])),
                "grad": bool(np.array_equal(np.asarray(jax.jit(grad)(xs)), expected[1], equal_nan=True)),
            }
    return runs


PLAIN_OPS = {  # geometries XLA partitions (out * stride != in), whose derivatives transpose strided slices
    "avg_pool 11x3/2 (strided heads)": lambda x: jaxpool.avg_pool(x, (11, 3), 2),
    "avg_pool 13x5/(2, 4)": lambda x: jaxpool.avg_pool(x, (13, 5), (2, 4)),
    "lp_pool 11x3/2": lambda x: jaxpool.lp_pool(x, 2.0, (11, 3), 2),
}


def _plain_runs(line, grid) -> dict:
    """Values, gradients and JVPs of :data:`PLAIN_OPS` sharded over H, W or both: the largest
    difference from the unsharded run. Their strided slices' transposes were interior pads, which
    XLA's partitioner got wrong (:func:`test_xla_interior_pad_partitioning`): the H-sharded
    gradients failed to compile."""
    from jax.sharding import NamedSharding, PartitionSpec

    rng = np.random.default_rng(5)
    x, t = rng.standard_normal(SHAPE, dtype=np.float32), rng.standard_normal(SHAPE, dtype=np.float32)
    runs = {}
    for name, op in PLAIN_OPS.items():
        grad, jvp = jax.grad(_loss(op)), lambda v, u, op=op: jax.jvp(op, (v,), (u,))[1]
        expected = (op(x), grad(x), jvp(x, t))
        for shard_name in ("H", "W", "HW"):
            spec = SHARDINGS[shard_name]
            sharding = NamedSharding(grid if "a" in spec else line, PartitionSpec(*spec))
            xs, ts = jax.device_put(x, sharding), jax.device_put(t, sharding)
            try:
                got = (jax.jit(op)(xs), jax.jit(grad)(xs), jax.jit(jvp)(xs, ts))
                runs[f"{name} | {shard_name}"] = max(
                    float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(got, expected)
                )
            except Exception as error:  # noqa: BLE001 - XLA's verifier rejected the partitioned program
                runs[f"{name} | {shard_name}"] = f"{type(error).__name__}: {str(error)[:200]}"
    return runs


DRIFT_OPS = {  # out * stride != in: windows that drift across the blocks (16 rows)
    "avg_pool 3x3/1 VALID": (lambda x: jaxpool.avg_pool(x, (3, 3), 1), _fl("avg_pool", (3, 3), (1, 1))),
    "avg_pool 5x5/1 VALID": (lambda x: jaxpool.avg_pool(x, (5, 5), 1), _fl("avg_pool", (5, 5), (1, 1))),
    "lp_pool 3x3/1 VALID": (lambda x: jaxpool.lp_pool(x, 2.0, (3, 3), 1), None),
    "avg_pool 3x3/3 p1": (lambda x: jaxpool.avg_pool(x, (3, 3), 3, 1), _fl("avg_pool", (3, 3), (3, 3), 1)),
    # H's blocks own whole strides' outputs, W's drift: on the 2x2 mesh 14 outputs over 2 shards
    "avg_pool 5x3/1 p(2, 0)": (
        lambda x: jaxpool.avg_pool(x, (5, 3), 1, ((2, 2), (0, 0))),
        lambda x: _flax().avg_pool(x, (5, 3), (1, 1), ((2, 2), (0, 0))),
    ),
    "avg_pool 3x3/2 p1 ceil": (lambda x: jaxpool.avg_pool(x, (3, 3), 2, 1, ceil_mode=True), None),
    "max_pool 3x3/1 VALID": (lambda x: jaxpool.max_pool(x, (3, 3), 1), _fl("max_pool", (3, 3), (1, 1))),
    "max_pool 5x5/1 VALID": (lambda x: jaxpool.max_pool(x, (5, 5), 1), _fl("max_pool", (5, 5), (1, 1))),
    "max_pool 2x2/1 VALID (chained)": (lambda x: jaxpool.max_pool(x, (2, 2), 1), _fl("max_pool", (2, 2), (1, 1))),
    "min_pool 3x3/2 p1 ceil": (lambda x: jaxpool.min_pool(x, (3, 3), 2, 1, ceil_mode=True), None),
    # inputs whose rows do not divide over the shards (XLA pads the last shard's block): 15
    # of 16, as after a 2x2/1 pool, which made XLA's partitioner abort (a CHECK failure) before
    "max_pool 3x3/1 p1 on 15 rows": (
        lambda x: jaxpool.max_pool(x[:, :15, :15], (3, 3), 1, 1),
        lambda x: _fl("max_pool", (3, 3), (1, 1), 1)(x[:, :15, :15]),
    ),
    "avg_pool 3x3/2 p1 on 15 rows": (
        lambda x: jaxpool.avg_pool(x[:, :15, :15], (3, 3), 2, 1),
        lambda x: _fl("avg_pool", (3, 3), (2, 2), 1)(x[:, :15, :15]),
    ),
    "max_pool 2x2/1 then 3x3/2 p1": (
        lambda x: jaxpool.max_pool(jaxpool.max_pool(x, (2, 2), 1), (3, 3), 2, 1),
        lambda x: _fl("max_pool", (3, 3), (2, 2), 1)(_fl("max_pool", (2, 2), (1, 1))(x)),
    ),
    # windows with gaps: the second block's first row is read by none (rows 9-10, 12-13, 15)
    "max_pool 2x5/(3, 1) ceil indices": (
        lambda x: jaxpool.max_pool(x, (2, 5), (3, 1), (0, 1), ceil_mode=True, return_indices=True)[0],
        None,
    ),
    # regions at data-dependent rows within static ranges (jaxpool._ranges), 15 rows, 11 or 9 outputs
    "fractional_max_pool 3x2 on 15 rows": (
        lambda x: jaxpool.fractional_max_pool(x[:, :15, :15], (3, 2), output_size=(11, 9), key=KEY),
        None,
    ),
    "fractional_max_pool Graham on 15 rows": (
        lambda x: jaxpool.fractional_max_pool(x[:, :15, :15], output_ratio=(0.6, 0.8), key=KEY),
        None,
    ),
}
# (op, sharding of DRIFT_SHARDINGS) -> collective-permutes of forward+backward today where flax.linen has
# no equivalent (lp, ceil_mode, min, windows with gaps): ceilings, fewer is progress.
DRIFT_CEILINGS = {
    **{("lp_pool 3x3/1 VALID", s): n for s, n in (("H", 4), ("W", 4), ("H4", 2), ("HW", 8), ("H(b,a)", 2))},
    **{("avg_pool 3x3/2 p1 ceil", s): n for s, n in (("H", 2), ("W", 2), ("H4", 2), ("HW", 4), ("H(b,a)", 2))},
    **{("min_pool 3x3/2 p1 ceil", s): n for s, n in (("H", 3), ("W", 3), ("H4", 3), ("HW", 6), ("H(b,a)", 3))},
    **{("max_pool 2x5/(3, 1) ceil indices", s): n for s, n in (("H", 0), ("W", 6), ("H4", 3), ("HW", 6), ("H(b,a)", 3))},
    # the maxima's map exchanges x, the gradient's the cotangent and the winners' indices (3 arrays)
    **{("fractional_max_pool 3x2 on 15 rows", s): n for s, n in (("H", 6), ("W", 6), ("H4", 6), ("HW", 12), ("H(b,a)", 6))},
    **{("fractional_max_pool Graham on 15 rows", s): n for s, n in (("H", 3), ("W", 6), ("H4", 3), ("HW", 9), ("H(b,a)", 3))},
}


DRIFT_SHARDINGS = {  # name -> (devices, mesh shape, partition spec)
    "H": (2, (2,), SHARDINGS["H"]),
    "W": (2, (2,), SHARDINGS["W"]),
    "H4": (4, (4,), SHARDINGS["H"]),
    "HW": (4, (2, 2), SHARDINGS["HW"]),  # each axis over 2 on the 2x2 mesh, which could also split one over 4
    "H(b,a)": (4, (2, 2), (None, ("b", "a"))),  # H over both mesh axes, against their order
}


def _drift_runs(devices) -> dict:
    """:data:`DRIFT_OPS` sharded per :data:`DRIFT_SHARDINGS`: over H or W on 2 devices (the
    outputs divide: each shard slices its windows' rows from the exchanged halos,
    jaxpool._halo._aligned), over H on 4 (they do not, 14 or 6 outputs over 4: each shard computes
    XLA's tile of 4 or 2, the last one's extra windows reading padding), and on the 2x2 mesh:
    values, gradients and JVPs against the unsharded run, the gradient's sharding, and the
    collectives of forward+backward (flax.linen's too)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    rng = np.random.default_rng(6)
    x, t = rng.standard_normal(SHAPE, dtype=np.float32), rng.standard_normal(SHAPE, dtype=np.float32)
    runs = {}
    for name, (op, flax_op) in DRIFT_OPS.items():
        grad, jvp = jax.grad(_loss(op)), lambda v, u, op=op: jax.jvp(op, (v,), (u,))[1]
        expected = (op(x), grad(x), jvp(x, t))
        for shard_name, (count, mesh_shape, spec) in DRIFT_SHARDINGS.items():
            names = ("x",) if len(mesh_shape) == 1 else ("a", "b")
            sharding = NamedSharding(Mesh(devices[:count].reshape(mesh_shape), names), PartitionSpec(*spec))
            xs, ts = jax.device_put(x, sharding), jax.device_put(t, sharding)
            compiled = jax.jit(grad).lower(xs).compile()
            g = compiled(xs)
            got = (jax.jit(op)(xs), g, jax.jit(jvp)(xs, ts))
            entry = {
                "error": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(got, expected)),
                "grad_keeps_sharding": g.sharding.is_equivalent_to(xs.sharding, g.ndim),
                "collectives": _collectives(compiled.as_text()),
            }
            if flax_op is not None:
                entry["flax_collectives"] = _collectives(jax.jit(jax.grad(_loss(flax_op))).lower(xs).compile().as_text())
            runs[f"{name} | {shard_name}"] = entry
    return runs


def _exported_run(mesh) -> dict:
    """jax.export of H-sharded pooling and its gradient (custom-partitioned when compiled in place):
    exported programs take the plain maps, which run on the mesh with the unsharded values."""
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec(None, "x"))
    x = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
    runs = {}
    for name in ("avg_pool 3x3/2 p1", "max_pool 3x3/2 p1"):
        for how, f in (("value", OPS[name][0]), ("grad", jax.grad(_loss(OPS[name][0])))):
            pool = jax.jit(f, in_shardings=sharding)
            exported = jax.export.export(pool)(jax.ShapeDtypeStruct(SHAPE, jnp.float32, sharding=sharding))
            y = exported.call(jax.device_put(x, sharding))
            error = float(np.max(np.abs(np.asarray(y) - np.asarray(pool(x)))))
            runs[f"{name} {how}"] = {"devices": exported.nr_devices, "error": error}
    return runs


def _sharded_run(op, flax_op, grad, expected, xs) -> dict:
    """Values and gradient of ``op`` on the sharded ``xs`` against the unsharded ``expected``, and
    the collectives of its compiled forward+backward (and flax.linen's, where it has the op)."""
    values = [np.asarray(a) for a in jax.tree.leaves(jax.jit(op)(xs))]
    compiled = jax.jit(grad).lower(xs).compile()
    g, hlo = compiled(xs), compiled.as_text()
    entry = {
        "values": [float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(values, expected[0])],
        "grad": float(np.max(np.abs(np.asarray(g) - expected[1]))),
        "grad_keeps_sharding": g.sharding.is_equivalent_to(xs.sharding, g.ndim),
        "output_elements": max(a.size for a in values),
        "collectives": _collectives(hlo),
    }
    if flax_op is not None:
        entry["flax_collectives"] = _collectives(jax.jit(jax.grad(_loss(flax_op))).lower(xs).compile().as_text())
    return entry


@pytest.fixture(scope="module")
def summary():
    return four_device_summary(__file__, timeout=2400)  # ~15 min on a quiet 2-core box


@pytest.mark.parametrize("name, sharding", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_sharded_equals_unsharded(summary, name, sharding):
    result = summary[f"{name} | {sharding}"]
    tolerance = 0.0 if name in EXACT else 1e-5
    assert max(result["values"]) <= tolerance, result
    assert result["grad"] <= (0.0 if name in EXACT else 1e-5), result


# max_unpool without its window: indices may name any position, so XLA gathers a spatially
# sharded input for the scatter, or all-reduces the whole output of the differentiated one's
# scatter-max of ranks (jaxpool._scatter; H: no all-gather, 2 all-reduces). Given window_shape,
# "max_unpool in windows" exchanges halos (jaxpool._flat_index). Strict: a fix makes these XPASS,
# which fails until the entry is removed.
KNOWN_GATHERS = {("max_unpool", s) for s in SHARDINGS if s != "C"}


# More halo exchanges than flax's reduce_window: XLA's SPMD partitioner exchanges a halo for every
# shifted tap (pad or slice) on a sharded axis, where reduce_window exchanges once; a minimal
# XLA-only program is in benchmarks/RESULTS_breadth.md ("Halo exchanges"). Each case maps to its
# collective-permutes today (forward+backward), a ceiling: fewer is progress, more fails.
def _permutes(name, **counts):
    return {(name, sharding): count for sharding, count in counts.items()}


EXCESS_PERMUTES = {
    # The doubling scheme (jaxpool._sliding), custom-partitioned with its derivative, whose exact
    # transpose exchanges the input over the reach of the windows of the outputs that reach each
    # block: 8 rows each way for 9x9/1 pad 4, two blocks of the 4 rows of a shard here (4 permutes),
    # where flax's reduce_window exchanges 4 rows once. With shards of at least 8 rows, 6 / 6 / 12
    # as flax (2, 32, 32, 3); both sharded, 12 as flax here. (flax's H and W programs all-gather the
    # padded input twice besides their 6 permutes.) 9x9/1 itself runs chained passes (6 / 6 / 12).
    **_permutes("max_pool 9x9/1 (doubling)", H=8, W=8),
}

# Collective-permutes today where flax's program gathers instead: ceilings, fewer is progress. A
# window longer than the sharded axis takes its halos from every shard it spans (jaxpool._halo).
CEILINGS = {**_permutes("max_pool 33x3/1 (runs, blocks)", H=18, W=6, HW=12)}


def _windowed_cases():
    for name, sharding in sorted(CASES):
        if name not in GLOBAL:
            known = (name, sharding) in KNOWN_GATHERS | EXCESS_PERMUTES.keys()
            marks = [pytest.mark.xfail(strict=True, reason="known gap: gathers or extra halo exchanges")] if known else []
            yield pytest.param(name, sharding, marks=marks, id=f"{name}-{sharding}")


@pytest.mark.parametrize("name, sharding", list(_windowed_cases()))
def test_windowed_pooling_exchanges_halos_only(summary, name, sharding):
    result = summary[f"{name} | {sharding}"]
    counts = result["collectives"]
    # An all-reduce moves a whole array too (a windowed op needs none): XLA partitions a scatter-max
    # of sharded updates as a scatter into a replicated output on every shard and an all-reduce.
    assert all(counts[c] == 0 for c in (*GATHERS, "all-reduce")), (name, sharding, counts)
    assert result["grad_keeps_sharding"], (name, sharding)
    if "flax_collectives" in result:
        flax = result["flax_collectives"]
        assert counts["collective-permute"] <= flax["collective-permute"], (counts, flax)


PERMUTE_CEILINGS = EXCESS_PERMUTES | CEILINGS


@pytest.mark.parametrize("name, sharding", sorted(PERMUTE_CEILINGS), ids=[f"{n}-{s}" for n, s in sorted(PERMUTE_CEILINGS)])
def test_halo_exchanges_do_not_grow(summary, name, sharding):
    """Where jaxpool exchanges more halos than flax.linen (EXCESS_PERMUTES), or flax gathers
    (CEILINGS), no more than today."""
    counts = summary[f"{name} | {sharding}"]["collectives"]
    assert counts["collective-permute"] <= PERMUTE_CEILINGS[name, sharding], counts


# Outputs gathered as XLA tiles them: SPP flattens its 5-bin level's (4, 5, 5, 4) output, whose 5
# rows XLA splits into tiles of 2 over 4 shards (8 rows: 4 x 8 x 5 x 4 all-gathered) or of 3 over
# 2 (4 x 6 x 6 x 4 with H and W sharded), more than the 480 features of the output, but an eighth of
# the 4096-element input.
TILED_OUTPUTS = {("spatial_pyramid_pool", s): n for s, n in (("H", 640), ("W", 640), ("HW", 576))}


@pytest.mark.parametrize("name", sorted(GLOBAL))
@pytest.mark.parametrize("sharding", ["H", "W", "HW"])
def test_global_pooling_reduces_locally(summary, name, sharding):
    """Local reductions combined by all-reduces; nothing bigger than the (pooled) output, as XLA
    tiles it over the shards, is gathered."""
    result = summary[f"{name} | {sharding}"]
    bound = TILED_OUTPUTS.get((name, sharding), result["output_elements"])
    assert result["collectives"]["gathered"] <= bound, (name, sharding, result)


def test_an_axis_over_two_mesh_axes(summary):
    for case, result in summary["axis over two mesh axes"].items():
        assert max(result["values"]) <= 1e-5 and result["grad"] <= 1e-5, (case, result)
        assert result["grad_keeps_sharding"], case
        counts, flax = result["collectives"], result["flax_collectives"]
        assert all(counts[c] == 0 for c in GATHERS), (case, counts)
        assert counts["collective-permute"] <= flax["collective-permute"], (case, counts, flax)


RANDOM_TRIALS = 20


def _random_geometry(rng) -> dict:
    """A random pooling geometry (1-3 spatial axes, windows 1-7, strides 1-3, dilation, padding,
    ``ceil_mode``, either layout, or adaptive output sizes 1-18), op (max, min, max with indices,
    avg, adaptive max and avg) and sharding (one spatial
    axis, or two at once on the 2x2 mesh), drawn from ``rng`` (seeded: the same cases every run)."""
    nd = int(rng.integers(1, 4))
    window = [int(v) for v in rng.integers(1, 8, nd)]  # up to 7 (13 dilated): longer than a shard of 8 / 4
    case = {
        "op": str(rng.choice(["max", "min", "indices", "avg", "adaptive_max", "adaptive_avg"])),
        "window": window,
        "strides": [int(v) for v in rng.integers(1, 4, nd)],
        "dilation": [int(v) for v in rng.choice([1, 1, 1, 2], nd)],
        "padding": [int(rng.integers(0, k // 2 + 1)) for k in window],
        "ceil_mode": bool(rng.random() < 0.2),
        "channels_first": bool(rng.random() < 0.3),
        "sizes": [int(rng.choice([8, 12, 16])) for _ in range(nd)],
        "output_size": [int(v) for v in rng.integers(1, 19, nd)],  # adaptive only; larger than the input too
        "ties": bool(rng.random() < 0.5),  # a rounded input: equal elements in most windows
    }
    if rng.random() < 0.3:  # "same" windows at stride 1: the outputs split with the blocks, halos from several shards
        case["window"] = window = [k | 1 for k in window]
        case.update(strides=[1] * nd, dilation=[1] * nd, padding=[k // 2 for k in window])
    first = 2 if case["channels_first"] else 1
    if nd > 1 and rng.random() < 0.4:
        case["sharded"] = {first: "a", first + 1: "b"}
    else:
        case["sharded"] = {first + int(rng.integers(nd)): "x"}
    return case


def _random_pool(case):
    data_format = "channels_first" if case["channels_first"] else "channels_last"
    kwargs = dict(dilation=case["dilation"], ceil_mode=case["ceil_mode"], data_format=data_format)
    window, strides, padding = tuple(case["window"]), tuple(case["strides"]), tuple(case["padding"])
    if case["op"].startswith("adaptive"):
        adaptive = getattr(jaxpool, f"{case['op']}_pool")
        return lambda v: adaptive(v, tuple(case["output_size"]), data_format=data_format)
    if case["op"] == "avg":
        kwargs.pop("dilation")
        return lambda v: jaxpool.avg_pool(v, window, strides, padding, **kwargs)
    pool = jaxpool.min_pool if case["op"] == "min" else jaxpool.max_pool
    if case["op"] == "indices":
        kwargs["return_indices"] = True
    return lambda v: pool(v, window, strides, padding, **kwargs)


def _random_geometry_runs(line, grid, trials: int, seed: int = 21) -> list:
    """Values, gradients, JVPs and vmapped values of random geometries (:func:`_random_geometry`)
    on a sharded input (the first two rows of the first spatial axis -inf, where the padding must
    not win), each compared with the same op on the unsharded input: the maximum difference (0
    expected for extrema, reassociation for sums)."""
    from jax.sharding import NamedSharding, PartitionSpec

    rng, runs = np.random.default_rng(seed), []
    while len(runs) < trials:
        case = _random_geometry(rng)
        first = 2 if case["channels_first"] else 1
        shape = (2, 3, *case["sizes"]) if case["channels_first"] else (2, *case["sizes"], 3)
        x = rng.standard_normal(shape).astype(np.float32)
        if case["ties"]:
            x = np.round(x)
        if not case["op"].endswith("avg"):
            x[(slice(None),) * first + (slice(0, 2),)] = -np.inf
        t = rng.standard_normal(shape).astype(np.float32)
        op = _random_pool(case)
        try:
            expected = [np.asarray(a) for a in jax.tree.leaves(op(x))]
        except ValueError:  # e.g. padding over half a dilated window: rejected, drawn again
            continue
        first_output = lambda v, op=op: jax.tree.leaves(op(v))[0]  # noqa: E731
        grad, jvp = jax.grad(_loss(op)), lambda v, u, f=first_output: jax.jvp(f, (v,), (u,))[1]
        vmapped = jax.vmap(first_output)
        spec = [None] * len(shape)
        for axis, name in case["sharded"].items():
            spec[int(axis)] = name
        mesh = grid if "a" in spec else line
        sharding, batched = NamedSharding(mesh, PartitionSpec(*spec)), NamedSharding(mesh, PartitionSpec(None, *spec))
        xs, ts, xb = jax.device_put(x, sharding), jax.device_put(t, sharding), jax.device_put(np.stack([x, -x]), batched)
        pairs = [
            *zip(jax.tree.leaves(jax.jit(op)(xs)), expected),
            (jax.jit(grad)(xs), grad(x)),
            (jax.jit(jvp)(xs, ts), jvp(x, t)),
            (jax.jit(vmapped)(xb), vmapped(np.stack([x, -x]))),
        ]
        errors = []
        for a, b in pairs:
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            with np.errstate(invalid="ignore"):  # -inf - -inf
                same, difference = (a == b) | (np.isnan(a) & np.isnan(b)), np.abs(a - b)
            difference = np.where(same, 0.0, np.nan_to_num(difference, nan=np.inf))  # a NaN in one only: inf
            errors.append(float(np.max(difference, initial=0.0)))
        runs.append({**case, "sharded": {str(k): v for k, v in case["sharded"].items()}, "errors": errors})
    return runs


def test_random_geometries_shard_exactly(summary):
    """Seeded random geometries (:func:`_random_geometry`): values, indices, gradients, JVPs and
    vmapped values on a sharded input equal the unsharded run's (extrema bit for bit)."""
    runs = summary["random geometries"]
    assert len(runs) == RANDOM_TRIALS
    for case in runs:
        tolerance = 1e-5 if case["op"].endswith("avg") else 0.0
        assert max(case["errors"]) <= tolerance, case


def test_extrema_at_the_edges_of_shards(summary):
    """Padding never takes a real element's place on the shards at the input's ends (values,
    indices and gradients bit-equal to the unsharded run)."""
    for case, result in summary["extrema at the edges"].items():
        assert result == {"values": True, "grad": True}, case


def test_export_of_sharded_pooling(summary):
    for case, result in summary["export"].items():
        assert result["devices"] == 4, case
        assert result["error"] <= (0.0 if case.startswith("max") else 1e-6), (case, result)  # sums reassociate


def test_xla_strided_slice_partitioning():
    """XLA bug (SPMD partitioner): a strided slice whose stride exceeds its extent, on a sharded axis,
    returns zeros for elements outside the first shard. Minimal program: x = arange(16) sharded 4
    ways; ``lax.slice(x, (13,), (14,), (16,))`` gives [0.] instead of [13.] under jit. jaxpool never
    emits such a slice (an axis with one output is sliced with stride 1), which this test pins."""
    summary = _run_snippet(
        "import jax, numpy as np; from jax import lax; from jax.sharding import Mesh, NamedSharding, PartitionSpec as P\n"
        "x = jax.device_put(np.arange(16, dtype=np.float32), NamedSharding(Mesh(np.array(jax.devices()), ('x',)), P('x')))\n"
        "print(float(jax.jit(lambda v: lax.slice(v, (13,), (14,), (16,)))(x)[0]),"
        " float(jax.jit(lambda v: lax.slice(v, (13,), (14,), (1,)))(x)[0]))"
    )
    strided, unit = map(float, summary.split())
    assert unit == 13.0
    if strided == 13.0:
        pytest.skip("this XLA partitions the strided slice correctly: the workaround in _taps.tap may go")
    assert strided == 0.0


def test_drifting_windows_exchange_halos_only(summary):
    """Windows that drift across the blocks ("VALID" 3x3/1 on 16 rows over 2 devices: 7 outputs a
    shard, reading rows 0-8 and 7-15), also where the outputs do not divide over the shards (14
    over 4), on a line of devices and on the 2x2 mesh (where an axis may be split over 2 or 4):
    values and gradients equal the unsharded run's (maxima bit for bit), the gradient
    keeps the input's sharding, and the program exchanges halos only, no more than flax.linen's
    ``reduce_window`` (before: XLA's partitioning of the plain maps, e.g. max 5x5/1 over 4
    devices 18 collective-permutes where flax has 6, avg 3x3/1 12 where flax has 5) or, without a
    flax equivalent, than :data:`DRIFT_CEILINGS`."""
    for case, result in summary["drifting windows"].items():
        name, sharding = case.split(" | ")
        assert result["error"] <= (0.0 if name.startswith(("max", "min", "fractional")) else 1e-5), (case, result)
        assert result["grad_keeps_sharding"], case
        counts = result["collectives"]
        assert all(counts[c] == 0 for c in GATHERS), (case, counts)
        bound = result.get("flax_collectives", {}).get("collective-permute", DRIFT_CEILINGS.get((name, sharding)))
        assert bound is not None and counts["collective-permute"] <= bound, (case, counts, bound)


def test_plain_programs_shard_exactly(summary):
    """Geometries left to XLA's partitioner whose derivatives transpose strided slices
    (:data:`PLAIN_OPS`): sharded values, gradients and JVPs equal the unsharded run's."""
    for case, error in summary["plain programs"].items():
        assert isinstance(error, float) and error <= 1e-5, (case, error)


def test_xla_interior_pad_partitioning():
    """XLA bug (SPMD partitioner, GSPMD and Shardy alike, jax 0.10.2): a pad with interior padding
    onto a sharded axis — JAX's transpose of a strided slice — gets per-device buffers of the wrong
    size or wrong values. Minimal program: x = arange(32) sharded 4 ways;
    ``jit(grad(lambda v: sum(v[0:5:2] ** 2)))(x)`` returns an array whose shards hold 7 elements
    instead of 8 (reading it raises), where the unsharded program gives 2 x at 0, 2, 4. The strided
    slices of :func:`jaxpool._sliding.strided` transpose by a broadcast, a select and a reshape
    instead (:func:`jaxpool._taps.strided_slice`; ``PLAIN_OPS`` failed without it); this test
    says when XLA no longer needs that."""
    summary = _run_snippet(
        "import jax, jax.numpy as jnp, numpy as np; from jax.sharding import Mesh, NamedSharding, PartitionSpec as P\n"
        "x = jax.device_put(np.arange(32, dtype=np.float32), NamedSharding(Mesh(np.array(jax.devices()), ('x',)), P('x')))\n"
        "g = jax.jit(jax.grad(lambda v: jnp.sum(v[0:5:2] ** 2)))\n"
        "expected = np.zeros(32, np.float32); expected[0:5:2] = 2 * np.arange(32)[0:5:2]\n"
        "try:\n"
        "    print('equal' if np.array_equal(np.asarray(g(x)), expected) else 'wrong')\n"
        "except Exception as error:\n"
        "    print('broken', type(error).__name__)"
    )
    if summary == "equal":
        pytest.skip("this XLA partitions interior pads correctly: jaxpool._taps.strided_slice may use lax.slice")
    assert summary.startswith(("wrong", "broken")), summary


def _run_snippet(code: str) -> str:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True, timeout=300)
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "rows, outputs, stride, count, expected",
    [
        (16, 14, 1, 4, (16, 16)),  # "VALID" 3x3/1: 14 outputs over 4, 4 a shard
        (16, 14, 1, 2, (16, 14)),  # 7 outputs a shard: drifting windows, as they are
        (16, 8, 2, 4, (16, 8)),  # 3x3/2 pad 1: blocks own whole strides' outputs
        (16, 6, 3, 4, (16, 8)),  # 3x3/3 pad 1: 6 outputs over 4, 2 a shard
        (16, 6, 3, 2, (16, 6)),  # 3 a shard
        (12, 6, 2, 4, (12, 8)),  # 3x3/2 pad 1 on 12 rows: blocks of 3 rows, 2 outputs a shard
        (16, 9, 2, 2, (16, 10)),  # ceil_mode's extra window: 9 outputs over 2
        (15, 15, 0, 2, (16, 16)),  # an unpooled axis left uneven by a chained pass
        (5, 5, 0, 4, (8, 8)),  # 2 rows a shard, the last shard all padding
        (15, 15, 1, 2, (16, 16)),  # 3x3/1 pad 1 on 15 rows: one padding row, 8 outputs a shard
        (15, 8, 2, 2, (16, 8)),  # 3x3/2 pad 1 on 15 rows: blocks of 8 own 4 outputs each
        (15, 5, 3, 1, (15, 5)),  # one shard: as it is
    ],
)
def test_uneven_axes_take_xla_tiles(rows, outputs, stride, count, expected):
    """Where shards split an axis unevenly, XLA gives each the next multiple's share (its padding
    last): jaxpool._halo plans each shard's map over those rows and outputs."""
    from jaxpool import _halo

    assert _halo._tiled(rows, outputs, stride, count) == expected


if __name__ == "__main__":
    main()
