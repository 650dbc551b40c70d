"""Loading the pods back after a daemon restart (or a reboot).

Recovery runs before the socket is served, so it never waits on a CNI plugin:
it reads every record and checks local state only, and hands every DEL to the
pod manager's background retrier.

For each stored pod: a pod that was still being built when the daemon died
is taken apart: at once if it has no recorded attachments (local resources
only); otherwise it is shown NOTREADY with its DEL pending and its name
reserved, and the background retrier runs DEL from its recorded attachments
and then removes everything (its row stays "creating" until then, so a restart
in between takes it apart again). Remove by a caller meanwhile waits for the
pod's lock and runs the DEL itself, as for any pod with a pending DEL. A pod
whose pinned namespaces or shm vanished (a reboot empties the run
directory) or whose infra process is no longer the same process (pid and
start time) is marked NOTREADY; a pod whose network namespace is gone gets
its DEL queued at once (so host-local releases its IP); pending DELs are
queued again. IPs come back from the recorded attachments.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from base.cancel import CallContext
from base.errors import DeadlineExceeded, PeapodError
from sandbox import procs
from sandbox.infra import INFRA_LOG, STOP_TIMEOUT, InfraProcess
from sandbox.manager import LOCK_POLL, PodManager
from sandbox.mounts import MOUNTINFO, parse_mountinfo, umount_all
from sandbox.namespaces import unpin
from sandbox.network import pod_ips
from sandbox.pod_config import POD
from sandbox.record import CREATING, NOTREADY, READY, SandboxRecord
from sandbox.teardown import mounts_below, release_local

log = logging.getLogger("peapod.sandbox")


def recover_pods(manager: PodManager) -> None:
    records, broken = manager.store.load_all()
    for pod_id, problem in broken:
        log.error("skipping unreadable pod record", extra={"pod": pod_id, "error": problem})
    mounts = {e.mount_point: e.fstype for e in parse_mountinfo(MOUNTINFO.read_text())}
    counts = {"ready": 0, "notready": 0, "discarded": 0, "unfinished": 0}
    for rec in records:
        try:
            if rec.state == CREATING:
                if not rec.attachments:
                    _discard_local(manager, rec)
                    counts["discarded"] += 1
                    continue
                _adopt_unfinished(manager, rec, mounts)
                counts["unfinished"] += 1
                continue
            was_ready = rec.state == READY
            rec, pending = _check(rec, mounts)
            if rec.state == READY:
                rec = replace(rec, ips=_ips(rec))
            manager.store.put(rec)
            manager.adopt(rec, pending)
            if was_ready and rec.state != READY:
                manager.lifecycle.pod_stopped(rec)  # it died while the daemon was down
            counts["ready" if rec.state == READY else "notready"] += 1
        except Exception:
            log.exception("cannot recover pod", extra={"pod": rec.id})
    log.info("pod sandboxes recovered", extra=counts)


def _ips(rec: SandboxRecord) -> list[str]:
    try:
        return pod_ips(rec.attachments)
    except PeapodError as exc:
        log.error("recorded attachment unreadable", extra={"pod": rec.id, "error": exc.message})
        return rec.ips


def _check(rec: SandboxRecord, mounts: dict[str, str]) -> tuple[SandboxRecord, bool]:
    """The pod as it really is now, and whether a DEL must be queued."""
    ns_alive = {k: mounts.get(p) == "nsfs" for k, p in rec.ns_paths.items()}
    shm_alive = not rec.shm_path or mounts.get(rec.shm_path) == "tmpfs"
    infra_alive = rec.infra is None or InfraProcess.from_record(rec.infra).is_running()
    pending = rec.pending_network_teardown
    if all(ns_alive.values()) and shm_alive and infra_alive:
        return rec, pending
    why = [f"{k} namespace" for k, alive in ns_alive.items() if not alive]
    if not shm_alive:
        why.append("shm")
    if not infra_alive:
        why.append("infra process")
    if rec.state == READY:
        log.warning("pod lost its resources; marked NOTREADY",
                    extra={"pod": rec.id, "gone": ", ".join(why)})
    changes: dict[str, object] = {"state": NOTREADY}
    if not infra_alive:
        changes["infra"] = None
    if not all(ns_alive.values()):
        # Remove the stale files, so DEL sees no netns rather than a non-namespace.
        unpin({k: Path(p) for k, p in rec.ns_paths.items() if not ns_alive[k]})
        if not ns_alive.get("net", True) and rec.attachments:
            changes["pending_network_teardown"] = True
            pending = True
    return replace(rec, **changes), pending  # type: ignore[arg-type]


def _discard_local(manager: PodManager, rec: SandboxRecord) -> None:
    """Take apart an interrupted build that never reached the network (no CNI call)."""
    log.warning("taking apart a pod whose creation was interrupted", extra={"pod": rec.id})
    _release_unrecorded(rec)
    release_local(rec)
    manager.store.delete_row(rec.id)


def _adopt_unfinished(manager: PodManager, rec: SandboxRecord, mounts: dict[str, str]) -> None:
    """Show an interrupted build NOTREADY and queue its DEL and removal in the background.

    Only the in-memory snapshot says NOTREADY: the row stays "creating" until the
    pod is gone, so a restart before that takes it apart again.
    """
    log.warning("taking apart a pod whose creation was interrupted (CNI DEL in the "
                "background)", extra={"pod": rec.id})
    checked, _ = _check(replace(rec, state=NOTREADY), mounts)
    shown = replace(checked, ips=[], pending_network_teardown=True)
    manager.adopt(shown, pending=False)
    manager.lifecycle.pod_kept(shown)  # visible until taken apart: its removal is an event
    pod_id = rec.id
    manager.retry_in_background(pod_id, lambda: _take_apart(manager, pod_id))


def _take_apart(manager: PodManager, pod_id: str) -> bool:
    """One background attempt at removing an interrupted build; True once it is gone.

    DEL first (the network namespace stays pinned until it succeeds); a failed
    DEL is noted on the snapshot only and retried with backoff. Then what the
    build made before its record listed it, and RemovePodSandbox's own steps
    (which also free the name).
    """
    rec = manager.store.get(pod_id)
    if rec is None:
        return True
    try:
        with manager.lock(pod_id, CallContext.with_timeout(LOCK_POLL * 2)):
            rec = manager.store.get(pod_id)
            if rec is None:
                return True
            if rec.attachments:
                ctx = CallContext.with_timeout(manager.settings.teardown_timeout,
                                               f"CNI DEL of {pod_id}")
                try:
                    manager.network.detach_all(rec.attachments, ctx)
                except PeapodError as exc:
                    log.warning("CNI DEL of an interrupted pod failed; retrying",
                                extra={"pod": pod_id, "error": exc.message})
                    manager.store.publish(replace(rec, network_error=exc.message))
                    return False
                rec = replace(rec, attachments=[], ips=[], pending_network_teardown=False,
                              network_error="")
                manager.store.publish(rec)
            _release_unrecorded(rec)
            manager.remove(pod_id, CallContext.with_timeout(manager.settings.teardown_timeout,
                                                            f"removal of pod {pod_id}"))
    except DeadlineExceeded:
        return False  # the pod is busy (e.g. a caller's Stop or Remove); try again later
    except PeapodError as exc:
        log.error("cannot take apart an interrupted pod; retrying",
                  extra={"pod": pod_id, "error": exc.message})
        return False
    log.info("interrupted pod taken apart", extra={"pod": pod_id})
    return True


def _release_unrecorded(rec: SandboxRecord) -> None:
    """What a build made just before the daemon died, before the record listed it.

    The infra process is found by its output file (the pod's infra.log), the
    namespace and shm mounts by being under the pod directory.
    """
    if not rec.pod_dir:
        return
    pod_dir = Path(rec.pod_dir)
    if rec.infra is None and rec.pid_mode == POD:
        for pid in procs.with_output_to(pod_dir / INFRA_LOG):
            start = procs.start_time(pid)
            if start is not None:
                procs.kill_and_wait(pid, start, STOP_TIMEOUT)
    for mount_point in sorted(mounts_below(pod_dir), key=len, reverse=True):
        umount_all(Path(mount_point))
