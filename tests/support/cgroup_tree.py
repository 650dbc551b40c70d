"""Whole cgroup subtrees in every mounted hierarchy: make one, kill what runs in it, remove it.

Not ``sandbox.cgroups.hierarchy_roots``, which lists the controllers peapod uses: runc,
containerd and the kubelet make their cgroups in every hierarchy (named ones and the
cgroup2 mount of a hybrid host included), and all of it must go.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from sandbox.mounts import MOUNTINFO, parse_mountinfo


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy root (v1 controllers, named ones, cgroup2)."""
    return [Path(e.mount_point) for e in parse_mountinfo(MOUNTINFO.read_text())
            if e.fstype in ("cgroup", "cgroup2") and e.root == "/"]


def make_cgroup_tree(relative: str) -> None:
    """``/<relative>`` in every hierarchy, each new v1 cpuset level given its parent's
    CPUs and memory nodes (a new cpuset cgroup starts empty)."""
    for root in cgroup_hierarchies():
        path = root
        for part in Path(relative.strip("/")).parts:
            parent, path = path, path / part
            path.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if (path / name).exists() and not (path / name).read_text().strip():
                    (path / name).write_text((parent / name).read_text())


def remove_cgroup_tree(relative: str) -> list[str]:
    """Kill what runs below ``/<relative>`` and remove it bottom-up in every hierarchy;
    what stayed."""
    tops = [root / relative for root in cgroup_hierarchies() if (root / relative).is_dir()]
    for top in tops:
        for dirpath, _dirs, _files in os.walk(top):
            with contextlib.suppress(OSError):
                for pid in Path(dirpath, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
    left: list[str] = []
    for top in tops:
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            for attempt in range(40):  # a killed task leaves its cgroup a moment later
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if attempt == 39:
                        left.append(dirpath)
                    time.sleep(0.05)
    return left
