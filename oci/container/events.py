"""Container and pod lifecycle events, each with its pod's state when it was published.

The kinds are the CRI's: created, started, stopped, deleted. A pod has its own, as in
CRI-O, with the pod's id as container id: created and started when RunPodSandbox made
it ready, stopped when it stopped being ready (StopPodSandbox, or its infra process
or namespaces died), created and stopped when a failed build was kept not ready,
deleted when it was removed.

Container events come from the container store's change hook: the two records of a
change say what happened (creating -> created: created; created -> running: started;
created or running -> exited: stopped, preceded by started when the process had been
started but its exit was recorded before the start was; creating -> exited, a failed
creation kept for the kubelet to remove: created and stopped; the removal of a visible
record: deleted). The hook runs after the change is committed and cached, under the
store's write lock, so container events come in the order the changes were made,
whoever made them: an rpc, the exit watcher, the liveness probe or start-up recovery
(an exit that happened while the daemon was down is published once, when recovery
records it). Pod events come from the pod manager (``PodLifecycleObserver``), under
the pod's lock, after the change is stored.

Each event carries the pod's record and the records of its visible containers, read
while the event is published; ``created_at`` is the wall clock in nanoseconds, made
strictly increasing per pod (the kubelet ignores an event not newer than the state
it holds).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from base.event_bus import EventBus
from oci.container.record import CREATED, CREATING, EXITED, RUNNING, ContainerRecord
from oci.container.store import ContainerStore
from sandbox.record import SandboxRecord

log = logging.getLogger("peapod.events")

# Event kinds.
CONTAINER_CREATED = "created"
CONTAINER_STARTED = "started"
CONTAINER_STOPPED = "stopped"
CONTAINER_DELETED = "deleted"

START_ERROR = "StartError"  # the reason of a container whose start failed


@dataclass(frozen=True)
class LifecycleEvent:
    """One lifecycle event and the state of the pod it belongs to."""

    container_id: str  # a container's id, or the pod's own for a pod event
    kind: str
    created_at: int  # unix ns, strictly increasing per pod
    pod: SandboxRecord
    containers: tuple[ContainerRecord, ...]  # the pod's visible containers


def container_kinds(old: ContainerRecord | None, new: ContainerRecord | None) -> tuple[str, ...]:
    """The events a container store change makes (none for most changes)."""
    if new is None:
        return (CONTAINER_DELETED,) if old is not None and old.visible else ()
    if old is None:
        return (CONTAINER_CREATED,) if new.visible else ()
    if old.state == new.state:
        return ()
    if old.state == CREATING and new.state == CREATED:
        return (CONTAINER_CREATED,)
    if old.state == CREATING and new.state == EXITED:  # kept after a failed creation
        return (CONTAINER_CREATED, CONTAINER_STOPPED)
    if old.state == CREATED and new.state == RUNNING:
        return (CONTAINER_STARTED,)
    if old.state in (CREATED, RUNNING) and new.state == EXITED:
        ran = old.state == CREATED and new.started_at and new.reason != START_ERROR
        return (CONTAINER_STARTED, CONTAINER_STOPPED) if ran else (CONTAINER_STOPPED,)
    return ()


class LifecyclePublisher:
    """Publishes pod and container lifecycle events on ``bus``.

    Wire it as the pod manager's ``PodLifecycleObserver`` and as the container
    store's ``on_change``. Publishing reads two in-memory indexes and queues the
    event for each subscriber: it never waits for a subscriber, and a failure is
    logged, never raised into the change that caused it.
    """

    def __init__(
        self,
        bus: EventBus[LifecycleEvent],
        pod_of: Callable[[str], SandboxRecord | None],
        containers: ContainerStore,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._bus = bus
        self._pod_of = pod_of
        self._containers = containers
        self._clock = clock
        self._lock = threading.Lock()  # one event at a time: timestamps and order
        self._last: dict[str, int] = {}  # pod id -> created_at of its last event

    # ---- the container store's hook ------------------------------------------
    def container_changed(self, old: ContainerRecord | None, new: ContainerRecord | None) -> None:
        kinds = container_kinds(old, new)
        rec = new or old
        if not kinds or rec is None:
            return
        pod = self._pod_of(rec.sandbox_id)
        if pod is None:
            log.debug("no event for a container without a pod", extra={"container": rec.id})
            return
        for kind in kinds:
            self._publish(rec.id, kind, pod)

    # ---- PodLifecycleObserver ---------------------------------------------------
    def pod_started(self, rec: SandboxRecord) -> None:
        self._publish(rec.id, CONTAINER_CREATED, rec)
        self._publish(rec.id, CONTAINER_STARTED, rec)

    def pod_stopped(self, rec: SandboxRecord) -> None:
        self._publish(rec.id, CONTAINER_STOPPED, rec)

    def pod_kept(self, rec: SandboxRecord) -> None:
        self._publish(rec.id, CONTAINER_CREATED, rec)
        self._publish(rec.id, CONTAINER_STOPPED, rec)

    def pod_removed(self, rec: SandboxRecord) -> None:
        self._publish(rec.id, CONTAINER_DELETED, rec, last=True)

    # ---- internals -------------------------------------------------------------
    def _publish(self, ctr_id: str, kind: str, pod: SandboxRecord, last: bool = False) -> None:
        try:
            with self._lock:
                stamp = max(self._clock(), self._last.get(pod.id, 0) + 1)
                if last:
                    self._last.pop(pod.id, None)
                else:
                    self._last[pod.id] = stamp
                containers = tuple(r for r in self._containers.in_pod(pod.id) if r.visible)
                self._bus.publish(LifecycleEvent(ctr_id, kind, stamp, pod, containers))
        except Exception:
            log.exception("publishing a lifecycle event failed",
                          extra={"container": ctr_id, "pod": pod.id, "event": kind})
