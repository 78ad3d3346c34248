"""Snapshots of published checkpoints, so the learner's pruning never loses one.

The learner keeps only `learner.keep_checkpoints` checkpoints and deletes older ones as it
goes; an evaluation of a checkpoint can take longer than that. The evaluator therefore
hard-links a checkpoint's files into its own directory as soon as the version is
published: no bytes are copied, and the files live on (as the evaluator's links) after the
learner's `rmtree`. A checkpoint's files are never rewritten in place (the learner writes a
temporary directory and renames it), so a link is a consistent copy. Across filesystems
(no hard links) the files are copied instead.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

COMPLETE = ".snapshot-complete"
"""Written last: a snapshot directory without it is a leftover of an interrupted link and is redone."""

# What a checkpoint must hold to be evaluated (weights in either single-file or sharded form).
_NEEDED = ("config.json",)
_WEIGHTS = ("*.safetensors", "*.bin")


class SnapshotError(RuntimeError):
    """The checkpoint vanished or is incomplete (it was pruned before it could be linked)."""


def is_complete(snapshot: Path) -> bool:
    return (snapshot / COMPLETE).is_file()


def take_snapshot(checkpoint: str | Path, snapshot: str | Path) -> Path:
    """Hard-link (or copy) every file under `checkpoint` into `snapshot`; idempotent."""
    src, dst = Path(checkpoint), Path(snapshot)
    if is_complete(dst):
        return dst
    if dst.exists():
        shutil.rmtree(dst)
    try:
        for root, _dirs, files in os.walk(src):
            target = dst / Path(root).relative_to(src)
            target.mkdir(parents=True, exist_ok=True)
            for name in files:
                _link_or_copy(Path(root) / name, target / name)
        missing = [n for n in _NEEDED if not (dst / n).is_file()]
        if missing or not any(next(dst.glob(p), None) for p in _WEIGHTS):
            raise SnapshotError(f"checkpoint {src} is incomplete (no {', '.join(missing) or 'weights'}): "
                                "was it pruned while being linked?")
    except (OSError, SnapshotError) as exc:
        shutil.rmtree(dst, ignore_errors=True)
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"cannot snapshot checkpoint {src}: {exc}") from exc
    (dst / COMPLETE).write_text(str(src) + "\n")
    return dst


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP):  # no hard links here: copy instead
            raise
        shutil.copy2(src, dst)


def drop_snapshot(snapshot: str | Path) -> None:
    """Remove a snapshot (its links only; the learner's files are its own business)."""
    shutil.rmtree(snapshot, ignore_errors=True)
