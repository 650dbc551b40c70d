"""Turning the kubelet's ``cgroup_parent`` into a cgroup path, per cgroup driver.

With the cgroupfs driver the parent is already a path (``/kubepods/burstable/pod1``).
With the systemd driver it is a slice name (``kubepods-burstable-pod1.slice``)
whose dashes spell out its ancestors: ``/kubepods.slice/kubepods-burstable.slice/
kubepods-burstable-pod1.slice``.
"""

from __future__ import annotations

import re

from base.errors import InvalidArgument
from base.text import shorten

CGROUPFS = "cgroupfs"
SYSTEMD = "systemd"

_SLICE_PART = re.compile(r"^[A-Za-z0-9:_.\\]+$")
_COMPONENT = re.compile(r"^[A-Za-z0-9:_.@+-]+$")


def expand_slice(name: str) -> str:
    """The cgroup path of a systemd slice name; InvalidArgument if it is not one."""
    if "/" in name or not name.endswith(".slice"):
        raise InvalidArgument(
            f"cgroup parent {shorten(name)} is not a systemd slice name (like kubepods-pod1.slice)"
        )
    stem = name[: -len(".slice")]
    if stem == "-":
        return "/"
    parts = stem.split("-")
    if not all(parts) or not all(_SLICE_PART.fullmatch(p) for p in parts):
        raise InvalidArgument(f"systemd slice name {shorten(name)} is malformed")
    path, prefix = "", ""
    for part in parts:
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def cgroup_path(parent: str, driver: str = CGROUPFS) -> str:
    """The normalised absolute cgroup path ``parent`` names under ``driver``."""
    if driver == SYSTEMD:
        path = expand_slice(parent)
    elif driver == CGROUPFS:
        path = parent
    else:
        raise InvalidArgument(f"unknown cgroup driver {shorten(driver)}; use cgroupfs or systemd")
    if not path.startswith("/"):
        raise InvalidArgument(
            f"cgroup parent {shorten(parent)} must be an absolute path like /kubepods"
        )
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise InvalidArgument(
            f"cgroup parent {shorten(parent)} is the root cgroup; a pod needs its own"
        )
    for part in parts:
        if part in (".", "..") or not _COMPONENT.fullmatch(part):
            raise InvalidArgument(
                f"cgroup parent {shorten(parent)} has an invalid component {shorten(part)}"
            )
    return "/" + "/".join(parts)
