"""Which cgroup layout the host uses: pure v2, pure v1, or hybrid (v1 plus cgroup2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from base.errors import FailedPrecondition
from sandbox.mounts import MOUNTINFO, parse_mountinfo

V1 = "v1"
V2 = "v2"
HYBRID = "hybrid"

# Controllers a v1 hierarchy can carry (as they appear in mount options).
KNOWN_V1_CONTROLLERS = frozenset(
    {
        "cpu",
        "cpuacct",
        "cpuset",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "net_prio",
        "blkio",
        "perf_event",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    }
)


@dataclass(frozen=True)
class CgroupLayout:
    """The host's cgroup mounts: v1 controller -> hierarchy root, and the cgroup2 root.

    ``named`` maps v1 hierarchies without controllers (``name=systemd``) by name.
    """

    version: str
    v1: Mapping[str, Path] = field(default_factory=dict)
    unified: Path | None = None
    named: Mapping[str, Path] = field(default_factory=dict)


def layout_from_mountinfo(text: str) -> CgroupLayout:
    """Work out the layout from mountinfo text; FailedPrecondition if no cgroups are mounted."""
    v1: dict[str, Path] = {}
    v1_root: dict[str, bool] = {}
    named: dict[str, Path] = {}
    unified: Path | None = None
    unified_is_root = False
    for entry in parse_mountinfo(text):
        if entry.fstype == "cgroup2":
            if unified is None or (entry.root == "/" and not unified_is_root):
                unified = Path(entry.mount_point)
                unified_is_root = entry.root == "/"
        elif entry.fstype == "cgroup":
            options = entry.super_options.split(",")
            for opt in options:
                if opt.startswith("name=") and opt[5:] not in named:
                    named[opt[5:]] = Path(entry.mount_point)
            opts = set(options) & KNOWN_V1_CONTROLLERS
            for ctl in opts:
                # Prefer a mount of the hierarchy's root over a bind of a subtree.
                if ctl not in v1 or (entry.root == "/" and not v1_root[ctl]):
                    v1[ctl] = Path(entry.mount_point)
                    v1_root[ctl] = entry.root == "/"
    if v1 and unified is not None:
        return CgroupLayout(HYBRID, v1, unified, named)
    if v1:
        return CgroupLayout(V1, v1, None, named)
    if unified is not None:
        return CgroupLayout(V2, {}, unified)
    raise FailedPrecondition("no cgroup filesystem is mounted; mount cgroup2 on /sys/fs/cgroup")


@cache
def detect_layout() -> CgroupLayout:
    """The host's cgroup layout, read from /proc/self/mountinfo once per process."""
    return layout_from_mountinfo(MOUNTINFO.read_text())
