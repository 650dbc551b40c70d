"""The gate between creations and plugin synchronization.

A pod or container is *admitted* from the moment its creation hook starts until it
is published (or its creation failed); a plugin's synchronization takes its snapshot
of all pods and containers with no admission in flight. So every pod and container
reaches a new plugin one way: in its snapshot, or through the hook (the plugin is
listed before the snapshot ends, and the hook waits for it to be synchronized).
Snapshots go first: a waiting one holds new admissions back until it is taken,
which takes no longer than the creations already in flight.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class SyncGate:
    """A readers-writer lock: many admissions, or one snapshot."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._admitted = 0
        self._snapshots_waiting = 0
        self._snapshotting = False

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        with self._cond:
            while self._snapshotting or self._snapshots_waiting:
                self._cond.wait()
            self._admitted += 1
        try:
            yield
        finally:
            with self._cond:
                self._admitted -= 1
                if not self._admitted:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._cond:
            self._snapshots_waiting += 1
            try:
                while self._snapshotting or self._admitted:
                    self._cond.wait()
            finally:
                self._snapshots_waiting -= 1
            self._snapshotting = True
        try:
            yield
        finally:
            with self._cond:
                self._snapshotting = False
                self._cond.notify_all()
