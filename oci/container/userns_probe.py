"""Can this host run pods in their own user namespace? Asked once, at start-up.

Everything a ``hostUsers: false`` pod needs from the kernel and the filesystems is
tried for real, the way pods do it, in a scratch directory under the root dir
(the image layers' filesystem): a user namespace with network, IPC and UTS
namespaces inside (``sandbox.userns``), an ID-mapped copy of a directory
(``sandbox.idmap``), and an overlay over that copy whose files show the mapped
owner. The runtime's own part is its ``features`` (``runtimes``). The answer is ""
or the reason it cannot; Status advertises ``user_namespaces`` only for "".

The runtime reaches a container's rootfs and bind sources as the pod's root, not
host root, so the run directory and every directory above it must be searchable
by others (o+x); the probe says so rather than changing modes of directories
peapod does not own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from base.errors import PeapodError
from oci.container import rootfs
from sandbox.idmap import idmapped_clone
from sandbox.idmappings import IdMapping, UserNamespaceMappings
from sandbox.mounts import umount_all
from sandbox.namespaces import KINDS, unpin
from sandbox.teardown import mounts_below
from sandbox.userns import pin_in_user_namespace

log = logging.getLogger("peapod.runtime")

PREFIX = ".userns-probe-"
# A range no kubelet hands out (it allocates from 65536 up in blocks of 65536).
_PROBE = IdMapping(0, 4_000_000_000, 65536)


def probe_user_namespaces(root_dir: Path, run_dirs: list[Path]) -> str:
    """"" if pods in their own user namespace work here, else the reason they do not.

    ``run_dirs`` are where bundles and pod files live (under the runroot).
    """
    why = _kernel() or next(filter(None, map(_searchable, run_dirs)), "")
    if not why:
        why = _try(root_dir)
    if why:
        log.info("user namespaces not offered", extra={"reason": why})
    return why


def _kernel() -> str:
    if not os.path.exists("/proc/self/ns/user"):
        return "the kernel has no user namespaces (CONFIG_USER_NS)"
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        limit = 1
    if limit <= 0:
        return "user namespaces are disabled (user.max_user_namespaces is 0)"
    return ""


def _searchable(run_dir: Path) -> str:
    """Why the runtime, as the pod's root, could not reach into ``run_dir``; "" if it can."""
    path = Path(os.path.abspath(run_dir))
    for directory in (path, *path.parents):
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            continue  # peapod creates it (0755)
        if not mode & stat.S_IXOTH:
            return (
                f"{directory} is not searchable by others (mode {stat.S_IMODE(mode):04o}); the "
                "runtime reaches a user-namespaced container's rootfs as the pod's root, so "
                "the run directory and its parents need o+x"
            )
    return ""


def _try(root_dir: Path) -> str:
    root_dir.mkdir(parents=True, exist_ok=True)
    for stale in root_dir.glob(f"{PREFIX}*"):  # left by a daemon killed mid-probe
        _remove(stale)
    scratch = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root_dir))
    mappings = UserNamespaceMappings(uids=(_PROBE,), gids=(_PROBE,))
    try:
        ns = pin_in_user_namespace(scratch / "ns", set(KINDS), mappings)
        layer, mapped, merged = scratch / "layer", scratch / "mapped", scratch / "merged"
        for d in (layer, mapped):
            d.mkdir()
        (layer / "file").touch()
        idmapped_clone(layer, mapped, ns["user"])
        rootfs.mount_rootfs([mapped], scratch / "storage", merged)
        umount_all(mapped)
        owner = (merged / "file").stat().st_uid
        if owner != _PROBE.host_id:
            return (f"an overlay over an ID-mapped layer shows uid {owner}, not "
                    f"{_PROBE.host_id} (overlayfs takes ID-mapped layers from Linux 5.19)")
        return ""
    except PeapodError as exc:
        return exc.message
    except OSError as exc:
        return f"probing user namespaces failed: {exc}"
    finally:
        _remove(scratch)


def _remove(scratch: Path) -> None:
    """Unmount and delete a probe's scratch directory."""
    try:
        for mount_point in sorted(mounts_below(scratch), key=len, reverse=True):
            umount_all(Path(mount_point))
        ns = scratch / "ns"
        if ns.is_dir():
            unpin({p.name: p for p in ns.iterdir()})
        shutil.rmtree(scratch, ignore_errors=True)
    except (OSError, PeapodError) as exc:
        log.error("cannot remove the user namespace probe's scratch directory",
                  extra={"path": str(scratch), "error": str(exc)})  # fmt: skip
    with contextlib.suppress(OSError):
        scratch.rmdir()
