"""The pod-level cgroup: created under every hierarchy peapod uses, removed only if ours.

On v1 (and hybrid) the pod directory is made under each mounted controller
hierarchy in ``V1_CONTROLLERS`` (co-mounted ones share a directory), under the
``name=systemd`` hierarchy when mounted (systemd tracks a v1 service's
processes there; a pod left in the daemon's would be killed with the daemon's
service), plus the cgroup2 hierarchy on hybrid hosts. On v2 it is made under the unified root and
the controllers are enabled down the path through ``cgroup.subtree_control``;
the pod's processes then go to a leaf child, since a v2 cgroup with enabled
controllers cannot hold processes itself. Creating slices through systemd's
D-Bus API is not done: with the systemd driver the slice's directories are made
directly, as with cgroupfs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.errors import Internal
from sandbox.cgroup_layout import V2, CgroupLayout, detect_layout
from sandbox.cgroup_paths import CGROUPFS, cgroup_path

V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer")
V2_CONTROLLERS = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids")
V2_LEAF = "peapod-infra"


@dataclass
class PodCgroup:
    """A pod's cgroup directories, and which of them peapod created (so may remove)."""

    path: str
    version: str
    dirs: list[Path]
    created: list[Path] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record from which ``from_record`` rebuilds this object."""
        return {
            "path": self.path,
            "version": self.version,
            "dirs": [str(d) for d in self.dirs],
            "created": [str(d) for d in self.created],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> PodCgroup:
        """Rebuild from ``to_record`` output (e.g. after a daemon restart)."""
        return cls(
            path=str(record["path"]),
            version=str(record["version"]),
            dirs=[Path(d) for d in record["dirs"]],
            created=[Path(d) for d in record["created"]],
        )

    def process_dirs(self) -> list[Path]:
        """The directories a pod-level process is placed in (a leaf on v2)."""
        if self.version == V2:
            return [d / V2_LEAF for d in self.dirs]
        return list(self.dirs)

    def add_process(self, pid: int) -> None:
        """Move ``pid`` into the pod cgroup in every hierarchy."""
        for d in self.process_dirs():
            if not d.is_dir():
                _mkdir(d, self.created)
            try:
                (d / "cgroup.procs").write_text(f"{pid}\n")
            except OSError as exc:
                raise Internal(f"cannot move pid {pid} into cgroup {d}: {exc.strerror}") from exc

    def pids(self) -> set[int]:
        """Pids in the pod cgroup or any cgroup below it, across all hierarchies."""
        found: set[int] = set()
        for d in self.dirs:
            found |= _pids_below(d)
        return found

    def remove(self, retries: int = 5, delay: float = 0.1) -> None:
        """Remove the directories peapod created, deepest first; idempotent.

        Nothing is killed. An intermediate directory that now holds other
        cgroups is left in place. If a directory still holds processes after
        ``retries`` attempts, raise Internal naming it and its pids. On v2 the
        leaf of a pod directory is removed too, even if it was made after the
        record was saved.
        """
        if self.version == V2:
            for leaf in (d / V2_LEAF for d in self.dirs):
                if leaf not in self.created and leaf.is_dir():
                    self.created.append(leaf)
        busy: list[Path] = []
        for attempt in range(max(1, retries)):
            busy = self._remove_once()
            if not busy:
                return
            if attempt + 1 < max(1, retries):
                time.sleep(delay)
        details = "; ".join(
            f"{d} (pids {sorted(_pids_below(d)) or 'none'}, "
            f"child cgroups {sorted(c.name for c in _subdirs(d)) or 'none'})"
            for d in busy
        )
        raise Internal(f"cannot remove pod cgroup {self.path}: still in use: {details}")

    def _remove_once(self) -> list[Path]:
        """One removal pass; return the directories that were busy."""
        busy: list[Path] = []
        own = set(self.dirs) | {d / V2_LEAF for d in self.dirs}
        for d in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            if any(b.is_relative_to(d) for b in busy):
                continue  # its child could not go; neither can it
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise Internal(f"cannot remove cgroup {d}: {exc.strerror}") from exc
                if d not in own and _subdirs(d) and not _procs(d):
                    # A parent we made that others now use: leave it to them.
                    self.created.remove(d)
                    continue
                busy.append(d)
                continue
            self.created.remove(d)
        return busy


def hierarchy_roots(layout: CgroupLayout) -> list[Path]:
    """The hierarchy mount points a pod cgroup is made under, without duplicates."""
    if layout.version == V2:
        assert layout.unified is not None
        return [layout.unified]
    roots: list[Path] = []
    for ctl in V1_CONTROLLERS:
        root = layout.v1.get(ctl)
        if root is not None and root not in roots:
            roots.append(root)
    for root in (layout.named.get("systemd"), layout.unified):
        if root is not None and root not in roots:
            roots.append(root)
    return roots


def plan_pod_cgroup(
    parent: str, driver: str = CGROUPFS, layout: CgroupLayout | None = None
) -> PodCgroup:
    """The pod cgroup ``create_pod_cgroup`` would make, its missing directories as created.

    Recorded before creating, so that removing it after a crash in between takes
    away whatever of it was made (a directory others made meanwhile is only
    removed if empty, and one shared with other cgroups is left to them).
    """
    path = cgroup_path(parent, driver)
    layout = layout if layout is not None else detect_layout()
    cg = PodCgroup(path=path, version=layout.version, dirs=[])
    for root in hierarchy_roots(layout):
        d = root
        for part in path.strip("/").split("/"):
            d = d / part
            if not d.is_dir():
                cg.created.append(d)
        cg.dirs.append(d)
    return cg


def create_pod_cgroup(
    parent: str, driver: str = CGROUPFS, layout: CgroupLayout | None = None
) -> PodCgroup:
    """Make sure the pod cgroup ``parent`` exists in every hierarchy; see module doc."""
    path = cgroup_path(parent, driver)
    layout = layout if layout is not None else detect_layout()
    parts = path.strip("/").split("/")
    cg = PodCgroup(path=path, version=layout.version, dirs=[])
    cpuset_root = layout.v1.get("cpuset")
    try:
        for root in hierarchy_roots(layout):
            d = root
            for part in parts:
                d = d / part
                _mkdir(d, cg.created)
                if root == cpuset_root:
                    # Every level, not only the ones made here: a concurrent caller may have
                    # made a parent and not yet filled it, and tasks in an empty cpuset fail
                    # with ENOSPC. Top-down, each level copies from a filled parent.
                    _copy_cpuset(d)
            cg.dirs.append(d)
            if layout.version == V2:
                _enable_controllers(root, parts)
    except BaseException:
        with contextlib.suppress(Internal):
            cg.remove(retries=1)
        raise
    return cg


def _mkdir(d: Path, created: list[Path]) -> bool:
    """mkdir ``d``, recording it in ``created``; False if it already existed."""
    try:
        os.mkdir(d)
    except FileExistsError:
        return False
    except OSError as exc:
        raise Internal(f"cannot create cgroup {d}: {exc.strerror}") from exc
    created.append(d)
    return True


def _copy_cpuset(d: Path) -> None:
    """Give a new v1 cpuset cgroup its parent's cpus and mems (it starts empty)."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        try:
            if (d / name).read_text().strip():
                continue
            (d / name).write_text((d.parent / name).read_text())
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise Internal(f"cannot set {name} of cgroup {d}: {exc.strerror}") from exc


def _enable_controllers(root: Path, parts: list[str]) -> None:
    """On v2, enable the controllers peapod uses from the root down to the pod cgroup."""
    d = root
    for part in [None, *parts]:
        if part is not None:
            d = d / part
        try:
            available = set((d / "cgroup.controllers").read_text().split())
            enabled = set((d / "cgroup.subtree_control").read_text().split())
        except FileNotFoundError:
            available, enabled = set(), set()
        wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if not wanted:
            continue
        try:
            (d / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in wanted))
        except OSError as exc:
            raise Internal(
                f"cannot enable controllers {wanted} in {d}/cgroup.subtree_control: {exc.strerror}"
            ) from exc


def _procs(d: Path) -> set[int]:
    try:
        return {int(x) for x in (d / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


def _subdirs(d: Path) -> list[Path]:
    try:
        return [c for c in d.iterdir() if c.is_dir()]
    except OSError:
        return []


def _pids_below(d: Path) -> set[int]:
    found = _procs(d)
    for c in _subdirs(d):
        found |= _pids_below(c)
    return found
