"""The pod's /dev/shm: a size-limited tmpfs shared by the pod's containers."""

from __future__ import annotations

from pathlib import Path

from base.errors import AlreadyExists, Internal, InvalidArgument
from sandbox.mounts import MS_NODEV, MS_NOEXEC, MS_NOSUID, is_mountpoint, mount, umount_all


def mount_shm(path: Path, size_bytes: int) -> None:
    """Mount a tmpfs (mode 1777, nosuid,nodev,noexec, ``size_bytes``) at ``path``.

    Creates the directory if needed; refuses a path that already has a mount.
    """
    if size_bytes <= 0:
        raise InvalidArgument(f"shm size must be a positive number of bytes, not {size_bytes}")
    path.mkdir(parents=True, exist_ok=True)
    if is_mountpoint(path):
        raise AlreadyExists(f"something is already mounted at {path}; unmount it first")
    try:
        mount(
            "shm",
            path,
            "tmpfs",
            MS_NOSUID | MS_NODEV | MS_NOEXEC,
            f"mode=1777,size={size_bytes}",
        )
    except OSError as exc:
        raise Internal(f"cannot mount the pod's shm tmpfs at {path}: {exc.strerror}") from exc


def unmount_shm(path: Path) -> None:
    """Lazily unmount the shm tmpfs at ``path``; idempotent. The directory is kept."""
    try:
        umount_all(path)
    except OSError as exc:
        raise Internal(f"cannot unmount the pod's shm at {path}: {exc.strerror}") from exc
