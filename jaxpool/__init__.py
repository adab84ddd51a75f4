"""jaxpool: every pooling method, for JAX and Flax, with PyTorch's exact semantics.

Modules for every op, imported on demand: :mod:`jaxpool.linen` and :mod:`jaxpool.nnx` (Flax; ``pip install
"jaxpool[flax]"``) and :mod:`jaxpool.equinox` (``pip install "jaxpool[equinox]"``). The core needs only jax and numpy.

Layout: ``(*batch, *spatial, C)`` (``data_format="channels_last"``, the default) or
``(*batch, C, *spatial)`` (``"channels_first"``). ``strides=None`` means strides equal to the window.
"""

from jaxpool.adaptive import (
    adaptive_avg_pool,
    adaptive_max_pool,
    global_avg_pool,
    global_max_pool,
    spatial_pyramid_pool,
)
from jaxpool.avg import avg_pool, lp_pool
from jaxpool.blur import blur_pool, max_blur_pool
from jaxpool.combined import avgmax_pool, global_avgmax_pool
from jaxpool.fractional import fractional_max_pool
from jaxpool.gated import gated_pool, tree_pool
from jaxpool.max import max_pool, min_pool
from jaxpool.median import median_pool
from jaxpool.power import gem_pool
from jaxpool.soft import soft_pool
from jaxpool.stochastic import mixed_pool, stochastic_pool
from jaxpool.unpool import max_unpool

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it

__all__ = [
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "avg_pool",
    "avgmax_pool",
    "blur_pool",
    "fractional_max_pool",
    "gated_pool",
    "gem_pool",
    "global_avg_pool",
    "global_avgmax_pool",
    "global_max_pool",
    "lp_pool",
    "max_blur_pool",
    "max_pool",
    "max_unpool",
    "median_pool",
    "min_pool",
    "mixed_pool",
    "soft_pool",
    "spatial_pyramid_pool",
    "stochastic_pool",
    "tree_pool",
]
