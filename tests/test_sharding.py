"""Every public op shards over a batch axis: no collectives, batch-sharded outputs, same results.

The checks need 4 CPU devices, which must be requested before JAX starts, so this file runs itself
in a subprocess (``python tests/test_sharding.py``) with ``--xla_force_host_platform_device_count=4``;
that prints one JSON summary, keyed by "op data_format", which the tests below assert on.
"""

import functools
import json

import jax
import numpy as np
import pytest

import jaxpool
from tests.devices import four_device_summary

COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
SHAPES = {"channels_last": (8, 12, 12, 6), "channels_first": (8, 6, 12, 12)}


def _unpool_round_trip(x, fmt):
    y, idx = jaxpool.max_pool(x, (2, 2), return_indices=True, data_format=fmt)
    return jaxpool.max_unpool(y, idx, (12, 12), data_format=fmt)


def _unpool_in_windows(x, fmt):
    y, idx = jaxpool.max_pool(x, (3, 3), 2, 1, return_indices=True, data_format=fmt)
    return jaxpool.max_unpool(y, idx, (12, 12), window_shape=(3, 3), strides=2, padding=1, data_format=fmt)


_MASK = np.arange(8 * 12 * 12).reshape(8, 12, 12) % 5 > 0  # (batch, *spatial)

OPS = {  # name -> f(x, data_format); 12 -> 5 adaptive bins are uneven, 12 -> 4 tile
    "max_pool": lambda x, fmt: jaxpool.max_pool(x, (3, 3), (2, 2), 1, data_format=fmt),
    "max_pool[indices]": lambda x, fmt: jaxpool.max_pool(x, (3, 3), (2, 2), 1, return_indices=True, data_format=fmt),
    "min_pool": lambda x, fmt: jaxpool.min_pool(x, (3, 3), 1, "SAME", data_format=fmt),
    "avg_pool": lambda x, fmt: jaxpool.avg_pool(x, (3, 3), (2, 2), 1, count_include_pad=False, data_format=fmt),
    "lp_pool": lambda x, fmt: jaxpool.lp_pool(x, 2.0, (2, 2), data_format=fmt),
    "adaptive_avg_pool": lambda x, fmt: jaxpool.adaptive_avg_pool(x, (5, 4), data_format=fmt),
    "adaptive_max_pool": lambda x, fmt: jaxpool.adaptive_max_pool(x, (5, 4), return_indices=True, data_format=fmt),
    "global_avg_pool": lambda x, fmt: jaxpool.global_avg_pool(x, data_format=fmt),
    "global_max_pool": lambda x, fmt: jaxpool.global_max_pool(x, data_format=fmt),
    "spatial_pyramid_pool": lambda x, fmt: jaxpool.spatial_pyramid_pool(x, (1, 2, 5), data_format=fmt),
    "max_unpool": _unpool_round_trip,
    "max_unpool in windows": _unpool_in_windows,
    "global_avg_pool[mask]": lambda x, fmt: jaxpool.global_avg_pool(x, data_format=fmt, mask=_MASK),
    "global_max_pool[mask]": lambda x, fmt: jaxpool.global_max_pool(x, data_format=fmt, mask=_MASK),
    "stochastic_pool": lambda x, fmt: jaxpool.stochastic_pool(abs(x), (3, 3), 2, 1, key=jax.random.key(0), data_format=fmt),
    "stochastic_pool[deterministic]": lambda x, fmt: jaxpool.stochastic_pool(abs(x), (2, 2), deterministic=True, data_format=fmt),
    "mixed_pool": lambda x, fmt: jaxpool.mixed_pool(x, (2, 2), key=jax.random.key(0), data_format=fmt),
}


def _grad_of_sum(op):
    """The gradient of a sum of squares (of a plain sum, avg_pool's would be a constant, which XLA
    returns unsharded)."""
    return lambda x, fmt: jax.grad(lambda v: (jax.tree.leaves(op(v, fmt))[0] ** 2).sum())(x)


OPS.update({f"grad {name}": _grad_of_sum(OPS[name]) for name in ("max_pool", "avg_pool", "adaptive_max_pool", "stochastic_pool")})


def main():
    """Runs in the 4-device subprocess: prints the JSON summary."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("batch",))
    batch_sharded = NamedSharding(mesh, PartitionSpec("batch"))
    rng = np.random.default_rng(0)
    summary = {}
    for fmt, shape in SHAPES.items():
        x = rng.standard_normal(shape, dtype=np.float32)
        for name, op in OPS.items():
            f = jax.jit(functools.partial(op, fmt=fmt))
            hlo = f.lower(jax.device_put(x, batch_sharded)).compile().as_text()
            out = jax.tree.leaves(f(jax.device_put(x, batch_sharded)))
            expected = jax.tree.leaves(f(jax.device_put(x, jax.devices()[0])))
            summary[f"{name} {fmt}"] = {
                "devices": len(jax.devices()),
                "collectives": [c for c in COLLECTIVES if c in hlo],
                "not_batch_sharded": [str(a.sharding) for a in out if not a.sharding.is_equivalent_to(batch_sharded, a.ndim)],
                "matches_unsharded": all(np.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in zip(out, expected)),
            }
    print(json.dumps(summary))


@pytest.fixture(scope="module")
def summary():
    return four_device_summary(__file__, timeout=600)


@pytest.mark.parametrize("fmt", SHAPES)
@pytest.mark.parametrize("name", OPS)
def test_shards_over_batch(summary, name, fmt):
    result = summary[f"{name} {fmt}"]
    assert result["devices"] == 4
    assert result["collectives"] == [], f"{name} ({fmt}) compiles to collectives"
    assert result["not_batch_sharded"] == [], f"{name} ({fmt}) output is not sharded over the batch axis"
    assert result["matches_unsharded"], f"{name} ({fmt}) differs from the unsharded result"


if __name__ == "__main__":
    main()
