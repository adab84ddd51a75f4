"""Verified orbax checkpoints for :func:`training.train`: a run never resumes into garbage nor loses its last good state.

API::

    digest(state) -> str                      # sha256 of every array (path, dtype, shape, bytes); ValueError if not finite
    Checkpoints(out_dir, keep=2)              # out_dir/checkpoints/<epoch>, all processes take part
        .restore_latest(abstract_state, check_meta) -> (state, meta) | None
        .save(epoch, state, meta)             # saves, reads back, verifies, then prunes to the newest `keep`
        .latest_verified -> int | None        # the epoch of the newest checkpoint known to verify
        .close()

Each checkpoint holds the train state (orbax ``StandardSave``) and a JSON ``meta`` that records,
among the epoch, history and config, ``state_sha256``: :func:`digest` of the state computed when it
was saved. A checkpoint *verifies* when it restores without error, its arrays hash to that digest
and every float is finite. So flipped bytes, a truncated or deleted data file and broken metadata
are all caught, whether tensorstore notices them or the bytes decode to other numbers.

- Restoring tries the newest checkpoint first; one that does not verify is moved out of the way to
  ``out_dir/corrupt_checkpoints/<epoch>`` (kept for inspection, never deleted) with a one-line
  warning on stderr, and the next older one is tried. If none verifies, the run starts afresh.
- Saving is synchronous: the new checkpoint is written, read back and verified, and only then are
  checkpoints older than the newest ``keep`` deleted. orbax's own ``max_to_keep`` is off, because
  it deletes old checkpoints as soon as a new one is *written*, before anyone knows that the new
  one is good; so the last verified checkpoint always survives a bad save.
- With several processes (``jax.distributed``), every process restores and verifies; a checkpoint
  counts as good only if it verifies on all of them, and process 0 moves bad ones aside.
"""

from __future__ import annotations

import hashlib
import os
import sys

import jax
import numpy as np

CORRUPT_DIR = "corrupt_checkpoints"


def _host_value(leaf) -> np.ndarray:
    """A replicated (or host) array's full value, also when other processes hold copies."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)
    return np.asarray(leaf)


def digest(state) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes. Raises ValueError if a float is not finite."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(state), key=lambda kv: jax.tree_util.keystr(kv[0])):
        value = _host_value(leaf)
        name = jax.tree_util.keystr(path)
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            raise ValueError(f"{name} holds non-finite values")
        h.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def _all_agree(ok: bool) -> bool:
    """True when ``ok`` holds on every process."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


class Checkpoints:
    """Verified checkpoints under ``out_dir/checkpoints``; step = completed epochs (see module docstring)."""

    def __init__(self, out_dir: str, keep: int = 2):
        import orbax.checkpoint as ocp

        self.ocp, self.keep, self.out_dir = ocp, keep, os.path.abspath(out_dir)
        self.directory = os.path.join(self.out_dir, "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.latest_verified = None

    def _verify(self, epoch: int, abstract_state, check_meta=None):
        """``(state, meta, None)`` if checkpoint ``epoch`` verifies on every process, else ``(None, None, reason)``.

        ``check_meta(meta)`` runs between reading the meta and restoring the state (a checkpoint of
        another model is the user's mistake, not damage: it must not be moved aside).
        """
        args = self.ocp.args
        state = meta = reason = None
        try:
            meta = self.manager.restore(epoch, args=args.Composite(meta=args.JsonRestore()))["meta"]
            if not isinstance(meta, dict) or "state_sha256" not in meta:
                reason = "no recorded hash (saved by an older version, or its metadata is broken)"
        except Exception as error:  # orbax / JSON errors of damaged metadata
            reason = _reason(error)
        if not _all_agree(reason is None):
            reason = reason or "its metadata does not read on another process"
        elif check_meta is not None:
            check_meta(meta)
        if reason is None:
            try:
                restored = self.manager.restore(epoch, args=args.Composite(state=args.StandardRestore(abstract_state)))
                state = restored["state"]
                if digest(state) != meta["state_sha256"]:
                    reason = "its arrays do not match the hash recorded when it was saved"
            except Exception as error:  # orbax / tensorstore errors of damaged data, non-finite values
                reason = _reason(error)
        if not _all_agree(reason is None):
            return None, None, reason or "it does not verify on another process"
        return state, meta, None

    def _set_aside(self, epoch: int, reason: str) -> None:
        target = os.path.join(self.out_dir, CORRUPT_DIR, str(epoch))
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            suffix = 0
            while os.path.exists(target + (f".{suffix}" if suffix else "")):
                suffix += 1
            target += f".{suffix}" if suffix else ""
            os.replace(os.path.join(self.directory, str(epoch)), target)
            print(f"warning: checkpoint of epoch {epoch} failed verification ({reason}); moved to {target}", file=sys.stderr)
        _barrier(f"jaxpool-set-aside-{epoch}")
        self.manager.reload()

    def restore_latest(self, abstract_state, check_meta=None):
        """The newest checkpoint that verifies as ``(state, meta)``, or None (nothing to resume).

        ``check_meta(meta)`` runs on a verified checkpoint's meta before it is used (it may refuse
        a checkpoint of another model or config by raising ``SystemExit``).
        """
        tried = False
        for epoch in sorted(self.manager.all_steps(), reverse=True):
            state, meta, reason = self._verify(epoch, abstract_state, check_meta)
            if reason is not None:
                self._set_aside(epoch, reason)
                tried = True
                continue
            if tried and jax.process_index() == 0:
                print(f"warning: resuming from the newest checkpoint that verifies, epoch {epoch}", file=sys.stderr)
            self.latest_verified = epoch
            return state, meta
        if tried and jax.process_index() == 0:
            print(f"warning: no checkpoint in {self.directory} verifies; starting afresh", file=sys.stderr)
        return None

    def save(self, epoch: int, state, meta: dict) -> None:
        """Saves ``state`` and ``meta`` as ``epoch``, verifies the written checkpoint, then prunes old ones.

        Raises ``ValueError`` (nothing written) if the state is not finite and ``RuntimeError`` if the
        written checkpoint does not verify (it is moved aside; the older ones are kept).
        """
        meta = {**meta, "state_sha256": digest(state)}
        args = self.ocp.args
        self.manager.save(epoch, args=args.Composite(state=args.StandardSave(state), meta=args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
        _, _, reason = self._verify(epoch, abstract)
        if reason is not None:
            self._set_aside(epoch, reason)
            raise RuntimeError(
                f"the checkpoint of epoch {epoch} did not verify right after saving ({reason}); "
                f"the last good one is epoch {self.latest_verified} (is the disk full or failing?)"
            )
        self.latest_verified = epoch
        for old in sorted(self.manager.all_steps())[: -self.keep]:
            self.manager.delete(old)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
