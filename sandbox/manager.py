"""PodManager: the pod sandbox lifecycle (run, stop, remove, status, list, recovery).

Concurrency: every pod has its own lock, held while that pod is built,
stopped or removed (and by the containers code while it creates a container
in the pod). Stop and Remove first cancel the pod's container creations in
flight (``PodContainers.creations_held``), so a hung runtime does not hold
them up. No lock shared by all pods is held across a subprocess or CNI
call, so slow work on one pod never blocks calls about others. Status and
list calls read the in-memory snapshots of ``SandboxStore`` and take no lock.

Stop (as in CRI-O): stops the pod's containers, runs CNI DEL (releasing the
IP), kills the infra process and marks the pod NOTREADY; namespaces, shm,
files and cgroup stay until Remove. A DEL that fails is retried in the
background with backoff, and Remove refuses to unpin the network namespace
until DEL has succeeded (Debian's bridge plugin can only drop its masquerade
rules while the namespace exists).

Kubelet retries (the idea of CRI-O's resourcestore, ``base.pending``): a build
runs on its own thread within ``create_timeout``, not the caller's deadline. A
pod finished after its caller gave up is kept, hidden from List, for
``keep_for`` seconds and handed to the retry with the same name (metadata and
attempt). Unclaimed, it is removed: its id never reached the kubelet, so
nothing can be using it, and the kubelet's next attempt builds a new one. A pod
still being built is not found by Stop or Remove (NotFound, at once): its id
has not been handed out yet.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Protocol

from base.cancel import CallContext
from base.errors import DeadlineExceeded, NotFound, PeapodError
from base.pending import LateObserver, PendingResults
from sandbox.build import KeptPod, PodBuild, PodSettings, new_record
from sandbox.hooks import NoPodHooks, PodHooks
from sandbox.infra import InfraProcess
from sandbox.lifecycle import NoPodObserver, PodLifecycleObserver
from sandbox.network import PodNetwork
from sandbox.pod_config import PodConfig
from sandbox.record import NOTREADY, READY, SandboxRecord
from sandbox.reservations import NameReservations
from sandbox.retry import BackgroundRetrier
from sandbox.store import SandboxFilter, SandboxStore
from sandbox.teardown import release_local, stop_infra

log = logging.getLogger("peapod.sandbox")

LOCK_POLL = 0.5
KEEP_FOR = 300.0  # seconds a pod finished after its caller's deadline waits for the retry
MAX_KEPT = 64  # pods kept that way at most; beyond, the oldest is removed
SHUTDOWN_WAIT = 10.0  # how long close() waits for cancelled builds to roll back
PROBE_LOCK_WAIT = 0.2  # the liveness probe skips a pod busy for longer (next round)


class PodContainers(Protocol):
    """What the pod lifecycle needs from the containers part."""

    def stop_pod_containers(self, pod_id: str, ctx: CallContext) -> None:
        """Stop every container of the pod (graceful, then forced)."""

    def remove_pod_containers(self, pod_id: str, ctx: CallContext) -> None:
        """Remove every container of the pod, with its state rows."""

    def creations_held(self, pod_id: str) -> AbstractContextManager[None]:
        """Cancel the pod's container creations in flight; refuse new ones until exit."""


class NoContainers:
    """The seam's default until the containers part is wired in: nothing to do."""

    def creations_held(self, pod_id: str) -> AbstractContextManager[None]:
        return nullcontext()

    def stop_pod_containers(self, pod_id: str, ctx: CallContext) -> None:
        pass

    def remove_pod_containers(self, pod_id: str, ctx: CallContext) -> None:
        pass


class PodManager:
    """Owns every pod sandbox of the daemon."""

    def __init__(
        self, settings: PodSettings, store: SandboxStore, network: PodNetwork,
        containers: PodContainers | None = None,
        keep_for: float = KEEP_FOR,
        late_observer: LateObserver | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.network = network
        self.containers: PodContainers = containers or NoContainers()
        self.hooks: PodHooks = NoPodHooks()  # lifecycle hooks (NRI plugins); see sandbox.hooks
        self.lifecycle: PodLifecycleObserver = NoPodObserver()  # the daemon's events
        self._names = NameReservations()
        self._building: set[str] = set()  # ids of pods whose build runs, not yet in the store
        self._building_guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._retrier = BackgroundRetrier(self._retry_teardown, name="cni-del-retry")
        self._late: PendingResults[str] = PendingResults(
            "pod-builds", keep_for, MAX_KEPT, self._discard_late, observer=late_observer
        )

    # ---- locks ----------------------------------------------------------
    @contextmanager
    def lock(self, pod_id: str, ctx: CallContext | None = None) -> Iterator[None]:
        """Hold the pod's lock (re-entrant); waits within ``ctx``'s deadline.

        The containers part holds it while creating a container in the pod, so
        Stop and Remove wait for that; re-check the pod's state once inside.
        """
        with self._locks_guard:
            lock = self._locks.setdefault(pod_id, threading.RLock())
        while True:
            wait = LOCK_POLL
            if ctx is not None:
                try:
                    wait = ctx.timeout(LOCK_POLL) or LOCK_POLL
                except DeadlineExceeded:
                    raise DeadlineExceeded(
                        f"pod {pod_id} is busy with another operation that did not finish "
                        "before the caller's deadline"
                    ) from None
            if lock.acquire(timeout=wait):
                break
        try:
            yield
        finally:
            lock.release()

    def _drop_lock(self, pod_id: str) -> None:
        with self._locks_guard:
            self._locks.pop(pod_id, None)

    # ---- lookups (cache only) -------------------------------------------
    def find(self, id_or_prefix: str) -> SandboxRecord | None:
        """The pod with this id or unique id prefix, or None."""
        return self.store.resolve(id_or_prefix)

    def get(self, id_or_prefix: str) -> SandboxRecord:
        """The pod with this id or unique id prefix; NotFound otherwise."""
        rec = self.store.resolve(id_or_prefix)
        if rec is None:
            raise NotFound(f"pod sandbox {id_or_prefix!r} not found")
        return rec

    def _find_built(self, id_or_prefix: str) -> SandboxRecord | None:
        """``find``, but NotFound for the id (or a prefix of it) of a pod being built.

        Its build holds the pod's lock for up to ``create_timeout`` (a hung CNI
        ADD): a Stop or Remove must neither wait for it nor claim success.
        """
        rec = self.find(id_or_prefix)
        if rec is None and id_or_prefix:
            with self._building_guard:
                building = next((i for i in self._building if i.startswith(id_or_prefix)), None)
            if building is not None:
                raise NotFound(
                    f"pod sandbox {building} is still being created; its id has not been "
                    "handed out, so it cannot be stopped or removed yet"
                )
        return rec

    def list(self, flt: SandboxFilter | None = None) -> list[SandboxRecord]:
        """The pods matching ``flt``, but none built for a caller that has not had it yet."""
        return [r for r in self.store.list(flt) if not self._late.holds(r.name)]

    def network_ready(self) -> tuple[bool, str, str]:
        """(ready, reason, message) of the NetworkReady condition."""
        return self.network.ready()

    # ---- RunPodSandbox --------------------------------------------------
    def run(self, config: PodConfig, runtime_handler: str, ctx: CallContext) -> SandboxRecord:
        """Create and start a pod sandbox; see the module doc and sandbox.build.

        The build runs on its own thread within ``create_timeout`` and goes on if
        the caller's deadline passes first; the kubelet's retry (same metadata,
        hence the same name) then receives that pod (``base.pending``).
        """
        name = config.metadata.sandbox_name()
        pod_id = self._late.run(
            name, lambda work_ctx: self._build(config, runtime_handler, work_ctx),
            self.settings.create_timeout, ctx, admit=lambda: self._names.check(name),
            what=f"creation of pod sandbox {name}",
        )
        rec = self.store.get(pod_id)
        if rec is None:
            raise NotFound(f"pod sandbox {pod_id} ({name}) was removed before it was handed over")
        return rec

    def _build(self, config: PodConfig, runtime_handler: str, ctx: CallContext) -> str:
        """Build one pod under the work's own context; returns its id."""
        name = config.metadata.sandbox_name()
        pod_id = secrets.token_hex(32)
        self._names.acquire(name, pod_id)
        with self._building_guard:
            self._building.add(pod_id)
        try:
            network = None if config.host_network else self.network.wait_ready(ctx)
            rec = new_record(self.settings, pod_id, config, runtime_handler)
            with self.lock(pod_id):
                try:
                    rec = PodBuild(self.settings, self.store, self.network, rec, config,
                                   self.hooks).run(network, ctx)
                except KeptPod as kept:
                    self.store.publish(kept.record)
                    self.lifecycle.pod_kept(kept.record)
                    self._retrier.schedule(pod_id)
                    raise kept.error from None
                self.lifecycle.pod_started(rec)
        except BaseException:
            if self.store.get(pod_id) is None:
                self._names.release(name, pod_id)
                self._drop_lock(pod_id)
            raise
        finally:
            with self._building_guard:
                self._building.discard(pod_id)
        log.info("pod sandbox ready", extra={"pod": pod_id, "pod_name": name, "ips": rec.ips})
        return pod_id

    def _discard_late(self, name: str, pod_id: str) -> None:
        """Remove a pod finished after its caller's deadline that no retry claimed."""
        log.warning("removing a pod finished after its caller's deadline that no retry "
                    "claimed", extra={"pod": pod_id, "pod_name": name})
        self.remove(pod_id, CallContext.with_timeout(
            self.settings.teardown_timeout, f"removal of unclaimed pod sandbox {name}"))

    # ---- StopPodSandbox -------------------------------------------------
    def stop(self, id_or_prefix: str, ctx: CallContext) -> None:
        """Stop the pod; an unknown or already stopped pod is a success.

        NotFound for a pod still being built (its id was not handed out yet).
        """
        rec = self._find_built(id_or_prefix)
        if rec is None:
            return
        with self.containers.creations_held(rec.id), self.lock(rec.id, ctx):
            current = self.store.get(rec.id)
            if current is not None:
                self._stop_locked(current, ctx)

    def _stop_locked(self, rec: SandboxRecord, ctx: CallContext) -> SandboxRecord:
        self.containers.stop_pod_containers(rec.id, ctx)
        if rec.state == NOTREADY and not rec.attachments and rec.infra is None:
            return rec
        self.hooks.stop(rec)  # containers stopped, network still there
        error: PeapodError | None = None
        if rec.attachments:
            try:
                self.network.detach_all(rec.attachments, ctx)
                rec = replace(rec, attachments=[], ips=[], pending_network_teardown=False,
                              network_error="")
            except PeapodError as exc:
                error = exc
                rec = replace(rec, pending_network_teardown=True, network_error=exc.message)
        if rec.infra is not None:
            stop_infra(rec.infra)
            rec = replace(rec, infra=None)
        was_ready = rec.state == READY
        rec = replace(rec, state=NOTREADY)
        self.store.put(rec)
        if was_ready:
            self.lifecycle.pod_stopped(rec)
        if error is not None:
            self._retrier.schedule(rec.id)
            raise type(error)(
                f"tearing down the network of pod {rec.id} failed (retried in the "
                f"background): {error.message}", reason=error.reason,
            ) from error
        self._retrier.forget(rec.id)
        log.info("pod sandbox stopped", extra={"pod": rec.id})
        return rec

    # ---- RemovePodSandbox -----------------------------------------------
    def remove(self, id_or_prefix: str, ctx: CallContext) -> None:
        """Stop if needed, then delete everything of the pod; unknown pods are a success.

        NotFound for a pod still being built (its id was not handed out yet).
        """
        rec = self._find_built(id_or_prefix)
        if rec is None:
            return
        with self.containers.creations_held(rec.id), self.lock(rec.id, ctx):
            current = self.store.get(rec.id)
            if current is None:
                return
            current = self._stop_locked(current, ctx)
            self.containers.remove_pod_containers(current.id, ctx)
            self.hooks.remove(current)
            release_local(current)
            self.store.delete(current.id)
            self.lifecycle.pod_removed(current)
            self._retrier.forget(current.id)
            self._names.release(current.name, current.id)
        self._drop_lock(rec.id)
        log.info("pod sandbox removed", extra={"pod": rec.id})

    # ---- background DEL -------------------------------------------------
    def _retry_teardown(self, pod_id: str) -> bool:
        """One background attempt at a pending DEL; True when nothing is left to do."""
        if self.store.get(pod_id) is None:
            return True
        ctx = CallContext.with_timeout(self.settings.teardown_timeout, f"CNI DEL of {pod_id}")
        try:
            with self.lock(pod_id, CallContext.with_timeout(LOCK_POLL * 2)):
                rec = self.store.get(pod_id)
                if rec is None or not rec.pending_network_teardown:
                    return True
                try:
                    self.network.detach_all(rec.attachments, ctx)
                except PeapodError as exc:
                    log.warning("CNI DEL failed again", extra={"pod": pod_id,
                                                               "error": exc.message})
                    self.store.put(replace(rec, network_error=exc.message))
                    return False
                self.store.put(replace(rec, attachments=[], ips=[],
                                       pending_network_teardown=False, network_error=""))
                log.info("pending CNI DEL done", extra={"pod": pod_id})
                return True
        except DeadlineExceeded:
            return False  # the pod is busy; try again later

    def retry_in_background(self, pod_id: str, attempt: Callable[[], bool]) -> None:
        """Run ``attempt`` for ``pod_id`` on the teardown retrier until it returns True."""
        self._retrier.schedule(pod_id, delay=0, attempt=attempt)

    def pending_teardowns(self) -> list[str]:
        """Pods whose DEL is waiting for a background retry."""
        return self._retrier.pending()

    # ---- liveness (the daemon's periodic probe) ---------------------------
    def probe_infras(self) -> None:
        """Check the infra process of every ready pod (see ``probe_infra``)."""
        for rec in self.store.all():
            if rec.state == READY and rec.infra is not None:
                try:
                    self.probe_infra(rec.id)
                except Exception:
                    log.exception("probing a pod's infra process failed", extra={"pod": rec.id})

    def probe_infra(self, pod_id: str) -> bool:
        """Mark a ready pod NOTREADY if its infra process died; True if it did.

        The pod's PID namespace died with it, so the kubelet must recreate the pod.
        /proc is read without the pod's lock; the lock is then taken only briefly
        (never waited on for long) to store the change if the record is unchanged.
        """
        rec = self.store.get(pod_id)
        if rec is None or rec.state != READY or rec.infra is None:
            return False
        if InfraProcess.from_record(rec.infra).is_running():
            return False
        try:
            with self.lock(pod_id, CallContext.with_timeout(PROBE_LOCK_WAIT, "pod probe")):
                current = self.store.get(pod_id)
                if current is None or current.state != READY or current.infra != rec.infra:
                    return False
                # infra is kept: StopPodSandbox's kill is idempotent and reaps its parent.
                stopped = replace(current, state=NOTREADY)
                self.store.put(stopped)
                self.lifecycle.pod_stopped(stopped)
        except DeadlineExceeded:
            return False  # the pod is busy (being stopped or removed?); next round
        finally:
            if self.store.get(pod_id) is None:
                self._drop_lock(pod_id)
        log.error("pod's infra process died; pod marked NOTREADY",
                  extra={"pod": pod_id, "infra_pid": rec.infra.get("pid")})
        return True

    # ---- restart --------------------------------------------------------
    def adopt(self, rec: SandboxRecord, pending: bool) -> None:
        """Put a recovered pod in the index, reserve its name, queue its DEL."""
        self.store.publish(rec)
        self._names.restore(rec.name, rec.id)
        if pending:
            self._retrier.schedule(rec.id, delay=0)

    def close(self) -> None:
        """Cancel builds whose caller left, stop the background retries.

        Pending DELs resume at the next start; pods kept for a retry stay, and
        after the restart they are ordinary pods (listed, reserved by name).
        """
        self._late.close(SHUTDOWN_WAIT)
        self._retrier.close()
