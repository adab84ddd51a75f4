"""XLA alone: a max fold over stride-2 phase-view taps of a 16-bit input, against float32.

    python benchmarks/xla_16bit_taps.py [--rounds 8] [--shape 32 56 56 64]

jaxpool upcasts 16-bit floats to float32 before folding a max window (exact: order, ties and NaN
are kept), and folds 3x3/2 pad 1 as nine row shifts of the input's stride-2 phase view (a reshape
to ``(N, H/2, 2, W/2, 2, C)``, a slice per phase, a pad of -inf per shifted tap). This program is
that fold in plain ``jax.lax``, no jaxpool, timed on a float32 input and on a bfloat16 (or float16)
input converted first, by ``astype`` or by moving its bits (``u16 << 16``: bfloat16's exact float32),
or folded in its own dtype, or with each channel pair read as one uint32 word; the float32 upcast
written by a program of its own and then folded; then the same fold without the shifted taps' pads
(the four phases alone), which shows that the pads are what the 16-bit source slows. Inference
only, one process, rounds interleaved, medians.

Why (forty-second session, from XLA's dumped LLVM IR, ``XLA_FLAGS=--xla_dump_to``): the float32
fold is vectorised, its padded taps read by ``llvm.masked.load.v8f32``; the bfloat16 one is all
scalar. x86 has masked vector loads of 32- and 64-bit elements from AVX on, of 16-bit ones only
with AVX-512BW, so on an AVX2 host LLVM leaves any loop that loads 16 bits conditionally scalar.
Channel pairs as uint32 words do not help: XLA:CPU writes the width-changing bitcast to memory
(a loop of shifts) and the fold that repacks its two halves stays scalar. Writing the upcast first
does (jaxpool._lowering.upcasts_apart).

Seen on a Zen 3 EPYC (AVX2, no AVX-512, 2 CPUs; jax 0.10.2), 2026-12-07, (32, 56, 56, 64): float32
1.3-1.5 ms, bfloat16 upcast 7.5-9.6 ms by ``astype`` and 11 ms by its bits, folded in bfloat16
32-35 ms, as uint32 channel pairs 16.9 ms; the four unshifted phases 0.9 ms in float32, 0.5-0.9 ms
from bfloat16. The upcast written first, then folded: 4.0 ms (against astype 10.0, float32 2.4 in
that run). On the AMD EPYC
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


def phase_taps(v, shifted: bool = True, low=None):
    """The taps of 3x3/2 pad 1 windows over ``v`` (N, H, W, C) as shifts of its stride-2 phase view."""
    n, h, w, c = v.shape
    view = v.reshape(n, h // 2, 2, w // 2, 2, c)
    low = jnp.asarray(-jnp.inf, v.dtype) if low is None else low

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
    return [t.reshape(n, h // 2, w // 2, c) for t in taps]


def phase_fold(v, shifted: bool = True):
    """Max of 3x3/2 pad 1 windows over ``v`` (N, H, W, C) as taps of its stride-2 phase view."""
    taps = phase_taps(v, shifted)
    best = taps[0]
    for t in taps[1:]:
        best = jnp.maximum(best, t)
    return best


def pairs_fold(v):
    """``phase_fold`` of a bfloat16 ``v`` whose channel pairs are read as one uint32 each.

    Each tap's 32-bit word holds two channels; its halves, moved to the high half of a float32,
    are their exact float32 values. Two float32 folds, and the maxima's high halves packed again.
    """
    n, h, w, c = v.shape
    words = lax.bitcast_convert_type(v.reshape(n, h, w, c // 2, 2), jnp.uint32)
    low = jnp.asarray(0xFF80FF80, jnp.uint32)  # -inf in both halves
    high_mask = jnp.uint32(0xFFFF0000)
    best_hi = best_lo = None
    for t in phase_taps(words, low=low):
        hi = lax.bitcast_convert_type(t & high_mask, jnp.float32)
        lo = lax.bitcast_convert_type(lax.shift_left(t, jnp.uint32(16)), jnp.float32)
        best_hi = hi if best_hi is None else jnp.maximum(best_hi, hi)
        best_lo = lo if best_lo is None else jnp.maximum(best_lo, lo)
    hi_bits = lax.bitcast_convert_type(best_hi, jnp.uint32) & high_mask
    lo_bits = lax.shift_right_logical(lax.bitcast_convert_type(best_lo, jnp.uint32), jnp.uint32(16))
    packed = lax.bitcast_convert_type(hi_bits | lo_bits, jnp.bfloat16)
    return packed.reshape(n, h // 2, w // 2, c)


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
        programs["bfloat16 channel pairs as uint32"] = (pairs_fold, x16)
    upcast = jax.jit(lambda v: v.astype(jnp.float32))
    fold_wide = jax.jit(lambda w: phase_fold(w).astype(args.dtype))
    written = f"{args.dtype} upcast written, then folded"
    compiled = {name: (jax.jit(f).lower(a).compile(), a) for name, (f, a) in programs.items()}
    compiled[written] = (lambda v: fold_wide(upcast(v)), x16)  # two programs: the upcast in memory
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
