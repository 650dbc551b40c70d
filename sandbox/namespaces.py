"""Pinning a pod's network, IPC and UTS namespaces to files, without a pause process.

A throwaway daemon thread (``sandbox.ns_thread``) unshares the namespaces,
bind-mounts their nsfs files (``/proc/thread-self/ns/<kind>``) onto
``<dir>/<kind>``, and inside them sets the hostname, writes the pod's sysctls and
brings ``lo`` up; then it exits. No process is spawned. The bind mounts keep the
namespaces alive; nothing runs in them until containers join with ``/path/<kind>``.

The bind works whether the parent mount is private or shared: nsfs files may
be bound anywhere (only mount-namespace files need a private parent, and peapod
does not pin those). ``unpin`` needs nothing but the paths, so it works after
a daemon restart.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

from base.cancel import CallContext
from base.errors import AlreadyExists, Internal, InvalidArgument
from sandbox import sysctls as sysctl_mod
from sandbox.mounts import MS_BIND, is_mountpoint, mount, umount_all
from sandbox.ns_thread import in_new_namespaces, loopback_up, set_hostname
from sandbox.pod_files import validate_hostname

KINDS = ("net", "ipc", "uts")


def pin_namespaces(
    ns_dir: Path,
    kinds: set[str],
    hostname: str | None = None,
    sysctls: Mapping[str, str] | None = None,
    ctx: CallContext | None = None,
) -> dict[str, Path]:
    """Create fresh namespaces of ``kinds`` and pin them at ``ns_dir/<kind>``.

    With ``hostname`` (needs "uts") the new UTS namespace gets that hostname;
    ``sysctls`` are validated (net.* needs "net", IPC ones need "ipc") and
    written inside. Everything is checked before anything is created; on any
    failure whatever was pinned is removed again.
    """
    parsed = check_request(kinds, hostname, sysctls)
    if not kinds:
        return {}
    paths = {kind: ns_dir / kind for kind in KINDS if kind in kinds}

    def inside() -> None:  # on the thread that unshared the namespaces
        for kind, path in paths.items():
            try:
                mount(f"/proc/thread-self/ns/{kind}", path, None, MS_BIND, None)
            except OSError as exc:
                raise Internal(f"cannot pin the pod's {kind} namespace at {path}: "
                               f"{exc.strerror}") from exc  # fmt: skip
        if hostname is not None:
            set_hostname(hostname)
        sysctl_mod.write_here(parsed)
        if "net" in paths:
            loopback_up()

    if ctx is not None:
        ctx.check()
    prepare_pins(ns_dir, paths)
    try:
        in_new_namespaces(paths, inside)
        for kind, path in paths.items():
            if not is_nsfs(path):
                raise Internal(f"no {kind} namespace is bound at {path} after pinning it")
    except BaseException:
        unpin(paths.values())
        raise
    return paths


def check_request(
    kinds: set[str], hostname: str | None, sysctls: Mapping[str, str] | None
) -> list[sysctl_mod.Sysctl]:
    """Check the kinds, hostname and sysctls of a pin request; the sysctls parsed."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise InvalidArgument(
            f"cannot pin namespace kind(s) {sorted(unknown)}; supported: {list(KINDS)}"
        )
    if hostname is not None:
        validate_hostname(hostname)
        if "uts" not in kinds:
            raise InvalidArgument("a pod hostname needs the pod's own UTS namespace")
    return sysctl_mod.validate(
        sysctls or {}, host_network="net" not in kinds, host_ipc="ipc" not in kinds
    )


def prepare_pins(ns_dir: Path, paths: Mapping[str, Path]) -> None:
    """Make the empty files namespaces get bound onto; AlreadyExists if one is pinned.

    Internal if one cannot be made; the files made before it are deleted again (those
    that were there already are left).
    """
    for kind, path in paths.items():
        if is_mountpoint(path):
            raise AlreadyExists(f"a {kind} namespace is already pinned at {path}; unpin it first")
    try:
        ns_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Internal(f"cannot make the namespace directory {ns_dir}: {exc.strerror}") from exc
    made: list[Path] = []
    for kind, path in paths.items():
        try:
            if _make_pin_file(path):
                made.append(path)
        except OSError as exc:
            for done in made:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(done)
            raise Internal(f"cannot make the pin file of the pod's {kind} namespace at "
                           f"{path}: {exc.strerror}") from exc  # fmt: skip


def _make_pin_file(path: Path) -> bool:
    """Create the empty file ``path``; False if an unused one (not mounted on) is there."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
    except FileExistsError:
        if stat.S_ISREG(os.lstat(path).st_mode):
            return False
        raise OSError(errno.EEXIST, "it exists and is not a file", str(path)) from None
    return True


def unpin(paths: Iterable[Path] | Mapping[str, Path]) -> None:
    """Detach the namespace bind mounts and delete the files; idempotent."""
    items = paths.values() if isinstance(paths, Mapping) else paths
    for path in items:
        try:
            umount_all(Path(path))
        except OSError as exc:
            raise Internal(f"cannot unmount pinned namespace {path}: {exc.strerror}") from exc
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def is_nsfs(path: Path) -> bool:
    """Tell whether ``path`` is a namespace file (nsfs, one superblock for all namespaces)."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except FileNotFoundError:
        return False


def ns_inode(path: Path) -> int:
    """The inode number identifying the namespace pinned (or linked) at ``path``."""
    return os.stat(path).st_ino
