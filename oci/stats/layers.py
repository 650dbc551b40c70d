"""Writable-layer usage: resumable walks of containers' overlay upper dirs, under a budget.

``used_bytes`` is the sum of ``st_size`` of everything but directories, a file with
several hard links counted once; ``inodes_used`` counts distinct inodes, directories
(the upper dir itself included) too. Overlay whiteouts are files of their own and
count as such.

A walk visits at most the budget's worth of directory entries per step and can be
resumed where it stopped, so one huge layer never holds up the others: ``LayerUsages``
spends one budget per round over all containers, starting each full round after the
last container the previous full round reached (early rounds over new layers only do
not move that place). A container's figure is that of its last complete walk; until
its first walk completes, the figure counted so far (a lower bound that grows each
round). Files changed while a walk runs are counted as the walk finds them.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LayerUsage:
    """Bytes and inodes in use, and when that figure was complete (unix ns).

    ``complete`` is False for the running figure of a first walk not finished yet.
    """

    used_bytes: int
    inodes_used: int
    timestamp: int
    complete: bool = True


@dataclass
class TreeWalk:
    """One walk over a directory tree, resumable after any number of entries."""

    root: str
    used_bytes: int = 0
    inodes_used: int = 0
    pending: list[str] = field(default_factory=list)
    _linked: set[int] = field(default_factory=set)
    _started: bool = False

    @property
    def done(self) -> bool:
        return self._started and not self.pending

    def step(self, budget: int, stop: threading.Event | None = None) -> int:
        """Visit up to about ``budget`` entries (one directory's listing is not split),
        fewer once ``stop`` is set; return how many were visited. A missing root or
        subdirectory counts as empty."""
        if not self._started:
            self._started = True
            self.pending.append(self.root)
        visited = 0
        while self.pending and visited < budget and not (stop and stop.is_set()):
            path = self.pending.pop()
            try:
                entries = os.scandir(path)
            except OSError:
                continue
            self.inodes_used += 1  # the directory itself
            with entries:
                for entry in entries:
                    visited += 1
                    self._count(entry)
        return visited

    def _count(self, entry: os.DirEntry[str]) -> None:
        try:
            if entry.is_dir(follow_symlinks=False):
                self.pending.append(entry.path)
                return
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return  # removed meanwhile
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if st.st_ino in self._linked:
                return
            self._linked.add(st.st_ino)
        self.used_bytes += st.st_size
        self.inodes_used += 1


class LayerUsages:
    """The latest usage figure of each container's writable layer, refreshed by rounds
    of walks (``walk_round``) that share one budget of directory entries."""

    def __init__(self, budget: int) -> None:
        self.budget = max(1, budget)
        self._lock = threading.Lock()
        self._usage: dict[str, LayerUsage] = {}
        self._walks: dict[str, TreeWalk] = {}
        self._cursor = ""  # where the next round starts

    def get(self, ctr_id: str) -> LayerUsage | None:
        """The figure to serve for ``ctr_id``: the last complete one, else the partial
        one of its first walk; None before any walk reached it."""
        with self._lock:
            usage = self._usage.get(ctr_id)
            if usage is not None:
                return usage
            walk = self._walks.get(ctr_id)
        if walk is None or not walk._started:
            return None
        return LayerUsage(walk.used_bytes, walk.inodes_used, time.time_ns(), complete=False)

    def walk_round(
        self, uppers: Mapping[str, str], only_new: bool = False,
        stop: threading.Event | None = None,
    ) -> int:  # fmt: skip
        """Walk the upper dirs of ``uppers`` (container id -> path) within one budget;
        forget containers not in it. ``only_new`` walks only those without a figure.
        Returns the entries visited."""
        with self._lock:
            for table in (self._usage, self._walks):
                for gone in [c for c in table if c not in uppers]:
                    del table[gone]
            known = set(self._usage)
        order = sorted(c for c in uppers if not (only_new and c in known))
        # Only full rounds move the cursor: early rounds for new layers would send the
        # next full round back to the start, and the last layers would never be re-walked.
        cursor = "" if only_new else self._cursor
        start = next((i for i, c in enumerate(order) if c >= cursor), 0)
        spent = 0
        cursor = ""
        for ctr_id in order[start:] + order[:start]:
            if spent >= self.budget:
                cursor = ctr_id  # the next round starts here
                break
            with self._lock:
                walk = self._walks.setdefault(ctr_id, TreeWalk(uppers[ctr_id]))
            spent += walk.step(self.budget - spent, stop)
            if not walk.done:
                cursor = ctr_id  # out of budget within this layer: resume it first
                break
            with self._lock:
                self._walks.pop(ctr_id, None)
                self._usage[ctr_id] = LayerUsage(walk.used_bytes, walk.inodes_used, time.time_ns())
        if not only_new:
            self._cursor = cursor
        return spent
