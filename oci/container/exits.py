"""Container exits and monitor liveness: what conmon's files say, recorded in the store.

conmon writes an exit file when its container ends (``ExitWatcher`` sees it), and
a persisted copy next to the container's state; the daemon's liveness probe checks
every running container's conmon by pid and start time. ``ExitTracking`` turns both
into the record's exited state, once, and wakes whoever waits for an exit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from typing import Protocol

from base.cancel import CallContext
from conmon import files, procs
from oci.container.create import UNKNOWN_EXIT
from oci.container.hooks import ContainerHooks, NoContainerHooks
from oci.container.record import (
    CREATED,
    CREATING,
    ERROR,
    EXITED,
    RUNNING,
    ContainerRecord,
    exit_reason,
)
from oci.container.settings import ContainerSettings
from oci.container.store import ContainerStore

log = logging.getLogger("peapod.containers")

MONITOR_EXIT_WAIT = 5.0  # how long conmon may take to exit after its container
_POLL = 0.1
MONITOR_GONE = "container monitor and process disappeared"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"  # set by the kubelet on its containers


class ContainerObserver(Protocol):
    """Receives container events (the daemon turns them into metrics)."""

    def oom_killed(self, namespace: str) -> None:
        """The OOM killer ended a container of a pod in ``namespace`` ("" if unknown)."""

    def monitor_lost(self) -> None:
        """A running container's conmon died while the container kept running."""

    def exec_sync_finished(self, exit_code: int, timed_out: bool) -> None:
        """An ExecSync command ended (``timed_out``: killed at its timeout)."""


class _NoObserver:
    def oom_killed(self, namespace: str) -> None:
        pass

    def monitor_lost(self) -> None:
        pass

    def exec_sync_finished(self, exit_code: int, timed_out: bool) -> None:
        pass


def alive(pid: int, start: int) -> bool:
    """Whether the process ``pid`` that started at ``start`` ticks still runs."""
    return pid > 0 and procs.is_alive(pid) and (not start or procs.start_ticks(pid) == start)


class ExitTracking:
    """Records exits from conmon's files and probes monitors; the manager's base."""

    def __init__(
        self,
        settings: ContainerSettings,
        store: ContainerStore,
        observer: ContainerObserver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.observer: ContainerObserver = observer or _NoObserver()
        self.hooks: ContainerHooks = NoContainerHooks()  # lifecycle hooks (NRI plugins)
        self._exited = threading.Condition()
        self._orphans: set[str] = set()  # running without conmon, already reported

    def handle_exit(self, ctr_id: str) -> None:
        """conmon wrote an exit file for ``ctr_id``: record the exit."""
        rec = self.store.get(ctr_id)
        if rec is None:
            files.remove_exit_file(str(self.settings.exit_dir), ctr_id)  # stale
            return
        if rec.state == CREATING:
            return  # the create settles it
        self.record_exit(ctr_id)

    def read_exit(self, rec: ContainerRecord) -> tuple[int, int] | None:
        """(status, finished_at_ns) from conmon's files, None if it wrote none yet."""
        persisted = files.read_persisted_exit(rec.persist_dir)
        if persisted is not None:
            return persisted
        code = files.read_exit_file(str(self.settings.exit_dir), rec.id)
        if code is None:
            return None
        try:
            finished = os.stat(os.path.join(self.settings.exit_dir, rec.id)).st_mtime_ns
        except FileNotFoundError:
            finished = time.time_ns()
        return code, finished

    def record_exit(self, ctr_id: str) -> None:
        rec = self.store.get(ctr_id)
        if rec is None:
            return
        found = self.read_exit(rec)
        if found is None:
            return
        code, finished = found
        oom = files.oom_killed(rec.persist_dir) or os.path.exists(
            os.path.join(rec.bundle, files.OOM_FILE)
        )
        reason = exit_reason(code, oom)
        if self._finish(ctr_id, code, finished, reason, ""):
            log.info("container exited", extra={"container": ctr_id, "exit_code": code,
                                                 "reason": reason})
            if oom:
                self.observer.oom_killed(self.pod_namespace(rec))
        files.remove_exit_file(str(self.settings.exit_dir), ctr_id)

    def pod_namespace(self, rec: ContainerRecord) -> str:
        """The namespace of the container's pod, from the kubelet's label ("" if none)."""
        return rec.labels.get(POD_NAMESPACE_LABEL, "")

    def mark_lost(self, ctr_id: str, message: str) -> None:
        if self._finish(ctr_id, UNKNOWN_EXIT, time.time_ns(), ERROR, message):
            log.warning("container lost", extra={"container": ctr_id, "error": message})

    def _finish(self, ctr_id: str, code: int, finished: int, reason: str, message: str) -> bool:
        """Record that a created or running container ended; False if it already had."""
        made = False

        def change(cur: ContainerRecord) -> ContainerRecord | None:
            nonlocal made
            if cur.state not in (CREATED, RUNNING):
                return None
            made = True
            return replace(cur, state=EXITED, exit_code=code, finished_at=finished,
                           reason=reason, message=message)

        stored = self.store.update(ctr_id, change)
        with self._exited:
            self._exited.notify_all()
        if made and stored is not None:
            self.hooks.stopped(stored, wait=False)  # however it stopped; delivered once
        return made

    def _wait_exit(self, ctr_id: str, seconds: float, ctx: CallContext | None) -> bool:
        """Wait up to ``seconds`` for the container to be recorded as exited.

        The state is checked with the condition's lock held, so an exit recorded between
        the check and the wait still wakes us (``_finish`` notifies under that lock).
        """
        deadline = time.monotonic() + seconds
        gone_since: float | None = None
        while True:
            with self._exited:
                rec = self.store.get(ctr_id)
                if rec is None or rec.state not in (CREATED, RUNNING):
                    return True
                now = time.monotonic()
                if not alive(rec.pid, rec.pid_start):
                    # The process is gone: conmon writes its exit file right after reaping it.
                    self.record_exit(ctr_id)
                    gone_since = gone_since or now
                    if now - gone_since > MONITOR_EXIT_WAIT and not alive(
                        rec.monitor_pid, rec.monitor_start
                    ):
                        self.mark_lost(ctr_id, "the monitor exited without writing an exit status")
                        continue
                    current = self.store.get(ctr_id)
                    if current is None or current.state not in (CREATED, RUNNING):
                        return True
                if now >= deadline:
                    return False
                if ctx is not None:
                    ctx.check()
                self._exited.wait(min(_POLL, max(deadline - now, 0.001)))

    # ---- liveness (the daemon's periodic probe) --------------------------------
    def probe_monitors(self) -> None:
        """Check the conmon of every running container (see ``probe_monitor``)."""
        for rec in self.store.visible():
            if rec.state == RUNNING:
                try:
                    self.probe_monitor(rec.id)
                except Exception:
                    log.exception("probing a container's monitor failed",
                                  extra={"container": rec.id})
        present = {r.id for r in self.store.all()}
        self._orphans.intersection_update(present)

    def probe_monitor(self, ctr_id: str) -> str:
        """Check one running container's conmon by pid and start time.

        No lock is held: the record is a snapshot and the change, if any, is
        applied by ``_finish`` only to a container still created or running.
        Returns "ok", "orphaned" (conmon gone, the process runs: reported once),
        "exited" (conmon wrote the exit, recorded now), "lost" (both gone without
        an exit: marked exited 255) or "" (nothing to check).
        """
        rec = self.store.get(ctr_id)
        if rec is None or rec.state != RUNNING or not rec.monitor_pid:
            return ""
        if alive(rec.monitor_pid, rec.monitor_start):
            return "ok"
        if alive(rec.pid, rec.pid_start):
            if ctr_id not in self._orphans:
                self._orphans.add(ctr_id)
                log.error("container monitor died; the container runs on but its exit "
                          "will not be noticed", extra={"container": ctr_id,
                                                        "monitor_pid": rec.monitor_pid})
                self.observer.monitor_lost()
            return "orphaned"
        # conmon writes the exit before it exits: read after seeing both gone.
        if self.read_exit(rec) is not None:
            self.record_exit(ctr_id)
            return "exited"
        if self._finish(ctr_id, UNKNOWN_EXIT, time.time_ns(), ERROR, MONITOR_GONE):
            log.error("container monitor and process disappeared without an exit status",
                      extra={"container": ctr_id})
        self._orphans.discard(ctr_id)
        return "lost"
