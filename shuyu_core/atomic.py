"""Atomic writes: stage in a temporary path on the same filesystem, then rename.

A crash at any point leaves either the old state or the complete new state, never a
partial file or directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_dir(final: Path, staging_root: Path | None = None) -> Iterator[Path]:
    """Yield an empty staging directory; on success rename it to ``final``.

    ``final`` must not exist yet (snapshots and releases are immutable). On any error the
    staging directory is removed and ``final`` is untouched.
    """
    root = staging_root or final.parent
    root.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The owner tag (pid and host) lets a later sweep remove the stage of a killed run.
    from shuyu_core.journal import owner_tag

    stage = Path(
        tempfile.mkdtemp(prefix=f".{final.name}{owner_tag()}", suffix=".staging", dir=root)
    )
    try:
        yield stage
        os.rename(stage, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if absent) across threads and processes.

    ``flock`` locks belong to the open file, so two threads of one process exclude each other
    as two processes do.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
