"""Hypothesis strategies for pooling geometry, with validity decided by the NumPy reference."""

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from tests import reference as ref


def every_window_touches_input(spatial, window, strides, pairs, dilation, ceil_mode):
    """True when no window lies entirely in padding (such windows, and their indices, are tested in test_edge_semantics)."""
    for n, k, s, (lo, hi), d in zip(spatial, window, strides, pairs, dilation):
        out = ref.output_size(n, k, s, lo, hi, d, ceil_mode)
        if out < 1:
            return False
        pos = np.arange(out)[:, None] * s - lo + np.arange(k)[None, :] * d
        if not ((pos >= 0) & (pos < n)).any(axis=1).all():
            return False
    return True


@st.composite
def pool_geometry(draw, max_dims=3, dilation=True, same=True):
    """A valid pooling configuration: jaxpool arguments plus the reference's normalised ones."""
    n = draw(st.integers(1, max_dims))
    window = tuple(draw(st.integers(1, 4 if n < 3 else 3)) for _ in range(n))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(n)) if dilation else (1,) * n
    extent = [d * (k - 1) + 1 for k, d in zip(window, dil)]
    style = draw(st.sampled_from(["pairs", "ints", "SAME", "VALID"] if same else ["pairs", "ints", "VALID"]))
    spatial = tuple(draw(st.integers(1, e + 7)) for e in extent)
    if style == "SAME":
        pairs = tuple(ref.same_padding(size, k, s, d) for size, k, s, d in zip(spatial, window, strides, dil))
        padding = "SAME"
    elif style == "VALID":
        pairs, padding = ((0, 0),) * n, "VALID"
    elif style == "ints":
        padding = tuple(draw(st.integers(0, k // 2)) for k in window)  # PyTorch: at most half the window
        pairs = tuple((p, p) for p in padding)
    else:
        pairs = tuple((draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2))) for k in window)
        padding = pairs
    ceil_mode = draw(st.booleans())
    assume(every_window_touches_input(spatial, window, strides, pairs, dil, ceil_mode))
    return dict(spatial=spatial, window=window, strides=strides, dilation=dil, padding=padding, pairs=pairs, ceil_mode=ceil_mode)


layouts = st.tuples(st.sampled_from(("channels_last", "channels_first")), st.sampled_from(((), (2,), (2, 1))))
