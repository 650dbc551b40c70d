"""mount(2)/umount2(2) through ctypes, and reading /proc/self/mountinfo.

These calls act on the daemon's mount namespace as a whole and never change
the calling thread's namespaces, so they are safe on any daemon thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MNT_DETACH = 0x2

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
STATX_ATTR_MOUNT_ROOT = 0x2000  # Linux 5.8
_STATX_SIZE = 256  # sizeof(struct statx)

MOUNTINFO = Path("/proc/self/mountinfo")


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    libc.statx.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_char_p,
    ]
    libc.statx.restype = ctypes.c_int
    return libc


def mount(source: str, target: Path, fstype: str | None, flags: int, data: str | None) -> None:
    """Call mount(2); raise OSError (with errno) on failure."""
    rc = _libc().mount(
        source.encode(),
        os.fsencode(target),
        fstype.encode() if fstype is not None else None,
        flags,
        data.encode() if data is not None else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}", str(target))


def umount_detach(target: Path) -> bool:
    """Lazily unmount the topmost mount on ``target``.

    Returns False when nothing is mounted there (or the path is gone), True
    when a mount was detached; other failures raise OSError.
    """
    rc = _libc().umount2(os.fsencode(target), MNT_DETACH)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(err, f"umount {target}: {os.strerror(err)}", str(target))


def umount_all(target: Path, limit: int = 16) -> int:
    """Detach every mount stacked on ``target``; return how many were detached."""
    count = 0
    while count < limit and umount_detach(target):
        count += 1
    return count


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (the fields peapod uses)."""

    mount_point: str
    root: str
    fstype: str
    source: str
    options: str
    super_options: str
    optional: tuple[str, ...] = ()  # propagation tags: shared:N, master:N, ...


def _unescape(field: str) -> str:
    """Undo mountinfo's octal escapes (\\040 for space and so on)."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse mountinfo text into entries, in the kernel's order."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split()
        rf = right.split()
        if len(lf) < 6 or len(rf) < 3:
            continue
        entries.append(
            MountEntry(
                mount_point=_unescape(lf[4]),
                root=_unescape(lf[3]),
                fstype=rf[0],
                source=_unescape(rf[1]),
                options=lf[5],
                super_options=rf[2],
                optional=tuple(lf[6:]),
            )
        )
    return entries


def mounts_at(path: Path) -> list[MountEntry]:
    """The mounts whose mount point is exactly ``path`` (bottom first)."""
    target = os.path.abspath(path)
    return [e for e in parse_mountinfo(MOUNTINFO.read_text()) if e.mount_point == target]


def is_mountpoint(path: Path) -> bool:
    """Tell whether something is mounted exactly at ``path``.

    One statx(2) (STATX_ATTR_MOUNT_ROOT) instead of reading mountinfo, whose cost
    grows with every mount on the host; ``mounts_at`` on kernels before 5.8.
    """
    root = _mount_root(path)
    return bool(mounts_at(path)) if root is None else root


def mount_points_met(directory: Path, files: bool = True) -> list[str]:
    """The mount points a walk of ``directory`` meets (itself included), not entering them.

    Empty exactly when nothing is mounted at or below ``directory``: a mount hidden
    under another one lies inside a mount point the walk meets. One statx(2) per
    entry (per directory without ``files``: enough before a deletion, which cannot
    unlink a mounted file but would empty a mounted directory), so the cost follows
    the directory's size, not the host's mount count; ``/proc/self/mountinfo`` on
    kernels before 5.8.
    """
    met: list[str] = []
    pending = [(os.path.abspath(directory), True)]
    while pending:
        path, is_dir = pending.pop()
        root = _mount_root(Path(path))
        if root is None:
            prefix = os.path.abspath(directory).rstrip("/") + "/"
            return [e.mount_point for e in parse_mountinfo(MOUNTINFO.read_text())
                    if e.mount_point + "/" == prefix or e.mount_point.startswith(prefix)]
        if root:
            met.append(path)
        elif is_dir:
            try:
                with os.scandir(path) as entries:  # a symlink is never a mount point
                    for e in entries:
                        is_dir = e.is_dir(follow_symlinks=False)
                        if is_dir or (files and not e.is_symlink()):
                            pending.append((e.path, is_dir))
            except (FileNotFoundError, NotADirectoryError):
                continue
    return met


def _mount_root(path: Path) -> bool | None:
    """statx's answer to "is ``path`` a mount's root?"; None if the kernel cannot say."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT
    if _libc().statx(AT_FDCWD, os.fsencode(os.path.abspath(path)), flags, 0, buf) != 0:
        err = ctypes.get_errno()
        return False if err in (errno.ENOENT, errno.ENOTDIR) else None
    attributes, known = (int.from_bytes(buf.raw[o : o + 8], sys.byteorder) for o in (8, 56))
    if not known & STATX_ATTR_MOUNT_ROOT:
        return None
    return bool(attributes & STATX_ATTR_MOUNT_ROOT)
