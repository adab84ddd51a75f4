"""Fractional max pooling (Graham 2014, "Fractional Max-Pooling", arXiv:1412.6071).

The spatial size shrinks by a non-integer factor ``alpha = in / out`` (the paper's ``1 < alpha < 2``,
any ``alpha >= 1`` here) through pooling regions whose placement is random per feature map. Along
each spatial axis the regions come from a boundary sequence; an N-d region is the Cartesian product
of one interval per axis, so its maximum is folded axis by axis over gathered elements (innermost
axis first, which keeps PyTorch's row-major first-maximum and last-NaN choices). The forward pass
finds each maximum and its winner's flat index; the tangent is a gather at that index, whose
transpose is one scatter-add: the max-id gradient rule, also under ``jvp``, ``vmap`` and ``jit``.
Each region lies within static rows whatever the draw (:func:`_torch_reads`, :func:`_graham_reads`),
so both run as maps of :mod:`jaxpool._ranges`: on a spatially sharded input each shard exchanges
halos with its neighbours (bit for bit the unsharded values and gradients) instead of XLA gathering
the input.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal, cast, overload

import jax
import jax.numpy as jnp
import numpy as np

from jaxpool import _flat_index, _ranges, _taps
from jaxpool._fusion import materialize, results_once
from jaxpool._geometry import check_bool, fractional_output_shape, fractional_rank, window_tuple
from jaxpool._layout import Layout, as_pool_input, layout_of
from jaxpool._validate import check_unit_samples


def _resolve(x, window_shape, output_size, output_ratio, data_format):
    n = fractional_rank(window_shape, output_size, output_ratio)
    window = None if window_shape is None else window_tuple(window_shape)
    x = as_pool_input(x)
    rank_from = "window_shape" if window_shape is not None else "output_size" if output_ratio is None else "output_ratio"
    layout = layout_of(x, n, data_format, rank_from)
    in_shape = layout.spatial_shape(x.shape)
    if any(size == 0 for size in in_shape):
        raise ValueError(f"x has an empty spatial axis (spatial shape {in_shape}); pooling needs at least one position per axis")
    return x, layout, in_shape, fractional_output_shape(in_shape, window, output_size, output_ratio), window


def _plane_shape(x, layout: Layout) -> tuple[int, ...]:
    """``(*batch, C)``: one pooling plane (feature map) per entry, in either layout."""
    return tuple(d for axis, d in enumerate(x.shape) if axis not in layout.spatial_axes)


def _sample_axes(n: int) -> tuple[int, ...]:
    """``samples[..., _sample_axes(n)[j]]`` drives spatial axis ``j``: PyTorch's 2-d kernel reads sample 0
    for the width (last axis) and 1 for the height; its 3-d kernel, and every other rank here, in order."""
    return (1, 0) if n == 2 else tuple(range(n))


def _uniforms(key, samples, deterministic, random_regions, plane, n):
    """Per-plane uniforms ``(*batch, C, N)`` in spatial-axis order; ``None`` for random increments."""
    if samples is not None:
        if deterministic:
            raise ValueError("samples and deterministic=True conflict: deterministic uses u = 0.5 for every plane")
        if random_regions:
            raise ValueError("samples drive the pseudo-random regions only; random_regions=True draws its increments from key")
        check_unit_samples(samples)  # before jnp.asarray, which makes a constant a tracer under jit
        samples = jnp.asarray(samples)
        if not jnp.issubdtype(samples.dtype, jnp.floating):
            raise TypeError(f"samples must be floats in [0, 1), got dtype {samples.dtype}")
        target = plane + (n,)
        try:
            ok = samples.ndim >= 1 and samples.shape[-1] == n and np.broadcast_shapes(samples.shape, target) == target
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"samples must have shape (*batch, C, N) = {target} (or broadcast to it, last axis exactly {n}), "
                f"got {samples.shape}"
            )
        samples = jnp.broadcast_to(samples.astype(jnp.promote_types(samples.dtype, jnp.float32)), target)
        return samples[..., list(_sample_axes(n))]
    if deterministic:
        return jnp.full(plane + (n,), 0.5, jnp.float32)
    if key is None:
        raise ValueError(
            "key is required when deterministic=False and no samples are given: pass key=jax.random.key(seed) "
            "(in Flax, self.make_rng(...)), samples=..., or deterministic=True for fixed regions"
        )
    if random_regions:
        return None
    return jax.random.uniform(key, plane + (n,), jnp.float32)[..., list(_sample_axes(n))]


def _torch_starts(u, size: int, out: int, k: int):
    """PyTorch's window starts (``generate_intervals``), in ``u``'s float dtype as its kernel computes them:
    ``alpha = (in - k) / (out - 1)``, ``start_i = int((i + u) * alpha) - int(u * alpha)``, last ``in - k``."""
    dtype = u.dtype
    last = jnp.full(u.shape + (1,), size - k, jnp.int32)
    if out == 1:
        return last
    alpha = np.asarray(size - k, dtype) / np.asarray(out - 1, dtype)
    i = jnp.arange(out - 1, dtype=dtype)
    starts = ((i + u[..., None]) * alpha).astype(jnp.int32) - (u * alpha).astype(jnp.int32)[..., None]
    return jnp.concatenate([jnp.clip(starts, 0, size - k), last], axis=-1)


def _pseudo_random_bounds(u, size: int, out: int):
    """Graham's ``a_i = ceil(alpha (i + u)) - ceil(alpha u)``, ``i = 0..out``, ``alpha = in / out``.

    Exact given ``s = u * in`` (one float rounding): ``a_i = ceil((i in + s) / out) - ceil(s / out)``
    in integers, so ``a_0 = 0``, ``a_out = in`` and every increment is ``floor(alpha)`` or ``ceil(alpha)``
    whatever ``u``.
    """
    s = u * size
    whole = jnp.floor(s)
    has_fraction = (s > whole)[..., None]
    q, r = np.divmod(np.arange(out + 1) * size, out)  # static, exact
    m = jnp.asarray(r, jnp.int32) + whole.astype(jnp.int32)[..., None]
    c = jnp.asarray(q, jnp.int32) + jnp.where(has_fraction, m // out + 1, -(-m // out))
    return c - c[..., :1]


def _random_bounds(ranks, size: int, out: int):
    """Graham's random regions from iid sort keys ``ranks`` ``(*batch, C, out)``: ``argsort(ranks)`` is a
    uniformly random permutation of ``0..out-1``; positions where it is below ``in % out`` get the
    increment ``ceil(alpha)``, the rest ``floor(alpha)`` — a uniformly random order of that multiset,
    independently per plane. Returns the boundaries ``a_0..a_out``."""
    order = jnp.argsort(ranks, axis=-1)
    increments = size // out + (order < size % out).astype(jnp.int32)
    return jnp.concatenate([jnp.zeros(increments.shape[:-1] + (1,), jnp.int32), jnp.cumsum(increments, axis=-1)], axis=-1)


def _regions(x, window_shape, output_size, output_ratio, key, samples, random_regions, overlapping, deterministic, data_format):
    """Resolves arguments to ``x, layout, [(starts, lengths, K, reads) per spatial axis]``.

    ``starts``/``lengths`` are int32 ``(*batch, C, out_j)``; ``K`` is the static maximum length;
    ``reads`` the static ``(first, end)`` rows each region may cover, whatever the draw.
    """
    for value, name in (
        (random_regions, "random_regions"),
        (overlapping, "overlapping"),
        (deterministic, "deterministic"),
    ):
        check_bool(value, name)
    x, layout, in_shape, out_shape, window = _resolve(x, window_shape, output_size, output_ratio, data_format)
    if window is not None and random_regions:
        raise ValueError(
            "random_regions=True needs Graham's regions: pass window_shape=None (PyTorch's windows are pseudo-random)"
        )
    if window is not None and not overlapping:
        raise ValueError("overlapping applies to Graham's regions only (window_shape=None); PyTorch's windows have a fixed size")
    plane, n = _plane_shape(x, layout), layout.n_spatial
    u = _uniforms(key, samples, deterministic, random_regions, plane, n)
    # Random increments: one draw of 32-bit sort keys for all axes (ties have probability ~2^-32).
    ranks = jax.random.bits(key, plane + (sum(out_shape),)) if u is None else None
    offsets = np.cumsum((0,) + out_shape)
    regions = []
    for j, (size, out) in enumerate(zip(in_shape, out_shape)):
        if window is not None and u is not None:  # u is None only with random_regions, refused above with a window
            starts = _torch_starts(u[..., j], size, out, window[j])
            regions.append((starts, jnp.full_like(starts, window[j]), window[j], _torch_reads(size, out, window[j])))
            continue
        if u is not None:
            bounds = _pseudo_random_bounds(u[..., j], size, out)
        else:
            bounds = _random_bounds(cast(jax.Array, ranks)[..., offsets[j] : offsets[j + 1]], size, out)  # drawn when u is None
        starts, ends = bounds[..., :-1], bounds[..., 1:]
        if overlapping:
            ends = jnp.minimum(ends + 1, size)
        longest = -(-size // out) + (1 if overlapping else 0)
        reads = _graham_reads(size, out, overlapping, random=u is None)
        regions.append((starts, ends - starts, min(longest, size), reads))
    return x, layout, regions


def _torch_reads(size: int, out: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows PyTorch's window ``i`` (:func:`_torch_starts`) may cover, whatever ``u``: its start
    is ``floor(a) - floor(b)`` for floats ``a ~ (i + u) alpha`` and ``b ~ u alpha``, so
    ``floor(a - b)`` or one more, and ``a - b`` is ``i alpha`` up to rounding (``floor(i alpha)``
    one row either way at most); the last starts at ``in - k``."""
    i = np.arange(out)
    base = i * (size - k) // max(out - 1, 1)  # floor(i alpha), exactly
    first = np.clip(base - 1, 0, size - k)
    last = np.clip(base + 2, 0, size - k)
    first[-1], last[-1] = size - k, size - k
    return first, last + k


def _graham_reads(size: int, out: int, overlapping: bool, random: bool) -> tuple[np.ndarray, np.ndarray]:
    """The rows Graham's region ``i`` ``[a_i, a_{i+1})`` (one more when ``overlapping``) may cover:
    pseudo-random, ``a_i = ceil(x + y) - ceil(y)`` with ``x = i in / out``, ``y >= 0``, lies in
    ``[floor(x), ceil(x)]``; random, ``a_i`` sums ``i`` increments of ``floor(alpha)`` or
    ``ceil(alpha)`` and the other ``out - i`` make up the rest of ``in``."""
    i = np.arange(out + 1)
    if random:
        short, long = size // out, -(-size // out)
        low = np.maximum(i * short, size - (out - i) * long)
        high = np.minimum(i * long, size - (out - i) * short)
    else:
        low, high = i * size // out, -(-(i * size) // out)
    return low[:-1], np.minimum(high[1:] + (1 if overlapping else 0), size)


def _along(a, layout: Layout, j: int):
    """``(*batch, C, L)`` -> broadcastable to ``layout`` with ``L`` on spatial axis ``j``."""
    if not layout.channels_first:
        a = jnp.moveaxis(a, -1, -2)  # (*batch, L, C): the layout's order of the two axes
    shape = list(a.shape[: layout.n_batch]) + [1] * (layout.n_spatial + 1)
    shape[layout.channel_axis] = a.shape[-1 if not layout.channels_first else -2]
    shape[layout.spatial_axes[j]] = a.shape[-2 if not layout.channels_first else -1]
    return a.reshape(shape)


def _region_maxima(x, *bounds, layout: Layout, origins, in_shape: tuple[int, ...], longest: tuple[int, ...]):
    """Each region's maximum and its flat int32 index over the whole spatial volume ``in_shape``:
    the first in row-major order, or the last NaN — PyTorch's rule, kept by folding the innermost
    axis first. ``bounds``: each axis's region starts and lengths, broadcastable to the output;
    ``x``'s rows along axis ``j`` start at row ``origins[j]`` of the whole axis (a
    :func:`jaxpool._ranges.mapped` map)."""
    index = None
    for j in reversed(range(layout.n_spatial)):
        axis, stride = layout.spatial_axes[j], math.prod(in_shape[j + 1 :])
        starts, lengths = bounds[2 * j], bounds[2 * j + 1]
        candidates = []
        for t in range(longest[j]):
            # Past a region's end the last element repeats: neither a tie nor a NaN rematch moves the winner.
            row = starts + jnp.minimum(t, lengths - 1)
            pos = _flat_index.local_rows(row, origins[j], x.shape[axis])
            carried = 0 if index is None else jnp.take_along_axis(index, pos, axis, mode=_flat_index.IN_BOUNDS)
            candidates.append((jnp.take_along_axis(x, pos, axis, mode=_flat_index.IN_BOUNDS), None, row * stride + carried))
        x, index = _taps.select_fold(candidates, "max", jnp.int32)
    return x, cast(jax.Array, index)  # cast: n_spatial >= 1, so the loop set it


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _pool(layout: Layout, reads, in_shape: tuple[int, ...], longest: tuple[int, ...], x, bounds):
    """``(maxima, flat indices)`` of the regions given by ``bounds`` (:func:`_region_maxima`, one
    map of :mod:`jaxpool._ranges` over the static ``reads``); the derivative is the max-id rule:
    each output's tangent is its winner's (:func:`jaxpool._flat_index.gathered`), the indices' none."""
    maxima = functools.partial(_region_maxima, in_shape=in_shape, longest=longest)
    return _ranges.mapped(maxima, x, bounds, layout, reads, whole=len(bounds))


@_pool.defjvp
def _pool_jvp(layout: Layout, reads, in_shape, longest, primals, tangents):
    x, bounds = primals
    y, index = _pool(layout, reads, in_shape, longest, x, bounds)
    tangent = _flat_index.gathered(tangents[0], index, layout, reads, in_shape)
    return (y, index), (tangent, jnp.zeros(index.shape, jax.dtypes.float0))


@overload
def fractional_max_pool(
    x: jax.Array,
    window_shape: Sequence[int] | None = None,
    output_size: int | Sequence[int] | None = None,
    output_ratio: float | Sequence[float] | None = None,
    *,
    key: jax.Array | None = None,
    samples: jax.Array | None = None,
    random_regions: bool = False,
    overlapping: bool = True,
    deterministic: bool = False,
    return_indices: Literal[False] = False,
    data_format: str = "channels_last",
) -> jax.Array: ...


@overload
def fractional_max_pool(
    x: jax.Array,
    window_shape: Sequence[int] | None = None,
    output_size: int | Sequence[int] | None = None,
    output_ratio: float | Sequence[float] | None = None,
    *,
    key: jax.Array | None = None,
    samples: jax.Array | None = None,
    random_regions: bool = False,
    overlapping: bool = True,
    deterministic: bool = False,
    return_indices: Literal[True],
    data_format: str = "channels_last",
) -> tuple[jax.Array, jax.Array]: ...


@overload
def fractional_max_pool(
    x: jax.Array,
    window_shape: Sequence[int] | None = None,
    output_size: int | Sequence[int] | None = None,
    output_ratio: float | Sequence[float] | None = None,
    *,
    key: jax.Array | None = None,
    samples: jax.Array | None = None,
    random_regions: bool = False,
    overlapping: bool = True,
    deterministic: bool = False,
    return_indices: bool = False,
    data_format: str = "channels_last",
) -> jax.Array | tuple[jax.Array, jax.Array]: ...


@results_once
def fractional_max_pool(
    x: jax.Array,
    window_shape: Sequence[int] | None = None,
    output_size: int | Sequence[int] | None = None,
    output_ratio: float | Sequence[float] | None = None,
    *,
    key: jax.Array | None = None,
    samples: jax.Array | None = None,
    random_regions: bool = False,
    overlapping: bool = True,
    deterministic: bool = False,
    return_indices: bool = False,
    data_format: str = "channels_last",
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Fractional max pooling (Graham 2014, arXiv:1412.6071) over N spatial dimensions.

    The output size is ``output_size``, or ``floor(in * output_ratio)`` as PyTorch computes it
    (``int(in * ratio)``). Each region's maximum is returned (the first in row-major order on ties; a
    NaN wins, the last one), and its gradient goes to that element only (a scatter-add).
    Regions are drawn independently per plane, i.e. per (batch..., channel) and spatial axis, as
    PyTorch does: from uniforms ``u`` of shape ``(*batch, C, N)``, or for random increments from ``key``.

    Two region schemes, along each spatial axis of size ``in`` with ``out`` outputs:

    * ``window_shape`` given — PyTorch's ``fractional_max_pool2d/3d``: windows of the fixed size
      ``k`` starting at ``int((i + u) * alpha) - int(u * alpha)``, ``alpha = (in - k) / (out - 1)``,
      computed in ``u``'s float dtype (float32 unless float64 samples are given); the last starts
      at ``in - k``. Needs ``out + k - 1 <= in``.
    * ``window_shape=None`` — Graham's regions from a boundary sequence ``0 = a_0 < ... < a_out = in``
      with increments ``floor(alpha)`` or ``ceil(alpha)``, ``alpha = in / out`` (1 or 2 in the paper's
      ``1 < alpha < 2``). Pseudo-random (default): ``a_i = ceil(alpha (i + u)) - ceil(alpha u)``, the
      paper's ``ceil(alpha (i + u))`` shifted to start at 0 (it then ends at ``in`` exactly), computed
      exactly from ``s = u * in`` rounded once to float32. ``random_regions=True``: a uniformly
      random order of the ``in % out`` long and ``out - in % out`` short increments, one permutation
      per plane and axis, drawn from ``key``. Regions are ``[a_{i-1}, a_i)`` (``overlapping=False``,
      a partition) or ``[a_{i-1}, a_i]`` clipped to the input (``overlapping=True``, the paper's
      better-performing choice).

    Args:
      x: ``(*batch, *spatial, C)`` (``"channels_last"``) or ``(*batch, C, *spatial)``
        (``"channels_first"``); ``*batch`` may be empty or several axes. Float or integer dtype.
      window_shape: N window sizes for PyTorch's scheme, or ``None`` for Graham's regions.
      output_size: N output sizes, ``1 <= out <= in`` (an int when ``window_shape`` gives N).
      output_ratio: N fractions in ``(0, 1]`` (or one); exactly one of the two must be given.
      key: a ``jax.random`` key; needed unless ``samples`` or ``deterministic``. Without
        ``random_regions`` it draws ``samples = jax.random.uniform(key, (*batch, C, N))``.
        ``jax.vmap`` over keys gives independent regions.
      samples: uniforms in ``[0, 1)``, shape ``(*batch, C, N)`` (``(C, N)`` for unbatched ``x``) in
        either layout, or broadcastable to it (e.g. ``(N,)`` shares the regions across planes).
        They are PyTorch's ``_random_samples`` and give its exact values and indices: as in PyTorch,
        for N = 2 ``samples[..., 0]`` drives the last spatial axis (width) and ``samples[..., 1]``
        the first (height); for every other N ``samples[..., j]`` drives spatial axis ``j`` (PyTorch's
        3-d order). Not with ``random_regions`` or ``deterministic``.
      random_regions: Graham's random (not pseudo-random) increments; needs ``window_shape=None``.
      overlapping: Graham's overlapping regions (default) or disjoint ones; ``window_shape=None`` only.
      deterministic: fixed test-time regions from ``u = 0.5`` on every plane (pseudo-random scheme,
        also when ``random_regions``); no key. Graham instead averages the outputs of several random
        draws at test time, e.g. by calling with several keys and averaging.
      return_indices: also return int32 indices of the maxima, flattened over the spatial volume per
        (batch..., channel) — PyTorch's, usable by :func:`jaxpool.max_unpool`.
      data_format: ``"channels_last"`` or ``"channels_first"``.

    Returns:
      ``y`` of shape ``(*batch, *out, C)`` (or channels_first) in ``x``'s dtype, and with
      ``return_indices`` the int32 indices of the same shape. Works under ``jit``, ``vmap``, ``grad``
      and ``jvp``.

    Examples:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import jaxpool
      >>> x = jnp.ones((1, 10, 10, 3))
      >>> jaxpool.fractional_max_pool(x, (2, 2), output_size=(7, 7), key=jax.random.key(0)).shape
      (1, 7, 7, 3)
      >>> jaxpool.fractional_max_pool(x, output_ratio=(0.5, 0.5), deterministic=True).shape
      (1, 5, 5, 3)
    """
    check_bool(return_indices, "return_indices")
    x, layout, regions = _regions(
        x, window_shape, output_size, output_ratio, key, samples, random_regions, overlapping, deterministic, data_format
    )
    in_shape = layout.spatial_shape(x.shape)
    reads = tuple((tuple(first.tolist()), tuple(end.tolist())) for *_, (first, end) in regions)  # static, hashable
    # Computed once: fused into the gathers, the region arithmetic would be redone per gathered element.
    bounds = tuple(
        materialize(_along(a, layout, j)) for j, (starts, lengths, *_) in enumerate(regions) for a in (starts, lengths)
    )
    longest = tuple(k for _, _, k, _ in regions)
    pool = _pool.fun if jnp.issubdtype(x.dtype, jnp.integer) else _pool  # integers have no derivative
    y, index = pool(layout, reads, in_shape, longest, x, bounds)
    return (y, index) if return_indices else y


def _fractional_regions(
    x,
    window_shape=None,
    output_size=None,
    output_ratio=None,
    *,
    key=None,
    samples=None,
    random_regions: bool = False,
    overlapping: bool = True,
    deterministic: bool = False,
    data_format: str = "channels_last",
):
    """The regions :func:`fractional_max_pool` pools over with the same arguments.

    Returns one ``(starts, ends)`` pair per spatial axis, int32 ``(*batch, C, out_j)`` each: output
    ``(o_0, ..., o_{N-1})`` of a plane pools the box ``[starts_j[o_j], ends_j[o_j])`` over ``j``.
    """
    _, _, regions = _regions(
        x, window_shape, output_size, output_ratio, key, samples, random_regions, overlapping, deterministic, data_format
    )
    return tuple((starts, starts + lengths) for starts, lengths, *_ in regions)
