"""File helpers of the image store: durable writes, flushes and removals."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from pathlib import Path

from base.errors import Internal, PeapodError, ResourceExhausted

log = logging.getLogger("peapod.images")


def write_error(exc: OSError, path: Path) -> PeapodError:
    """The error for an object of the store that cannot be written (disk full, I/O error)."""
    what = f"blob {path.parent.name}:{path.name}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(
            f"no space left storing {what} in the image store {path.parents[2]}: "
            f"{exc.strerror}; free space there (or remove unused images) and pull again",
            reason="NO_SPACE",
        )
    return Internal(f"cannot store {what} in the image store: {exc}", reason="STORE_WRITE")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - glibc is always there on Debian
    _libc = None


def syncfs(path: Path) -> None:
    """Flush the filesystem holding ``path`` (all of a new layer's files at once)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc is not None and _libc.syncfs(fd) == 0:
            return
    finally:
        os.close(fd)
    os.sync()


def remove_path(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def rmtrees(paths: list[Path]) -> None:
    for path in paths:
        try:
            shutil.rmtree(path)
        except OSError as exc:  # left for the next start-up's tmp/ cleanup
            log.warning(
                "cannot delete a collected layer", extra={"dir": str(path), "error": str(exc)}
            )
