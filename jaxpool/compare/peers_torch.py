"""PyTorch as a peer in ``python -m jaxpool.compare``: optional, always on the CPU.

Tensors are NCHW in channels_last memory format (the same bytes as the NHWC JAX input). torch is
imported lazily, after setting ``OMP_WAIT_POLICY=PASSIVE`` (unless already set): libgomp's default
spin-waiting makes its threads compete with the timed work, about 3x slower on a busy 2-core machine.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from jaxpool.compare.config import Config, Prepared, as_float64


@functools.cache
def load():
    """The ``torch`` module (threads = usable cores), or None if it is not installed."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return torch


def unavailable_reason() -> str | None:
    """Why the torch implementation cannot run here, or None."""
    return None if load() is not None else "PyTorch is not installed (pip install torch==2.13.0 for the CPU build)"


def torch_pool(c: Config):
    """``torch.nn.functional``'s version of ``c``'s op on NCHW tensors, or None (no PyTorch, or no such op)."""
    torch, build = load(), c.spec.torch
    return None if torch is None or build is None else build(torch, c)


def _to_torch(a: np.ndarray, dtype: str):
    """NHWC NumPy -> NCHW tensor of ``dtype`` in channels_last memory format (2-d and 3-d)."""
    torch = load()
    if torch is None:
        raise RuntimeError(unavailable_reason())
    perm = (0, a.ndim - 1, *range(1, a.ndim - 1))
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(*perm).to(getattr(torch, dtype))
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(a.ndim, torch.contiguous_format)
    return t.contiguous(memory_format=fmt)


def _to_numpy(t) -> np.ndarray:
    """NCHW tensor -> NHWC float64 NumPy."""
    perm = (0, *range(2, t.ndim), 1)
    return as_float64(t.detach().float().permute(*perm).cpu().numpy())


def prepare(pool, config: Config, x: np.ndarray, ct: np.ndarray, *, measure: bool = True) -> Prepared:
    """Runs forward+backward once with autograd; the thunks time the same calls. No compile-side stats."""
    del measure  # nothing extra to measure: torch has no compiled program to inspect here
    xt, ctt = _to_torch(x, config.dtype), _to_torch(ct, config.dtype)
    xg = xt.clone().requires_grad_(True)

    def fwd_bwd():
        xg.grad = None
        y = pool(xg)
        y.backward(ctt)
        return y, xg.grad

    y, dx = fwd_bwd()
    return Prepared(_to_numpy(y), _to_numpy(dx), {"fwd": lambda: pool(xt), "fwd_bwd": fwd_bwd})
