"""ID-mapped mounts: open_tree(2), mount_setattr(2) and move_mount(2) through ctypes.

``idmapped_clone`` makes a copy of the mount tree at a path whose file ownership is
translated through a user namespace's mappings (``MOUNT_ATTR_IDMAP``, Linux 5.12;
overlayfs takes such mounts as lower layers from 5.19) and attaches it elsewhere. A
file owned by uid 0 on disk shows as the namespace's host uid for 0, so inside the
namespace it is root's, and nothing on disk is copied or chowned.

Like ``sandbox.mounts``, these calls act on the daemon's mount namespace and never
change a thread's namespaces, so any thread may make them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from functools import cache
from pathlib import Path
from typing import Any

from base.errors import FailedPrecondition, Internal
from sandbox.mounts import MOUNTINFO, parse_mountinfo

# The syscall numbers: one table for every architecture since Linux 5.1, except these.
_GENERIC = {"open_tree": 428, "move_mount": 429, "mount_setattr": 442}
_NUMBERS = {
    "x86_64": _GENERIC,
    "aarch64": _GENERIC,
    "riscv64": _GENERIC,
    "s390x": _GENERIC,
    "ppc64le": _GENERIC,
}

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x100000


class MountAttr(ctypes.Structure):
    """struct mount_attr (MOUNT_ATTR_SIZE_VER0)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


@cache
def _syscall() -> tuple[Any, dict[str, int]]:
    numbers = _NUMBERS.get(platform.machine())
    if numbers is None:
        raise FailedPrecondition(
            f"ID-mapped mounts: peapod does not know the mount syscall numbers of "
            f"{platform.machine()}"
        )
    fn = ctypes.CDLL(None, use_errno=True).syscall
    fn.restype = ctypes.c_long
    return fn, numbers


def _call(name: str, *args: object) -> int:
    fn, numbers = _syscall()
    rc = int(fn(ctypes.c_long(numbers[name]), *args))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def idmapped_clone(source: Path, target: Path, userns_file: Path) -> None:
    """Attach at ``target`` a recursive copy of ``source`` mapped through ``userns_file``.

    ``target`` must exist (a directory for a directory). FailedPrecondition when the
    filesystem (of ``source`` or one of its submounts) or the kernel cannot map ids,
    with the kernel's reason; nothing is left attached on failure.
    """
    try:
        tree = _call("open_tree", ctypes.c_int(AT_FDCWD), os.fsencode(source),
                     ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE))  # fmt: skip
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise FailedPrecondition(
                "this kernel has no open_tree(2) (Linux 5.2); ID-mapped mounts need 5.12"
            ) from None
        raise Internal(f"cannot clone the mount at {source}: {exc.strerror}") from None
    try:
        try:
            userns = os.open(userns_file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise FailedPrecondition(
                f"the pod's user namespace is no longer pinned at {userns_file} "
                f"({exc.strerror}); the pod cannot take new containers: remove it and run it "
                "again"
            ) from None
        try:
            attr = MountAttr(attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns)
            _call("mount_setattr", ctypes.c_int(tree), b"",
                  ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE), ctypes.byref(attr),
                  ctypes.c_size_t(ctypes.sizeof(attr)))  # fmt: skip
        except OSError as exc:
            raise FailedPrecondition(_why_not(source, exc)) from None
        finally:
            os.close(userns)
        try:
            _call("move_mount", ctypes.c_int(tree), b"", ctypes.c_int(AT_FDCWD),
                  os.fsencode(target), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))  # fmt: skip
        except OSError as exc:
            raise Internal(f"cannot attach the ID-mapped copy of {source} at {target}: "
                           f"{exc.strerror}") from None  # fmt: skip
    finally:
        os.close(tree)  # a copy never attached goes with its last descriptor


def _why_not(source: Path, exc: OSError) -> str:
    fstype = _fstype(source)
    if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM, errno.ENOSYS):
        return (
            f"cannot make an ID-mapped mount of {source}: its filesystem ({fstype}) or one "
            f"mounted below it cannot map ids (Linux 5.12+ and a filesystem with idmap "
            f"support, such as ext4, xfs, btrfs or tmpfs, are needed): {exc.strerror}"
        )
    return f"cannot make an ID-mapped mount of {source} ({fstype}): {exc.strerror}"


def _fstype(path: Path) -> str:
    """The filesystem type of the mount holding ``path`` (longest mount point prefix)."""
    try:
        real = os.path.realpath(path)
        best = ("", "unknown")
        for e in parse_mountinfo(MOUNTINFO.read_text()):
            mp = e.mount_point
            inside = real == mp or real.startswith(mp.rstrip("/") + "/")
            if inside and len(mp) >= len(best[0]):
                best = (mp, e.fstype)
        return best[1]
    except OSError:
        return "unknown"
