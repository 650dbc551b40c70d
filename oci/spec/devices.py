"""Device nodes for the container (``linux.devices``) and device cgroup rules."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from typing import Any

from base.errors import InvalidArgument
from oci.spec.inputs import Device

# Parts of the host's /dev that are not device nodes to copy into a privileged container.
_SKIPPED_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
_SKIPPED_FILES = frozenset({"/dev/console"})

Spec = dict[str, Any]


def device_node(host_path: str, container_path: str) -> Spec | None:
    """The OCI device for a host char/block device, or None if it is neither."""
    st = os.stat(host_path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": container_path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _walk_devices(host_dir: str, container_dir: str) -> list[Spec]:
    found = []
    for root, dirs, files in os.walk(host_dir):
        if root == host_dir:
            dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
        for name in sorted(files):
            path = os.path.join(root, name)
            if path in _SKIPPED_FILES or os.path.islink(path):
                continue  # links (/dev/stdin -> /proc/self/fd/0) would copy the daemon's fds
            try:
                inside = os.path.join(container_dir, os.path.relpath(path, host_dir))
                node = device_node(path, inside)
            except OSError:
                continue  # vanished or a dangling link
            if node:
                found.append(node)
    return found


def _check_permissions(permissions: str, path: str) -> str:
    perms = permissions or "rwm"
    if set(perms) - set("rwm") or len(set(perms)) != len(perms):
        raise InvalidArgument(
            f"device {path!r}: permissions {permissions!r} must combine r, w and m"
        )
    return perms


def request_devices(devices: Iterable[Device]) -> tuple[list[Spec], list[Spec]]:
    """Device nodes and cgroup allow rules for the requested devices.

    A directory host path exposes every device under it at the same relative path.
    """
    nodes: list[Spec] = []
    rules: list[Spec] = []
    for device in devices:
        perms = _check_permissions(device.permissions, device.host_path)
        if not device.container_path.startswith("/"):
            raise InvalidArgument(
                f"device container_path {device.container_path!r} must be an absolute path"
            )
        try:
            node = device_node(device.host_path, device.container_path)
        except FileNotFoundError:
            raise InvalidArgument(
                f"device {device.host_path!r} does not exist on the host"
            ) from None
        found = [node] if node else []
        if node is None and os.path.isdir(device.host_path):
            found = _walk_devices(device.host_path, device.container_path)
        if not found:
            raise InvalidArgument(f"{device.host_path!r} is not a device or a directory of devices")
        for item in found:
            nodes.append(item)
            rules.append({"allow": True, "type": item["type"], "major": item["major"],
                          "minor": item["minor"], "access": perms})
    return nodes, rules


def device_rules_and_nodes(
    devices: Iterable[Device], *, privileged: bool, host_dev: str = "/dev"
) -> tuple[list[Spec], list[Spec]]:
    """``linux.devices`` and ``linux.resources.devices`` for the container.

    Unprivileged: deny everything, then allow the requested devices (runc adds its
    standard allowances for /dev/null, /dev/zero and the like). Privileged: every host
    device, all access.
    """
    if privileged:
        nodes = _walk_devices(host_dev, "/dev")
        extra, _ = request_devices(devices)
        paths = {n["path"] for n in nodes}
        nodes += [n for n in extra if n["path"] not in paths]
        return nodes, [{"allow": True, "access": "rwm"}]
    nodes, rules = request_devices(devices)
    return nodes, [{"allow": False, "access": "rwm"}, *rules]
