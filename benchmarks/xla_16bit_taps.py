"""XLA alone: a max fold over stride-2 phase-view taps of a 16-bit input, against float32.

    python benchmarks/xla_16bit_taps.py [--rounds 8] [--shape 32 56 56 64]

jaxpool upcasts 16-bit floats to float32 before folding a max window (exact: order, ties and NaN
are kept), and folds 3x3/2 pad 1 as nine row shifts of the input's stride-2 phase view (a reshape
to ``(N, H/2, 2, W/2, 2, C)``, a slice per phase, a pad of -inf per shifted tap). This program is
that fold in plain ``jax.lax``, no jaxpool, timed on a float32 input and on a bfloat16 (or float16)
input converted first, by ``astype`` or by moving its bits (``u16 << 16``: bfloat16's exact float32),
or folded in its own dtype; then the same fold without the shifted taps' pads (the four phases
alone), which shows that the pads are what the 16-bit source slows. Inference only, one process,
rounds interleaved, medians.

Seen on a Zen 3 EPYC (AVX2, no AVX-512, 2 CPUs; jax 0.10.2), 2026-12-07, (32, 56, 56, 64): float32
1.3-1.5 ms, bfloat16 upcast 7.5-9.6 ms by ``astype`` and 11 ms by its bits, folded in bfloat16
32-35 ms; the four unshifted phases 0.9 ms in float32, 0.5-0.9 ms from bfloat16. On the AMD EPYC
of the earlier sessions (AVX-512) jaxpool's own bfloat16 3x3/2 pad 1 ran faster than its float32
(RESULTS_breadth.md, thirty-ninth session: 4.49 against 5.85 ms forward+backward).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _upcast_bits(x):
    """bfloat16 -> float32 by its bits: the 16 bits become the high half of a float32."""
    wide = lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    return lax.bitcast_convert_type(lax.shift_left(wide, jnp.uint32(16)), jnp.float32)


def phase_fold(v, shifted: bool = True):
    """Max of 3x3/2 pad 1 windows over ``v`` (N, H, W, C) as taps of its stride-2 phase view."""
    n, h, w, c = v.shape
    view = v.reshape(n, h // 2, 2, w // 2, 2, c)
    low = jnp.asarray(-jnp.inf, v.dtype)

    def tap(ph, pw, dh, dw):  # phase (ph, pw) shifted down by dh rows and right by dw columns
        piece = lax.slice(view, (0, 0, ph, 0, pw, 0), (n, h // 2, ph + 1, w // 2, pw + 1, c))
        if dh or dw:
            config = ((0, 0, 0), (dh, 0, 0), (0, 0, 0), (dw, 0, 0), (0, 0, 0), (0, 0, 0))
            piece = lax.slice(lax.pad(piece, low, config), (0,) * 6, piece.shape)
        return piece

    taps = [tap(1, 1, 1, 1), tap(1, 0, 1, 0), tap(1, 1, 1, 0), tap(0, 1, 0, 1), tap(0, 0, 0, 0)]
    taps += [tap(0, 1, 0, 0), tap(1, 1, 0, 1), tap(1, 0, 0, 0), tap(1, 1, 0, 0)]
    if not shifted:
        taps = [tap(ph, pw, 0, 0) for ph in range(2) for pw in range(2)]
    best = taps[0]
    for t in taps[1:]:
        best = jnp.maximum(best, t)
    return best.reshape(n, h // 2, w // 2, c)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--shape", type=int, nargs=4, default=(32, 56, 56, 64))
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = ap.parse_args()
    x32 = jnp.asarray(np.random.default_rng(0).standard_normal(args.shape, np.float32))
    x16 = x32.astype(args.dtype)
    programs = {
        "float32": (lambda v: phase_fold(v), x32),
        f"{args.dtype} astype float32": (lambda v: phase_fold(v.astype(jnp.float32)).astype(v.dtype), x16),
        f"{args.dtype} folded as is": (lambda v: phase_fold(v), x16),
        "float32, phases unshifted": (lambda v: phase_fold(v, shifted=False), x32),
        f"{args.dtype} astype float32, phases unshifted": (
            lambda v: phase_fold(v.astype(jnp.float32), shifted=False).astype(v.dtype),
            x16,
        ),
    }
    if args.dtype == "bfloat16":
        programs["bfloat16 bits to float32"] = (lambda v: phase_fold(_upcast_bits(v)).astype(v.dtype), x16)
    compiled = {name: (jax.jit(f).lower(a).compile(), a) for name, (f, a) in programs.items()}
    times: dict[str, list[float]] = {name: [] for name in compiled}
    for r in range(args.rounds):
        for name in list(compiled)[:: 1 if r % 2 == 0 else -1]:
            fn, a = compiled[name]
            start = time.perf_counter()
            for _ in range(5):
                fn(a).block_until_ready()
            times[name].append((time.perf_counter() - start) / 5 * 1e3)
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}, shape {tuple(args.shape)}")
    for name, ts in times.items():
        print(f"  {name:45s} {np.median(ts):7.2f} ms")


if __name__ == "__main__":
    main()
