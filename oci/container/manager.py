"""ContainerManager: the container lifecycle (create, start, stop, remove, status, exec...).

State lives in ``ContainerStore`` (database + cache). Each container has its own
operation lock, held by create/start/stop/remove/update; status and list read
the cache and take no lock. Exits are noticed by ``ExitWatcher`` (inotify on
conmon's exit directory) and recorded without the operation lock, so a stop
waiting for an exit never blocks the exit it waits for.

conmon is the monitor: nothing of peapod runs per container, and conmon (in its
own session, in the pod's cgroup) outlives the daemon. At start-up ``oci.container.recover``
reloads the records, checks monitors and processes by pid and start time, and
records exits that happened while the daemon was down.

CreateContainer runs on its own thread and outlives its caller's deadline; a
container created late is hidden from List and kept for the kubelet's retry,
which receives it, and removed if none comes (see ``sandbox.manager``). Such a
creation holds its pod's lock for up to the handler's ``create_timeout``, so
StopPodSandbox and RemovePodSandbox do not wait for it: ``creations_held``
cancels the pod's creations in flight (they roll back, their callers get
CANCELLED, nothing is kept) and refuses new ones until the pod's lock is theirs.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from base.cancel import CallContext
from base.errors import AlreadyExists, FailedPrecondition, Internal, NotFound, PeapodError
from base.pending import LateObserver, PendingResults
from conmon import ctl, files, procs
from conmon.exec_sync import ExecResult, exec_sync
from conmon.paths import attach_socket_path, attach_symlink_path
from oci.container import idmapped, image_volumes, rootfs, runtime_cli
from oci.container.create import (
    ContainerBuild,
    CreateRequest,
    PodView,
    container_name,
    signal_number,
)
from oci.container.exec_stream import StreamExec
from oci.container.exit_watcher import ExitWatcher
from oci.container.exits import MONITOR_EXIT_WAIT, ContainerObserver, ExitTracking, alive
from oci.container.record import (
    CREATED,
    CREATING,
    RUNNING,
    ContainerRecord,
)
from oci.container.runtimes import RuntimeHandler, RuntimeHandlers
from oci.container.settings import ContainerSettings
from oci.container.store import ContainerStore
from oci.spec.executable import check_executable
from oci.spec.generate import process_for_exec
from oci.spec.inputs import DaemonFacts, Resources
from oci.spec.resources import linux_resources
from sandbox.cgroup_layout import V2
from sandbox.cgroups import PodCgroup

if TYPE_CHECKING:
    from oci.image.service import ImageService

log = logging.getLogger("peapod.containers")

KILL_WAIT = 10.0  # how long a SIGKILLed container may take to be reaped
KEEP_FOR = 300.0  # seconds a container created after its caller's deadline waits for the retry
MAX_KEPT = 64  # containers kept that way at most; beyond, the oldest is removed
SHUTDOWN_WAIT = 10.0  # how long close() waits for cancelled creations to roll back


class PodLookup(Protocol):
    """What the container code needs from the pod sandboxes."""

    def get(self, id_or_prefix: str) -> PodView: ...

    def lock(
        self, pod_id: str, ctx: CallContext | None = None
    ) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class ContainerFilter:
    """ListContainers' filter: every given part must match."""

    id: str = ""  # a full id or a prefix
    state: str | None = None
    pod_id: str = ""  # a full id or a prefix
    labels: Mapping[str, str] = field(default_factory=dict)

    def matches(self, rec: ContainerRecord) -> bool:
        return (
            rec.id.startswith(self.id)
            and (self.state is None or rec.state == self.state)
            and rec.sandbox_id.startswith(self.pod_id)
            and all(rec.labels.get(k) == v for k, v in self.labels.items())
        )


def _ticks_at(wall_ns: int) -> int:
    """The boot-clock tick count at wall time ``wall_ns`` (one tick of slack)."""
    ago = max(time.time_ns() - wall_ns, 0) / 1e9
    return int(procs.boot_ticks_now() - ago * os.sysconf("SC_CLK_TCK")) - 1


def _wait_dead(pid: int, start: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for that process to be gone; False if it still runs."""
    deadline = time.monotonic() + seconds
    while alive(pid, start):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _applied(old: dict[str, Any], new: Resources) -> dict[str, Any]:
    """The limits in force after ``runtime update`` with ``new`` on top of ``old``.

    Zero or empty fields are not sent, so the runtime leaves those limits as they
    were (the kubelet's CPU manager sends nothing but ``cpuset_cpus``); unified
    keys and hugepage sizes are set one by one; oom_score_adj is no cgroup limit.
    """
    out = dict(old)
    for key, value in asdict(new).items():
        if key == "oom_score_adj":
            continue
        if key == "unified" and value:
            out[key] = {**old.get(key, {}), **value}
        elif key == "hugepage_limits" and value:
            sizes = {h["page_size"]: h for h in old.get(key, [])}
            sizes.update({h["page_size"]: h for h in value})
            out[key] = list(sizes.values())
        elif value:
            out[key] = value
    return out


class ContainerManager(ExitTracking):
    """Owns every container of the daemon."""

    def __init__(
        self,
        settings: ContainerSettings,
        store: ContainerStore,
        handlers: RuntimeHandlers,
        images: ImageService,
        facts: DaemonFacts,
        pods: PodLookup | None = None,
        observer: ContainerObserver | None = None,
        keep_for: float = KEEP_FOR,
        late_observer: LateObserver | None = None,
    ) -> None:
        super().__init__(settings, store, observer)
        self.handlers = handlers
        self.images = images
        self.facts = facts
        self.pods = pods
        self._ops: dict[str, threading.Lock] = {}
        self._ops_guard = threading.Lock()
        self._specs: dict[str, dict[str, Any]] = {}
        self._watcher = ExitWatcher(str(settings.exit_dir), self.handle_exit)
        self._late: PendingResults[str] = PendingResults(
            "container-creates", keep_for, MAX_KEPT, self._discard_late,
            observer=late_observer,
        )
        self._held: collections.Counter[str] = collections.Counter()  # pod id -> holders
        self._held_guard = threading.Lock()

    def runtime_for(self, rec: ContainerRecord) -> RuntimeHandler:
        """The runtime and monitor that operate an existing container.

        Those recorded at create time, so the container can still be stopped and
        removed after its handler left the config; the live handler only for a
        record made before they were kept.
        """
        if not rec.runtime_path:
            return self.handlers.get(rec.runtime_handler)
        return RuntimeHandler(
            name=rec.runtime_handler,
            runtime_path=rec.runtime_path,
            runtime_root=rec.runtime_root,
            monitor_path=rec.monitor_path,
            monitor_env=dict(rec.monitor_env),
            create_timeout=0.0,  # creation uses the live handler
        )

    # ---- start-up and shut-down ---------------------------------------------
    def make_dirs(self) -> None:
        """Create the state, run, exit, socket and exec directories.

        The bundles' directory is searchable by others (not listable): a user-namespaced
        container's runtime reaches its bundle as the pod's root, whose group alone may
        search that bundle (``idmapped``); other bundles are private.
        """
        s = self.settings
        for d in (s.containers_dir, s.bundles_dir, s.exit_dir, s.socket_dir, s.exec_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        s.bundles_dir.chmod(0o711)

    def watch_exits(self) -> None:
        """Start recording conmon's exit files (after recovery)."""
        self._watcher.start()

    def close(self) -> None:
        """Cancel creations whose caller left; stop watching exits.

        Containers and their monitors keep running; those kept for a retry stay,
        and after the restart they are ordinary containers.
        """
        self._late.close(SHUTDOWN_WAIT)
        self._watcher.close()

    # ---- locks -----------------------------------------------------------------
    @contextlib.contextmanager
    def _op(self, ctr_id: str) -> Iterator[None]:
        with self._ops_guard:
            lock = self._ops.setdefault(ctr_id, threading.Lock())
        with lock:
            yield

    # ---- create / start ----------------------------------------------------
    def create(self, req: CreateRequest, ctx: CallContext) -> ContainerRecord:
        """Create (not start) a container in a ready pod; see oci.container.create.

        The creation runs on its own thread within the pod's runtime handler's
        ``create_timeout`` and goes on if the caller's deadline passes first; the
        kubelet's retry (same name and attempt) then receives it (``base.pending``).
        """
        if self.pods is None:
            raise Internal("the pod sandbox manager is not wired to the containers")
        pod = self.pods.get(req.pod_id)
        name = container_name(pod, req.container.name, req.attempt)
        timeout = self.handlers.get(pod.runtime_handler).create_timeout
        ctr_id = self._late.run(
            name, lambda work_ctx: self._build(req, pod.id, work_ctx), timeout, ctx,
            admit=lambda: self._refuse_taken(name), what=f"creation of container {name}",
            group=pod.id,
        )
        rec = self.store.get(ctr_id)
        if rec is None:
            raise NotFound(f"container {ctr_id} ({name}) was removed before it was handed over")
        return rec

    def _build(self, req: CreateRequest, pod_id: str, ctx: CallContext) -> str:
        """Create one container under the work's own context; returns its id."""
        assert self.pods is not None
        # Registered (in self._late) before this runs: a stop that holds the pod's
        # creations after this check cancels ctx, one before it is seen here.
        self._refuse_held(pod_id)
        with self.pods.lock(pod_id, ctx):
            pod = self.pods.get(pod_id)
            rec = ContainerBuild(self, pod, req).run(ctx)
        log.info("container created", extra={"container": rec.id, "container_name": rec.name,
                                             "pod": rec.sandbox_id})
        # An exit that came while the record was still "creating" was left for us.
        if self.read_exit(rec) is not None:
            self.record_exit(rec.id)
        self.hooks.post_create(rec)
        return rec.id

    # ---- a pod being stopped or removed ------------------------------------------
    @contextlib.contextmanager
    def creations_held(self, pod_id: str) -> Iterator[None]:
        """Cancel the pod's container creations in flight; refuse new ones until exit.

        StopPodSandbox and RemovePodSandbox take the pod's lock within this, so a
        creation (which holds that lock while it builds) rolls back at once
        instead of delaying them for up to the handler's create_timeout.
        """
        with self._held_guard:
            self._held[pod_id] += 1
        try:
            cancelled = self._late.cancel_group(
                pod_id, f"its pod sandbox {pod_id} is being stopped or removed")
            if cancelled:
                log.info("cancelling container creations: their pod is being stopped",
                         extra={"pod": pod_id, "container_names": ", ".join(cancelled)})
            yield
        finally:
            with self._held_guard:
                self._held[pod_id] -= 1
                if self._held[pod_id] <= 0:
                    del self._held[pod_id]

    def _refuse_held(self, pod_id: str) -> None:
        """FailedPrecondition while the pod is being stopped or removed."""
        with self._held_guard:
            held = self._held.get(pod_id, 0) > 0
        if held:
            raise FailedPrecondition(
                f"pod sandbox {pod_id} is being stopped or removed; cannot create containers"
            )

    def _refuse_taken(self, name: str) -> None:
        """AlreadyExists if a container (not one pending for a retry) has ``name``."""
        for rec in self.store.all():
            if rec.name == name:
                raise AlreadyExists(
                    f"container name {name} is already in use by container {rec.id}; "
                    "remove that container first"
                )

    def _discard_late(self, name: str, ctr_id: str) -> None:
        """Remove a container created after its caller's deadline that no retry claimed."""
        log.warning("removing a container created after its caller's deadline that no retry "
                    "claimed", extra={"container": ctr_id, "container_name": name})
        self.remove(ctr_id, None)

    def start(self, id_or_prefix: str, ctx: CallContext) -> None:
        """Run a created container's process."""
        found = self.store.find(id_or_prefix)
        with self._op(found.id):
            rec = self.store.find(found.id)
            if rec.state != CREATED:
                raise FailedPrecondition(
                    f"container {rec.id} is {rec.state}; only a created container can be started"
                )
            self.hooks.start(rec)  # may refuse; nothing has changed yet
            handler = self.runtime_for(rec)
            started = time.time_ns()
            self.store.update(rec.id, lambda cur: replace(cur, started_at=started))
            try:
                runtime_cli.start(handler, rec.id, ctx)
            except PeapodError as exc:
                self._finish(rec.id, 128, time.time_ns(), "StartError", exc.message)
                # The record says exited (first, so the kill's exit does not replace the
                # reason): make that true. A start that timed out may have started the
                # process, and a failed one leaves runc's init and conmon waiting.
                # No ctx: the caller's may be spent already.
                try:
                    runtime_cli.kill(handler, rec.id, signal.SIGKILL, all_processes=True)
                except PeapodError as kill_exc:
                    log.warning("could not kill a container whose start failed",
                                extra={"container": rec.id, "error": kill_exc.message})
                raise
            self.store.update(
                rec.id, lambda cur: replace(cur, state=RUNNING) if cur.state == CREATED else None
            )
        log.info("container started", extra={"container": rec.id})
        self.hooks.post_start(self.store.get(rec.id) or rec)

    # ---- stop / remove ------------------------------------------------------
    def stop(self, id_or_prefix: str, timeout: float, ctx: CallContext | None) -> None:
        """Stop signal, then SIGKILL after ``timeout`` seconds; unknown or stopped is fine."""
        try:
            found = self.store.find(id_or_prefix)
        except NotFound:
            return
        with self._op(found.id):
            self._stop_locked(found.id, timeout, ctx)
        stopped = self.store.get(found.id)
        if stopped is not None and stopped.state not in (CREATING, CREATED, RUNNING):
            self.hooks.stopped(stopped, wait=True)

    def _stop_locked(self, ctr_id: str, timeout: float, ctx: CallContext | None) -> None:
        rec = self.store.get(ctr_id)
        if rec is None or rec.state not in (CREATED, RUNNING):
            return
        handler = self.runtime_for(rec)
        if rec.state == RUNNING and timeout > 0:
            sig = signal_number(rec.stop_signal)
            log.info("stopping container", extra={"container": ctr_id,
                                                  "signal": rec.stop_signal, "timeout": timeout})
            if runtime_cli.kill(handler, ctr_id, sig, ctx=ctx) and self._wait_exit(
                ctr_id, timeout, ctx
            ):
                return
        runtime_cli.kill(handler, ctr_id, signal.SIGKILL, all_processes=True, ctx=ctx)
        if not self._wait_exit(ctr_id, KILL_WAIT, ctx):
            raise Internal(f"container {ctr_id} did not exit within {KILL_WAIT}s of SIGKILL")

    def remove(self, id_or_prefix: str, ctx: CallContext | None) -> None:
        """Force-stop, then delete everything of the container; unknown is fine."""
        try:
            found = self.store.find(id_or_prefix)
        except NotFound:
            return
        self._remove_exact(found.id, ctx)

    def _remove_exact(self, ctr_id: str, ctx: CallContext | None) -> None:
        with self._op(ctr_id):
            self._remove_locked(ctr_id, ctx)
        with self._ops_guard:
            self._ops.pop(ctr_id, None)

    def _remove_locked(self, ctr_id: str, ctx: CallContext | None) -> None:
        rec = self.store.get(ctr_id)
        if rec is None:
            return
        self._stop_locked(ctr_id, 0, ctx)
        self.hooks.remove(self.store.get(ctr_id) or rec)
        self.teardown(rec)
        self.store.delete(ctr_id)
        self._specs.pop(ctr_id, None)
        log.info("container removed", extra={"container": ctr_id})

    def teardown(self, rec: ContainerRecord) -> None:
        """Delete the container's runtime state, monitor, mounts, files and layer holds.

        Idempotent: every step tolerates what an earlier run or a crash already did.
        """
        monitor, since = rec.monitor_pid, rec.monitor_start
        if not monitor:
            # Interrupted before the record got conmon's pid: its pidfile may say.
            with contextlib.suppress(PeapodError):
                monitor = files.read_pidfile(os.path.join(rec.bundle, "conmon-pidfile")) or 0
            since = _ticks_at(rec.created_at)
        # A half-built container's conmon waits on its runtime: no reason to wait for it.
        grace = 0.0 if rec.state == CREATING else MONITOR_EXIT_WAIT
        if monitor and not _wait_dead(monitor, rec.monitor_start, grace):
            log.warning("conmon outlived its container; killing it", extra={"container": rec.id})
            procs.wait_gone(procs.kill_tree(monitor, not_before_ticks=since), 5.0)
        try:
            runtime_cli.delete(self.runtime_for(rec), rec.id)
        except PeapodError as exc:
            # Once its processes are gone, the rest may go even if the runtime balks.
            if alive(rec.pid, rec.pid_start):
                raise
            log.warning("the runtime could not delete the container; cleaning up the rest",
                        extra={"container": rec.id, "error": exc.message})
        rootfs.unmount_rootfs(Path(rec.rootfs))
        image_volumes.unmount_volumes(Path(rec.bundle))
        idmapped.release(Path(rec.bundle))
        rootfs.remove_tree(Path(rec.bundle))
        rootfs.remove_tree(Path(rec.storage_dir))
        files.remove_exit_file(str(self.settings.exit_dir), rec.id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(attach_symlink_path(str(self.settings.socket_dir), rec.id))
        self.images.store.release(rec.id)

    # ---- pods ------------------------------------------------------------------
    def stop_pod_containers(self, pod_id: str, ctx: CallContext) -> None:
        """Kill every running container of the pod (the kubelet stopped them gracefully)."""
        ids = [r.id for r in self.store.in_pod(pod_id) if r.state in (CREATED, RUNNING)]
        self._each(ids, lambda i: self.stop(i, 0, ctx))

    def remove_pod_containers(self, pod_id: str, ctx: CallContext) -> None:
        """Remove every container of the pod."""
        ids = [r.id for r in self.store.in_pod(pod_id)]
        self._each(ids, lambda i: self._remove_exact(i, ctx))
        self._release_pod_leaf(pod_id)

    def _release_pod_leaf(self, pod_id: str) -> None:
        """On cgroup v2, drop the pod's process leaf conmon used (if nothing else is in it)."""
        if self.pods is None:
            return
        try:
            pod = self.pods.get(pod_id)
        except NotFound:
            return
        if pod.cgroup and pod.cgroup.get("version") == V2:
            for d in PodCgroup.from_record(pod.cgroup).process_dirs():
                with contextlib.suppress(OSError):
                    d.rmdir()

    @staticmethod
    def _each(ids: list[str], work: Any) -> None:
        if not ids:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(ids))) as pool:
            futures = [pool.submit(work, i) for i in ids]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # type: ignore[misc]

    # ---- queries (cache only) ----------------------------------------------
    def status(self, id_or_prefix: str) -> ContainerRecord:
        return self.store.find(id_or_prefix)

    def list(self, flt: ContainerFilter | None = None) -> list[ContainerRecord]:
        """The containers matching ``flt``, but none created for a caller that has not had it."""
        records = [r for r in self.store.visible() if not self._late.holds(r.name)]
        if flt is not None:
            records = [r for r in records if flt.matches(r)]
        return records

    def pod_namespace(self, rec: ContainerRecord) -> str:
        """The namespace of the container's pod; the kubelet's label once the pod is gone."""
        if self.pods is not None:
            try:
                return str(self.pods.get(rec.sandbox_id).metadata.namespace)
            except PeapodError:
                pass
        return super().pod_namespace(rec)

    def count_by_state(self) -> dict[str, int]:
        """How many visible containers are in each state."""
        return dict(collections.Counter(r.state for r in self.store.visible()))

    def image_users(self, image_id: str) -> list[str]:
        """Ids of the containers (half-built ones included) using image ``image_id``.

        A container uses its own image and those it mounts as image volumes.
        """
        return [
            r.id for r in self.store.all()
            if r.image_id == image_id
            or any(m.get("image", {}).get("image_id") == image_id for m in r.mounts)
        ]  # fmt: skip

    def spec(self, rec: ContainerRecord) -> dict[str, Any]:
        """The container's OCI spec (read from its bundle once, then cached)."""
        cached = self._specs.get(rec.id)
        if cached is not None:
            return cached
        try:
            with open(rec.config_path, encoding="utf-8") as f:
                spec: dict[str, Any] = json.load(f)
        except FileNotFoundError:
            raise FailedPrecondition(
                f"container {rec.id} has no runtime bundle (was the node rebooted?)"
            ) from None
        self._specs[rec.id] = spec
        return spec

    def remember_spec(self, ctr_id: str, spec: dict[str, Any]) -> None:
        self._specs[ctr_id] = spec

    # ---- exec / update / logs ------------------------------------------------
    def _running(self, id_or_prefix: str, what: str) -> ContainerRecord:
        rec = self.store.find(id_or_prefix)
        if rec.state != RUNNING:
            raise FailedPrecondition(f"cannot {what} container {rec.id}: it is {rec.state}")
        return rec

    def exec_sync(
        self, id_or_prefix: str, cmd: list[str], timeout: int, ctx: CallContext
    ) -> ExecResult:
        """Run ``cmd`` in the running container; a timeout gives exit code -1."""
        rec = self._running(id_or_prefix, "exec in")
        handler = self.runtime_for(rec)
        process = process_for_exec(self.spec(rec), cmd, tty=False)
        result = exec_sync(
            handler.monitor_path,
            handler.runtime_path,
            handler.runtime_root,
            rec.id,
            process,
            timeout or None,
            self.settings.exec_output_max,
            work_dir=str(self.settings.exec_dir),
            env=handler.monitor_env,
            ctx=ctx,
        )
        self.observer.exec_sync_finished(result.exit_code, result.timed_out)
        return result

    def exec_stream(self, id_or_prefix: str, cmd: list[str], tty: bool, stdin: bool) -> StreamExec:
        """Start ``cmd`` in the running container for a streaming session."""
        rec = self._running(id_or_prefix, "exec in")
        handler = self.runtime_for(rec)
        spec = self.spec(rec)
        check_executable(spec, rec.rootfs, cmd)
        return StreamExec(
            handler.runtime_path, handler.runtime_root, rec.id,
            process_for_exec(spec, cmd, tty=tty), stdin=stdin,
            work_dir=str(self.settings.exec_dir), env=handler.monitor_env,
        )  # fmt: skip

    def attach_paths(self, id_or_prefix: str) -> tuple[str, str, bool]:
        """The running container's attach socket, control FIFO and whether it has a TTY."""
        rec = self._running(id_or_prefix, "attach to")
        sock = attach_socket_path(str(self.settings.socket_dir), rec.id)
        tty = bool(self.spec(rec)["process"].get("terminal"))
        return sock, os.path.join(rec.bundle, "ctl"), tty

    def update_resources(self, id_or_prefix: str, res: Resources, ctx: CallContext) -> None:
        """Apply new cgroup limits to a created or running container."""
        found = self.store.find(id_or_prefix)
        with self._op(found.id):
            rec = self.store.find(found.id)
            if rec.state not in (CREATED, RUNNING):
                raise FailedPrecondition(
                    f"cannot update the resources of container {rec.id}: it is {rec.state}"
                )
            res = self.hooks.update(rec, res)  # may refuse or change the resources
            oci = linux_resources(res, self.facts, [])
            oci.pop("devices", None)
            runtime_cli.update(self.runtime_for(rec), rec.id, oci, ctx)
            self.store.update(
                rec.id, lambda cur: replace(cur, resources=_applied(cur.resources, res))
            )
        self.hooks.post_update(rec)

    def reopen_log(self, id_or_prefix: str) -> None:
        """Have conmon reopen the container's log file (after the kubelet rotated it)."""
        rec = self._running(id_or_prefix, "reopen the log of")
        ctl.reopen_log(os.path.join(rec.bundle, "ctl"), rec.log_path)
