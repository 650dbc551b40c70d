"""Loading the containers back after a daemon restart.

Containers and their conmon monitors outlive the daemon. At start-up what
ExecSyncs interrupted by the daemon's death left (conmon, the exec'd process,
scratch files) is killed and deleted. Then every record is read back: a
container the daemon died while creating is torn down (or, if that fails,
shown exited with CreateError so the kubelet removes it); a created or running
one is checked against its monitor and process by pid and start time, exits
written while the daemon was down are recorded, and a start the daemon died in
is settled by asking the runtime. Then exits are watched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from base.errors import PeapodError
from conmon import exec_scratch
from oci.container import runtime_cli
from oci.container.create import UNKNOWN_EXIT
from oci.container.exits import alive
from oci.container.manager import ContainerManager
from oci.container.record import CREATED, CREATING, EXITED, RUNNING, ContainerRecord

log = logging.getLogger("peapod.containers")


def recover_containers(mgr: ContainerManager) -> None:
    """Load the records, settle what changed while the daemon was down, watch exits."""
    mgr.make_dirs()
    exec_scratch.clean_leftovers(str(mgr.settings.exec_dir))  # no ExecSync is in flight yet
    for ctr_id, problem in mgr.store.load():
        log.error("dropping an unreadable container record", extra={"container": ctr_id,
                                                                   "error": problem})
        mgr.store.delete_row(ctr_id)
    for rec in mgr.store.all():
        try:
            if rec.state == CREATING:
                log.warning("removing a container left half-created", extra={"container":
                                                                             rec.id})
                _teardown_half_created(mgr, rec)
                mgr.store.delete(rec.id)
            elif rec.state in (CREATED, RUNNING):
                _reconcile(mgr, rec)
        except PeapodError as exc:
            log.error("recovering a container failed", extra={"container": rec.id,
                                                              "error": exc.message})
    mgr.watch_exits()
    log.info("containers recovered", extra={"count": len(mgr.store.all())})


def _teardown_half_created(mgr: ContainerManager, rec: ContainerRecord) -> None:
    """Tear down a "creating" record's leftovers; if that fails, make it removable.

    A "creating" record is invisible, so RemoveContainer could not reach it and
    it would hold the container's name; as an exited one the kubelet removes it.
    """
    try:
        mgr.teardown(rec)
    except PeapodError as exc:
        message = (f"creation was interrupted and cleanup is incomplete: {exc.message}; "
                   "remove the container to retry")  # fmt: skip
        finished = time.time_ns()

        def failed(cur: ContainerRecord) -> ContainerRecord | None:
            if cur.state != CREATING:
                return None
            return replace(cur, state=EXITED, exit_code=UNKNOWN_EXIT, finished_at=finished,
                           reason="CreateError", message=message)  # fmt: skip

        mgr.store.update(rec.id, failed)
        raise


def _reconcile(mgr: ContainerManager, rec: ContainerRecord) -> None:
    """Bring a created/running record in line with its monitor and process."""
    if mgr.read_exit(rec) is not None:
        mgr.record_exit(rec.id)
        return
    if rec.state == CREATED and rec.started_at and alive(rec.pid, rec.pid_start):
        _settle_start(mgr, rec)
    if alive(rec.monitor_pid, rec.monitor_start):
        return
    if alive(rec.pid, rec.pid_start):
        log.warning(
            "container runs without its monitor; its exit will not be noticed",
            extra={"container": rec.id, "monitor_pid": rec.monitor_pid},
        )
    else:
        mgr.mark_lost(rec.id, "the container and its monitor are gone; exit status unknown")


def _settle_start(mgr: ContainerManager, rec: ContainerRecord) -> None:
    """The daemon died during a start (started_at is stored first): ask the runtime."""
    try:
        found = runtime_cli.state(mgr.runtime_for(rec), rec.id)
    except PeapodError as exc:
        log.warning("cannot tell whether an interrupted start ran",
                    extra={"container": rec.id, "error": exc.message})
        return
    status = (found or {}).get("status")
    if status in ("running", "paused"):
        log.info("an interrupted start did run the container", extra={"container": rec.id})
        mgr.store.update(
            rec.id, lambda cur: replace(cur, state=RUNNING) if cur.state == CREATED else None
        )
    elif status == "created":
        mgr.store.update(
            rec.id, lambda cur: replace(cur, started_at=0) if cur.state == CREATED else None
        )
