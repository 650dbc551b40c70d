"""The container's mounts: kernel filesystems, pod files, the request's binds.

Missing bind sources: the CRI text says a runtime should report an error, but the
kubelet passes hostPath volumes of type "" unchecked and every mainstream runtime
(Docker, containerd, CRI-O) creates the missing path as a directory. Pods written
for those runtimes rely on it, so peapod does the same (mode 0755, owned by root).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable
from typing import Any

from base.errors import Internal, InvalidArgument
from base.text import shorten
from oci.spec.inputs import Mount, MountPropagation
from sandbox.facts import SandboxFacts
from sandbox.mounts import MOUNTINFO, parse_mountinfo

# Paths hidden from unprivileged containers, and those made read-only (CRI-O's lists).
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

# The files under /proc runc lets a container mount over (lxcfs and the like); any
# other destination in /proc, and / itself, runc refuses at create.
PROC_MOUNTABLE = frozenset(
    {"/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
     "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
     "/proc/sys/kernel/ns_last_pid", "/proc/sys/crypto/fips_enabled"}
)

# Bind options a request may add on top of the ones peapod sets itself.
ALLOWED_BIND_OPTIONS = frozenset(
    {"noexec", "exec", "nosuid", "suid", "nodev", "dev", "noatime", "relatime",
     "strictatime", "nodiratime"}
)

Spec = dict[str, Any]


def _mount(destination: str, fstype: str, source: str, options: list[str]) -> Spec:
    return {"destination": destination, "type": fstype, "source": source, "options": options}


def kernel_mounts(*, privileged: bool, cgroup_v2: bool) -> list[Spec]:
    """/proc, /dev, /dev/pts, /dev/mqueue, /sys and /sys/fs/cgroup.

    /sys and the cgroup tree are read-only unless the container is privileged.
    """
    access = "rw" if privileged else "ro"
    cgroup = "cgroup2" if cgroup_v2 else "cgroup"
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount("/dev/pts", "devpts", "devpts",
               ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", access]),
        _mount("/sys/fs/cgroup", cgroup, "cgroup",
               ["nosuid", "noexec", "nodev", "relatime", access]),
    ]


def shm_mount(sandbox: SandboxFacts) -> Spec:
    """/dev/shm: the host's with host IPC, else the pod's shared one, else a private tmpfs."""
    bind = ["rbind", "rprivate", "nosuid", "noexec", "nodev", "rw"]
    if sandbox.host_ipc:
        return _mount("/dev/shm", "bind", "/dev/shm", bind)
    if sandbox.shm_path:
        return _mount("/dev/shm", "bind", sandbox.shm_path, bind)
    return _mount("/dev/shm", "tmpfs", "shm",
                  ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])


def pod_file_mounts(sandbox: SandboxFacts, *, readonly: bool) -> list[Spec]:
    """Binds of the pod's /etc/hostname, /etc/resolv.conf and /etc/hosts that exist."""
    options = ["bind", "rprivate", "nosuid", "noexec", "nodev", "ro" if readonly else "rw"]
    files = (
        ("/etc/hostname", sandbox.hostname_path),
        ("/etc/resolv.conf", sandbox.resolv_conf_path),
        ("/etc/hosts", sandbox.hosts_path),
    )
    return [_mount(dest, "bind", src, list(options)) for dest, src in files if src]


def bind_source(host_path: str) -> str:
    """The real host path of a bind source, created as a directory when missing."""
    if not os.path.lexists(host_path):
        os.makedirs(host_path, mode=0o755, exist_ok=True)
    return os.path.realpath(host_path)


def destination(container_path: str) -> str:
    """The normalised destination of a bind; InvalidArgument where runc refuses one."""
    if not container_path.startswith("/"):
        raise InvalidArgument(
            f"mount container_path {shorten(container_path)} must be an absolute path"
        )
    parts = [p for p in posixpath.normpath(container_path).split("/") if p]
    dest = "/" + "/".join(parts)
    if dest == "/":
        raise InvalidArgument(
            f"mount container_path {shorten(container_path)} is the container's root "
            "directory; mount a directory under it"
        )
    if (dest == "/proc" or dest.startswith("/proc/")) and dest not in PROC_MOUNTABLE:
        raise InvalidArgument(
            f"mount container_path {shorten(container_path)} is in /proc, where only "
            f"{', '.join(sorted(PROC_MOUNTABLE))} may be mounted over"
        )
    return dest


def _extra_options(mount: Mount) -> list[str]:
    """The request's own bind options, refused unless in ALLOWED_BIND_OPTIONS."""
    extra = [opt for opt in mount.options if opt]
    bad = sorted(set(extra) - ALLOWED_BIND_OPTIONS)
    if bad:
        raise InvalidArgument(
            f"mount {shorten(mount.container_path)}: unsupported options {shorten(bad)}; "
            f"allowed: {sorted(ALLOWED_BIND_OPTIONS)}"
        )
    return extra


def image_volume_mount(mount: Mount) -> Spec:
    """The OCI bind of an image volume the build has mounted at ``mount.host_path``.

    Always read-only, private, nosuid and nodev (an image brings no devices and no
    privileges to the container); exec unless the request adds "noexec".
    """
    if not mount.host_path:
        raise Internal(f"image volume {shorten(mount.container_path)} was not mounted")
    options = ["rbind", "rprivate", "ro", "nosuid", "nodev", *_extra_options(mount)]
    return _mount(destination(mount.container_path), "bind", mount.host_path, options)


def request_mount(mount: Mount) -> Spec:
    """The OCI mount for one requested bind (rbind, with propagation and ro/rw)."""
    if mount.image:
        return image_volume_mount(mount)
    dest = destination(mount.container_path)
    where = shorten(mount.container_path)
    if not mount.host_path:
        raise InvalidArgument(f"mount for {where} has no host_path")
    if not mount.host_path.startswith("/"):
        raise InvalidArgument(
            f"mount host_path {shorten(mount.host_path)} must be an absolute path"
        )
    extra = _extra_options(mount)
    options = ["rbind", mount.propagation.value, "ro" if mount.readonly else "rw"]
    if mount.recursive_read_only:
        if not mount.readonly or mount.propagation is not MountPropagation.PRIVATE:
            raise InvalidArgument(
                f"mount {where}: recursive_read_only needs readonly=true and private propagation"
            )
        options.append("rro")
    options += extra
    return _mount(dest, "bind", bind_source(mount.host_path), options)


def _depth(destination: str) -> int:
    path = posixpath.normpath(destination)
    return 0 if path == "/" else path.count("/")


def merge_mounts(defaults: Iterable[Spec], requested: Iterable[Spec]) -> list[Spec]:
    """Requested mounts replace defaults at the same destination; parents sort first.

    The sort is stable, so mounts of equal depth keep their order.
    """
    requested = list(requested)
    taken = {posixpath.normpath(m["destination"]) for m in requested}
    kept = [m for m in defaults if posixpath.normpath(m["destination"]) not in taken]
    return sorted([*kept, *requested], key=lambda m: _depth(m["destination"]))


def rootfs_propagation(mounts: Iterable[Mount]) -> str:
    """rshared if any bind is bidirectional, rslave if any is host-to-container, else rprivate."""
    modes = {m.propagation for m in mounts}
    if MountPropagation.BIDIRECTIONAL in modes:
        return "rshared"
    if MountPropagation.HOST_TO_CONTAINER in modes:
        return "rslave"
    return "rprivate"


def propagation_of(path: str, mountinfo: str) -> str:
    """"shared", "slave" or "private": the propagation of the mount holding ``path``."""
    best_len, result = -1, "private"
    for entry in parse_mountinfo(mountinfo):
        point = entry.mount_point
        inside = point == "/" or path == point or path.startswith(point.rstrip("/") + "/")
        if not inside or len(point) < best_len:
            continue
        best_len = len(point)
        if any(f.startswith("shared:") for f in entry.optional):
            result = "shared"
        elif any(f.startswith("master:") for f in entry.optional):
            result = "slave"
        else:
            result = "private"
    return result


def _read_mountinfo() -> str:
    return MOUNTINFO.read_text()


def check_propagation(
    mounts: Iterable[tuple[Mount, Spec]],
    read_mountinfo: Callable[[], str] | None = None,
) -> None:
    """Refuse propagation the host cannot provide.

    Bidirectional needs the source on a shared mount; host-to-container needs a
    shared or slave one. Otherwise the container would silently see no propagation.
    """
    mountinfo: str | None = None
    for mount, spec in mounts:
        if mount.propagation is MountPropagation.PRIVATE:
            continue
        if mountinfo is None:
            mountinfo = (read_mountinfo or _read_mountinfo)()
        source = spec["source"]
        kind = propagation_of(source, mountinfo)
        if mount.propagation is MountPropagation.BIDIRECTIONAL and kind != "shared":
            raise InvalidArgument(
                f"mount {shorten(mount.container_path)} asks for bidirectional propagation but "
                f"{shorten(source)} is on a {kind} mount; make it shared (mount --make-rshared)"
            )
        if kind == "private":
            raise InvalidArgument(
                f"mount {shorten(mount.container_path)} asks for host-to-container propagation but "
                f"{shorten(source)} is on a private mount; make it shared or slave"
            )
