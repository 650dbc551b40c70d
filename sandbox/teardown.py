"""Taking a pod's local resources apart: infra process, namespaces, shm, files, cgroup.

Every function here is idempotent and works from the stored record alone, so
it serves rollback, StopPodSandbox, RemovePodSandbox and restart recovery.
Network teardown (CNI DEL) is not here: it must run before the network
namespace is unpinned, and the callers order it so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from base.errors import Internal
from sandbox.cgroups import PodCgroup
from sandbox.infra import InfraProcess
from sandbox.mounts import MOUNTINFO, mount_points_met, parse_mountinfo
from sandbox.namespaces import unpin
from sandbox.record import SandboxRecord
from sandbox.shm import unmount_shm


def stop_infra(record: dict[str, Any] | None) -> None:
    """Kill the infra process described by ``record`` (if it still is that process)."""
    if record is not None:
        InfraProcess.from_record(record).stop()


def mounts_below(directory: Path) -> list[str]:
    """Mount points at or under ``directory``."""
    top = os.path.abspath(directory)
    prefix = top.rstrip("/") + "/"
    return [
        e.mount_point
        for e in parse_mountinfo(MOUNTINFO.read_text())
        if e.mount_point == top or e.mount_point.startswith(prefix)
    ]


def remove_pod_dir(directory: Path) -> None:
    """Delete the pod directory, refusing while anything is still mounted under it."""
    if not directory.exists():
        return
    busy = mount_points_met(directory)
    if busy:
        raise Internal(f"cannot delete {directory}: still mounted: {', '.join(busy)}")
    shutil.rmtree(directory)


def release_local(rec: SandboxRecord) -> None:
    """Unpin namespaces, unmount shm, delete the pod directory and cgroup.

    Every step is tried; Internal lists the ones that failed.
    """
    problems: list[str] = []
    steps = [
        ("infra process", lambda: stop_infra(rec.infra)),
        ("namespaces", lambda: unpin({k: Path(p) for k, p in rec.ns_paths.items()})),
        ("shm", lambda: unmount_shm(Path(rec.shm_path)) if rec.shm_path else None),
        ("pod directory", lambda: remove_pod_dir(Path(rec.pod_dir)) if rec.pod_dir else None),
        ("cgroup", lambda: PodCgroup.from_record(rec.cgroup).remove() if rec.cgroup else None),
    ]
    for what, step in steps:
        try:
            step()
        except Internal as exc:
            problems.append(f"{what}: {exc.message}")
        except OSError as exc:
            problems.append(f"{what}: {exc.strerror or exc}")
    if problems:
        raise Internal(f"removing pod {rec.id} left resources behind: " + "; ".join(problems))
