"""All window, padding and output-size arithmetic, and the validation of those arguments.

Every pooling op turns its user-facing arguments into a :class:`WindowGeometry` here and nothing
else in the package computes a window position, a padding amount or an output size. The rules are
PyTorch's CPU kernels (ATen ``Pool.h``):

* ``out = floor((in + lo + hi - eff) / s) + 1`` with ``eff = d * (k - 1) + 1``;
* ``ceil_mode`` rounds up instead, but the last window must start inside the input or the left
  padding, else it is dropped;
* ``"SAME"`` padding is TensorFlow's/Flax's: ``out = ceil(in / s)``, the deficit split low-first;
* padding as ints (PyTorch's form) is at most half the undilated window, ``pad <= k // 2`` (PyTorch's
  check); a dilated window may then lie wholly in padding, as in PyTorch (max pooling gives ``-inf``).
  ``(low, high)`` pairs (Flax's form) may be larger, as in Flax, but no window may lie wholly in them;
* adaptive bins ``[floor(i*in/out), ceil((i+1)*in/out))``; fractional pooling's ``out = int(in * ratio)``
  and PyTorch's ``out + k - 1 <= in`` (the random region placement itself is traced, in ``fractional.py``).

All checks run on static shapes, so errors surface at trace time, eagerly and under ``jit``; the
argument types and ranges themselves are checked by :mod:`jaxpool._validate`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from jaxpool._validate import MAX_ELEMENTS, as_int, check_bool, int_tuple, is_sequence, real_number, window_tuple

# check_bool, int_tuple and window_tuple are re-exported: the ops import them from here.
__all__ = ["WindowGeometry", "check_bool", "int_tuple", "window_geometry", "window_tuple"]

PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]


def not_a_window(value, name: str, example: str) -> None:
    """A sequence where a number belongs (``GeMPool((2, 2))``, ``lp_pool(x, (2, 2))``) is a misplaced window."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        raise TypeError(
            f"{name} must be a number, got {value!r}, which looks like a window: pass it as window_shape=, e.g. {example}"
        )


def _padding_pairs(padding: PaddingLike, n: int) -> tuple[tuple[int, int], ...] | str:
    if isinstance(padding, str):
        word = padding.upper()
        if word not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID', 'SAME', ints or (low, high) pairs; got {padding!r}")
        return word
    pairs: list[tuple[int, int]]
    if not is_sequence(padding):
        value = as_int(padding, "padding")
        pairs = [(value, value)] * n
    elif len(padding) != n:
        raise ValueError(f"padding must have one entry per spatial dimension ({n}), got {padding!r}")
    else:
        pairs = []
        for entry in padding:
            if is_sequence(entry):
                if len(entry) != 2:
                    raise ValueError(f"padding pairs must be (low, high), got {entry!r} in {padding!r}")
                pairs.append((as_int(entry[0], "padding"), as_int(entry[1], "padding")))
            else:
                value = as_int(entry, "padding")
                pairs.append((value, value))
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return tuple(pairs)


def _has_pairs(padding) -> bool:
    """Whether ``padding`` is in Flax's ``(low, high)`` form (PyTorch's half-window rule is for ints)."""
    return is_sequence(padding) and any(is_sequence(entry) for entry in padding)


def _check_half_window(padding, pairs, window) -> None:
    """PyTorch's rule for explicit padding: at most half the (undilated) window on each side."""
    for axis, ((lo, hi), k) in enumerate(zip(pairs, window)):
        if max(lo, hi) > k // 2:
            raise ValueError(
                f"padding should be at most half of kernel size (PyTorch's rule: padding <= window_shape // 2), got "
                f"padding {padding!r} for window_shape {window} on spatial axis {axis}; use padding <= {k // 2} there, "
                "or padding='SAME'"
            )


def same_padding(size: int, extent: int, stride: int) -> tuple[int, int]:
    """TensorFlow/Flax ``"SAME"``: output ``ceil(size / stride)``, deficit split low-first."""
    out = -(-size // stride)
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def output_length(size: int, extent: int, stride: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """Number of windows along one axis (PyTorch's ``pooling_output_shape``); < 1 means none fit.

    With ``ceil_mode`` a window may be larger than the padded input, as in PyTorch.
    """
    span = size + lo + hi - extent
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + lo:
        out -= 1
    return out


@dataclasses.dataclass(frozen=True)
class WindowGeometry:
    """Resolved geometry of a strided, dilated, padded window over N spatial axes.

    Window ``o`` along axis ``i`` has taps at input positions ``o * strides[i] - pad_lo[i] +
    t * dilation[i]`` for ``t < window[i]``. ``pad_hi`` is the explicit padding; ``overhang`` the
    extra room ``ceil_mode`` needs beyond it (never counted as padding). ``bins`` (per axis
    ``None`` or ``(starts, ends)``, one pair per output) restricts window ``o`` to the taps in
    ``[starts[o], ends[o])``: uneven adaptive bins as one window that covers every bin
    (:func:`binned_geometry`).
    """

    in_shape: tuple[int, ...]
    window: tuple[int, ...]
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    pad_lo: tuple[int, ...]
    pad_hi: tuple[int, ...]
    out_shape: tuple[int, ...]
    bins: tuple[tuple[tuple[int, ...], tuple[int, ...]] | None, ...] | None = None

    @property
    def ndim(self) -> int:
        return len(self.window)

    @property
    def extent(self) -> tuple[int, ...]:
        """Span of a dilated window, ``d * (k - 1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.window, self.dilation))

    @property
    def overhang(self) -> tuple[int, ...]:
        """Room past ``in + pad_hi`` that the last (ceil_mode) window reaches into."""
        return tuple(
            max((o - 1) * s + e - (n + lo + hi), 0)
            for o, s, e, n, lo, hi in zip(self.out_shape, self.strides, self.extent, self.in_shape, self.pad_lo, self.pad_hi)
        )

    @property
    def padded(self) -> bool:
        """Whether any window reads padding or the ``ceil_mode`` overhang."""
        return any(self.pad_lo) or any(self.pad_hi) or any(self.overhang)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """Spatial shape of the input padded low, high and by the overhang."""
        return tuple(n + lo + hi + v for n, lo, hi, v in zip(self.in_shape, self.pad_lo, self.pad_hi, self.overhang))

    @property
    def window_size(self) -> int:
        return math.prod(self.window)

    @property
    def is_tiling(self) -> bool:
        """Windows tile the padded input exactly: stride == window, no dilation."""
        return self.strides == self.window and all(d == 1 for d in self.dilation)

    def tap_positions(self, axis: int) -> np.ndarray:
        """Input positions of every tap, shape ``(out, window)`` along ``axis`` (may be outside the input)."""
        o = np.arange(self.out_shape[axis])[:, None] * self.strides[axis] - self.pad_lo[axis]
        return o + np.arange(self.window[axis])[None, :] * self.dilation[axis]

    def tap_inside(self, axis: int) -> np.ndarray:
        """Boolean ``(out, window)``: does the tap lie inside the unpadded input (and inside its
        window's bin, with ``bins``) along ``axis``."""
        pos = self.tap_positions(axis)
        return (pos >= 0) & (pos < self.in_shape[axis]) & self.tap_in_bin(axis)

    def tap_in_bin(self, axis: int) -> np.ndarray:
        """Boolean ``(out, window)``: does the tap lie inside its window's bin along ``axis`` (all
        true without ``bins``; padding counts as inside)."""
        pos = self.tap_positions(axis)
        bins = None if self.bins is None else self.bins[axis]
        if bins is None:
            return np.ones(pos.shape, bool)
        starts, ends = (np.asarray(v)[:, None] for v in bins)
        return (pos >= starts) & (pos < ends)

    def spans(self, axis: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per output along ``axis``, the input rows ``[first, end)`` its window reaches, clipped to
        the input (static ranges, as :mod:`jaxpool._ranges` takes them)."""
        starts = np.arange(self.out_shape[axis]) * self.strides[axis] - self.pad_lo[axis]
        size = self.in_shape[axis]
        first, end = np.clip(starts, 0, size), np.clip(starts + self.extent[axis], 0, size)
        return tuple(int(v) for v in first), tuple(int(v) for v in end)

    def later_overlaps(self) -> tuple[tuple[int, ...], ...]:
        """Output shifts ``d``, later in row-major order, whose windows may share an input position
        with window ``o``'s (``o + d``'s: ``|d[i]| * strides[i] < extent[i]`` on every axis)."""
        reach = [min(-(-e // s) - 1, o - 1) for e, s, o in zip(self.extent, self.strides, self.out_shape)]
        shifts = itertools.product(*(range(-r, r + 1) for r in reach))
        return tuple(d for d in shifts if d > (0,) * self.ndim)

    def reflected_positions(self, axis: int) -> np.ndarray:
        """``tap_positions`` with the padding reflected into the input (edge not repeated, NumPy's
        ``mode="reflect"``); needs padding below the size along ``axis``."""
        pos, last = self.tap_positions(axis), self.in_shape[axis] - 1
        pos = np.abs(pos)
        return np.where(pos > last, 2 * last - pos, pos)

    def needs_mask(self) -> bool:
        """Whether any tap falls in padding or overhang (so a validity mask is needed)."""
        return not all(self.tap_inside(i).all() for i in range(self.ndim))

    @property
    def pooled_axes(self) -> tuple[int, ...]:
        """The spatial axes this geometry changes: a window longer than 1, or an output size that differs."""
        return tuple(i for i, (k, o, n) in enumerate(zip(self.window, self.out_shape, self.in_shape)) if k > 1 or o != n)

    def with_axis(self, axis: int, **values: int) -> WindowGeometry:
        """This geometry with the named per-axis fields replaced along ``axis``."""
        fields = {name: tuple(v if j == axis else old for j, old in enumerate(getattr(self, name))) for name, v in values.items()}
        return dataclasses.replace(self, **fields)

    def axis_only(self, axis: int, in_shape: Sequence[int]) -> WindowGeometry:
        """This geometry along ``axis`` alone, over ``in_shape``; the other axes pass through unchanged."""
        return self.axes_only((axis,), in_shape)

    def axes_only(self, axes: Sequence[int], in_shape: Sequence[int]) -> WindowGeometry:
        """This geometry along ``axes`` alone, over ``in_shape``; the other axes pass through unchanged."""

        def along(values, other):
            return tuple(v if i in axes else o for i, (v, o) in enumerate(zip(values, other)))

        ones, zeros = (1,) * self.ndim, (0,) * self.ndim
        return WindowGeometry(
            tuple(in_shape),
            along(self.window, ones),
            along(self.strides, ones),
            along(self.dilation, ones),
            along(self.pad_lo, zeros),
            along(self.pad_hi, zeros),
            along(self.out_shape, in_shape),
        )

    def block_passes(self, axis: int, blocks: int, in_shape: Sequence[int]) -> tuple[WindowGeometry, WindowGeometry]:
        """This undilated geometry's windows along ``axis`` (of ``k``) as two passes over ``in_shape``:
        runs of ``a`` consecutive elements (stride 1), then ``blocks`` (``m``) of those runs every
        ``d = k // m`` at this stride, ``(m - 1) d + a = k``: the runs overlap (``a >= d``) and
        cover the window exactly. Padding is the first pass's as far as a run still holds an input
        element; the runs wholly in padding are the second pass's padding, so that no pass takes
        padding for an element (padding never wins a tie, :func:`jaxpool.max._chained_extremum`).
        The second geometry is over the first one's output (``in_shape`` with axis ``axis`` its
        length); both keep the other axes as they are."""
        k, lo, hi = self.window[axis], self.pad_lo[axis], self.pad_hi[axis] + self.overhang[axis]
        d = k // blocks
        a = k - (blocks - 1) * d
        first_lo, first_hi = min(lo, a - 1), min(hi, a - 1)
        runs = in_shape[axis] + first_lo + first_hi - a + 1
        first = self.axis_only(axis, in_shape).with_axis(
            axis, window=a, strides=1, pad_lo=first_lo, pad_hi=first_hi, out_shape=runs
        )
        shape = tuple(runs if j == axis else n for j, n in enumerate(in_shape))
        second = self.axis_only(axis, shape).with_axis(
            axis, window=blocks, dilation=d, pad_lo=lo - first_lo, pad_hi=hi - first_hi
        )
        return first, second

    def divisor(self, axis: int, count_include_pad: bool) -> np.ndarray:
        """Per-window element count along ``axis`` (PyTorch's avg_pool divisor, one axis of it).

        With ``count_include_pad`` the window is clipped to the explicitly padded extent
        ``[-pad_lo, in + pad_hi)``; without it, to the input.
        """
        pos = self.tap_positions(axis)
        upper = self.in_shape[axis] + (self.pad_hi[axis] if count_include_pad else 0)
        lower = -self.pad_lo[axis] if count_include_pad else 0
        return ((pos >= lower) & (pos < upper)).sum(axis=1)


def window_geometry(
    in_shape: Sequence[int],
    window_shape,
    strides=None,
    padding: PaddingLike = "VALID",
    dilation=None,
    ceil_mode: bool = False,
) -> WindowGeometry:
    """Validates pooling arguments against the spatial input shape and resolves them.

    Args:
      in_shape: the N spatial sizes of the input.
      window_shape: N positive window sizes.
      strides: ``None`` (= ``window_shape``, as PyTorch and Keras), an int, or N ints.
      padding: ``"VALID"``, ``"SAME"``, an int, N ints (symmetric) or N ``(low, high)`` pairs.
      dilation: ``None`` (= 1), an int or N ints.
      ceil_mode: round the output size up (PyTorch's rule).

    Raises:
      TypeError / ValueError naming the offending argument.
    """
    window = window_tuple(window_shape)
    n = len(window)
    if not all(isinstance(v, (int, np.integer)) for v in in_shape):
        raise ValueError(
            f"spatial sizes {tuple(in_shape)} are symbolic: this op needs concrete spatial sizes (its window positions "
            "depend on them); export it with concrete spatial sizes — symbolic batch sizes work — or use "
            "max_pool/avg_pool, which accept symbolic spatial sizes"
        )
    in_shape = tuple(int(v) for v in in_shape)
    strides = window if strides is None else int_tuple(strides, n, "strides")
    dilation = (1,) * n if dilation is None else int_tuple(dilation, n, "dilation")
    check_bool(ceil_mode, "ceil_mode")
    extent = tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))
    pairs = _padding_pairs(padding, n)
    if pairs == "VALID":
        pairs = ((0, 0),) * n
    elif isinstance(pairs, str):  # "SAME"
        pairs = tuple(same_padding(size, e, s) for size, e, s in zip(in_shape, extent, strides))
    elif not _has_pairs(padding):
        _check_half_window(padding, pairs, window)
    if any(size == 0 for size in in_shape):
        raise ValueError(f"x has an empty spatial axis (spatial shape {in_shape}); pooling needs at least one position per axis")
    out = []
    for axis, (size, e, s, (lo, hi)) in enumerate(zip(in_shape, extent, strides, pairs)):
        length = output_length(size, e, s, lo, hi, bool(ceil_mode))
        if length < 1:
            dilated = f" (dilated extent {extent})" if extent != window else ""
            raise ValueError(
                f"window_shape {window}{dilated} is larger than the padded input "
                f"{tuple(a + p + q for a, (p, q) in zip(in_shape, pairs))} along spatial axis {axis}; "
                "use a smaller window_shape" + (" or dilation" if dilated else "") + ", padding='SAME', or a larger input"
            )
        out.append(length)
    geometry = WindowGeometry(
        in_shape, window, strides, dilation, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs), tuple(out)
    )
    if _has_pairs(padding):  # Flax's form: any padding, as long as every window holds an input element
        for axis in range(n):
            empty = ~geometry.tap_inside(axis).any(axis=1)
            if empty.any():
                raise ValueError(
                    f"padding {padding!r} leaves window {int(np.argmax(empty))} on spatial axis {axis} entirely in padding "
                    f"(input size {in_shape[axis]}, window_shape {window}); use less padding there"
                )
    if math.prod(geometry.padded_shape) > MAX_ELEMENTS:  # e.g. "SAME" with a huge dilation
        raise ValueError(
            f"window_shape {window} with dilation {dilation} and padding {padding!r} pads the input to spatial shape "
            f"{geometry.padded_shape}, more elements than an array can address (2**60); use a smaller window_shape "
            "or dilation, or padding='VALID'"
        )
    return geometry


def adaptive_bins(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive bins along one axis: ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def binned_geometry(in_shape: Sequence[int], axis: int, out: int) -> WindowGeometry:
    """PyTorch's adaptive bins along ``axis`` (``size = q out + r``, ``0 < r``, ``out < size``) as
    one strided window: bin ``b`` starts at ``b q + floor(b r / out)`` and ends by ``(b + 1) q + r``,
    so windows of ``q + r`` every ``q`` cover every bin, inside the input (the last ends at
    ``size``), and ``bins`` masks the ``r - 1`` or fewer taps outside each bin."""
    size = in_shape[axis]
    q, r = divmod(size, out)
    window = tuple(q + r if j == axis else 1 for j in range(len(in_shape)))
    strides = tuple(q if j == axis else 1 for j in range(len(in_shape)))
    starts, ends = adaptive_bins(size, out)
    bins = tuple((tuple(starts.tolist()), tuple(ends.tolist())) if j == axis else None for j in range(len(in_shape)))
    return dataclasses.replace(window_geometry(in_shape, window, strides), bins=bins)


AdaptivePool = tuple[tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]


def adaptive_as_pool(in_shape: Sequence[int], out_shape: Sequence[int]) -> AdaptivePool | None:
    """``(window, strides, padding)`` when PyTorch's adaptive bins are an ordinary pool on every axis,
    else ``None``: bin ``i`` is window ``i`` (``[i s - lo, i s - lo + k)``) cut to the input. Evenly
    dividing sizes, but also e.g. 50 -> 7 (windows of 8 every 7) or 512 -> 7 (74 every 73); with
    padding (at most half the window, PyTorch's limit) e.g. 90 -> 13 (8 every 7, padded by 1: the
    first and last bins are 7 long), 14 -> 5 and 20 -> 7 (4 every 3, padded by 1): a max pool's
    padding never wins (an average would have to count none)."""
    window, strides, padding = [], [], []
    for n, o in zip(in_shape, out_shape):
        found = _bins_as_windows(n, o)
        if found is None:
            return None
        k, stride, lo, hi = found
        window.append(k)
        strides.append(stride)
        padding.append((lo, hi))
    return tuple(window), tuple(strides), tuple(padding)


def _bins_as_windows(size: int, out: int) -> tuple[int, int, int, int] | None:
    """``(window, stride, pad_lo, pad_hi)`` of the pool whose windows, cut to the input, are the
    ``out`` adaptive bins over ``size`` (the least padding), or ``None``."""
    starts, ends = adaptive_bins(size, out)
    if out == 1:
        return size, size, 0, 0
    if out > size:
        return None
    lo = 0  # two bins: a window of the first's length at the second's start, unpadded
    if out > 2:  # window i starts at i s - lo: bin 1 gives s = starts[1] + lo, the last bin lo itself
        lo, uneven = divmod(int(starts[-1]) - int(starts[1]) * (out - 1), out - 2)
        if lo < 0 or uneven:
            return None
    stride, k = int(starts[1]) + lo, int(ends[0]) + lo
    hi = stride * (out - 1) - lo + k - size
    i = np.arange(out)
    inside = (np.maximum(0, stride * i - lo) == starts).all() and (np.minimum(size, stride * i - lo + k) == ends).all()
    return (k, stride, lo, hi) if inside and 0 <= hi and 2 * max(lo, hi) <= k else None


def adaptive_output_shape(in_shape: Sequence[int], output_size, name: str = "output_size") -> tuple[int, ...]:
    """Normalises an adaptive ``output_size`` (int, or N ints/None where None keeps the input size)."""
    n = len(in_shape)
    if is_sequence(output_size):
        if len(output_size) != n:
            raise ValueError(f"{name} must have one entry per spatial dimension ({n}), got {tuple(output_size)!r}")
        resolved = tuple(size if v is None else as_int(v, name) for v, size in zip(output_size, in_shape))
    else:
        resolved = (as_int(output_size, name),) * n
    if any(v < 1 for v in resolved):
        raise ValueError(f"{name} entries must be >= 1, got {resolved!r}")
    return resolved


def fractional_rank(window_shape, output_size, output_ratio) -> int:
    """N: the length of whichever of the three arguments is a sequence (they must agree)."""
    if (output_size is None) == (output_ratio is None):
        raise ValueError(
            "pass exactly one of output_size (N sizes) or output_ratio (N fractions in (0, 1]), got "
            f"output_size={output_size!r}, output_ratio={output_ratio!r}"
        )
    if window_shape is not None:
        return len(window_tuple(window_shape))
    name, value = ("output_size", output_size) if output_ratio is None else ("output_ratio", output_ratio)
    if not is_sequence(value) or len(value) == 0:
        raise TypeError(f"{name} must be a tuple with one entry per spatial dimension when window_shape is None, got {value!r}")
    return len(value)


def _fractional_ratio_output(in_shape, output_ratio) -> tuple[int, ...]:
    """PyTorch's ``int(in * ratio)`` (truncation, in Python floats) for ratios in ``(0, 1]``."""
    n = len(in_shape)
    if is_sequence(output_ratio):
        if len(output_ratio) != n:
            raise ValueError(f"output_ratio must have one entry per spatial dimension ({n}), got {tuple(output_ratio)!r}")
        ratios = tuple(output_ratio)
    else:
        ratios = (output_ratio,) * n
    for r in ratios:
        real_number(r, "output_ratio entries (output size = floor(input size * ratio))", low=0, high=1, low_open=True)
    out = tuple(int(size * float(r)) for size, r in zip(in_shape, ratios))
    for axis, (size, r, o) in enumerate(zip(in_shape, ratios, out)):
        if o < 1:
            raise ValueError(
                f"output_ratio {r!r} gives output size 0 for input size {size} on spatial axis {axis}; use a larger ratio"
            )
    return out


def fractional_output_shape(in_shape, window, output_size, output_ratio) -> tuple[int, ...]:
    """Validates the fractional geometry: ``1 <= out <= in`` and, with a window, ``out + k - 1 <= in``."""
    n = len(in_shape)
    if output_size is not None:
        out = int_tuple(output_size, n, "output_size")
        for axis, (size, o) in enumerate(zip(in_shape, out)):
            if o > size:
                raise ValueError(f"output_size {out} exceeds the input size {in_shape} on spatial axis {axis}; pooling shrinks")
    else:
        out = _fractional_ratio_output(in_shape, output_ratio)
    if window is not None:
        for axis, (size, o, k) in enumerate(zip(in_shape, out, window)):
            if k > size:
                raise ValueError(f"window_shape {window} is larger than the input {in_shape} on spatial axis {axis}")
            if o + k - 1 > size:
                raise ValueError(
                    f"window_shape {window} with output_size {out} does not fit the input {in_shape} on spatial axis "
                    f"{axis}: PyTorch requires output_size + window_shape - 1 <= input; use a smaller window or output_size"
                )
    return out
