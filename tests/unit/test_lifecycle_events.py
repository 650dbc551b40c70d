"""Lifecycle events from container store changes and pod observer calls."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from api import api_pb2 as pb
from base.db import Database
from base.event_bus import EventBus
from cri.convert.events import to_pb_event
from oci.container.events import (
    CONTAINER_CREATED,
    CONTAINER_DELETED,
    CONTAINER_STARTED,
    CONTAINER_STOPPED,
    LifecycleEvent,
    LifecyclePublisher,
    container_kinds,
)
from oci.container.record import CREATED, CREATING, EXITED, RUNNING, ContainerRecord
from oci.container.store import ContainerStore
from sandbox.pod_config import PodMetadata
from sandbox.record import NOTREADY, READY, SandboxRecord

POD = "f" * 64


def ctr(ctr_id: str, state: str = CREATING, **kw: object) -> ContainerRecord:
    return ContainerRecord(
        id=ctr_id, sandbox_id=POD, name=f"n{ctr_id}", metadata_name="c", attempt=0,
        state=state, created_at=1, runtime_handler="runc", image="busybox",
        image_id="sha256:1", image_ref="sha256:1", bundle=f"/run/{ctr_id}",
        storage_dir=f"/var/{ctr_id}", log_path="/l", **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def pod(state: str = READY) -> SandboxRecord:
    return SandboxRecord(id=POD, name="k8s_pod", metadata=PodMetadata("p", "uid1", "ns"),
                         state=state, created_at=1)  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "kinds"),
    [
        (None, ctr("a"), ()),  # a half-built container is nobody's business yet
        (ctr("a"), ctr("a", CREATED), (CONTAINER_CREATED,)),
        (ctr("a", CREATED), ctr("a", CREATED, started_at=5), ()),
        (ctr("a", CREATED), ctr("a", RUNNING), (CONTAINER_STARTED,)),
        (ctr("a", RUNNING), ctr("a", EXITED), (CONTAINER_STOPPED,)),
        (ctr("a", RUNNING), ctr("a", RUNNING, resources={"cpu_shares": 2}), ()),
        # killed before it ever started
        (ctr("a", CREATED), ctr("a", EXITED), (CONTAINER_STOPPED,)),
        # its exit was recorded before the start marked it running
        (ctr("a", CREATED, started_at=5), ctr("a", EXITED, started_at=5),
         (CONTAINER_STARTED, CONTAINER_STOPPED)),
        (ctr("a", CREATED, started_at=5), ctr("a", EXITED, started_at=5, reason="StartError"),
         (CONTAINER_STOPPED,)),
        # a failed creation whose cleanup failed is kept, exited, for the kubelet to remove
        (ctr("a", CREATING), ctr("a", EXITED, reason="CreateError"),
         (CONTAINER_CREATED, CONTAINER_STOPPED)),
        (ctr("a", EXITED), None, (CONTAINER_DELETED,)),
        (ctr("a", CREATING), None, ()),  # a rolled-back creation
    ],
)
def test_which_changes_are_events(
    old: ContainerRecord | None, new: ContainerRecord | None, kinds: tuple[str, ...]
) -> None:
    assert container_kinds(old, new) == kinds


class Clock:
    def __init__(self) -> None:
        self.now = 1000

    def __call__(self) -> int:
        return self.now  # a clock that stands still (or one read twice in a nanosecond)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ContainerStore, EventBus[LifecycleEvent], LifecyclePublisher,
                                   dict[str, SandboxRecord]]:  # fmt: skip
    db = Database(tmp_path / "state.db")
    with db.transaction() as tx:
        tx.execute("INSERT INTO sandboxes (id, name, state, created_at, record) "
                   "VALUES (?, ?, ?, ?, ?)", (POD, "k8s_pod", "ready", 1, "{}"))  # fmt: skip
    store = ContainerStore(db)
    bus: EventBus[LifecycleEvent] = EventBus()
    bus.serving(retain=0)
    pods = {POD: pod()}
    publisher = LifecyclePublisher(bus, pods.get, store, clock=Clock())
    store.on_change = publisher.container_changed
    return store, bus, publisher, pods


def test_a_whole_lifecycle_in_order_with_snapshots_and_increasing_times(setup: tuple) -> None:
    store, bus, publisher, pods = setup
    sub = bus.subscribe(100)
    publisher.pod_started(pods[POD])
    store.insert(ctr("a"))
    store.update("a", lambda c: replace(c, state=CREATED))
    store.update("a", lambda c: replace(c, state=RUNNING))
    store.update("a", lambda c: replace(c, state=EXITED, exit_code=3))
    store.delete("a")
    pods[POD] = pod(NOTREADY)
    publisher.pod_stopped(pods[POD])
    publisher.pod_removed(pods.pop(POD))
    events = []
    while (ev := sub.next(timeout=0)) is not None:
        events.append(ev)
    assert [(e.container_id, e.kind) for e in events] == [
        (POD, CONTAINER_CREATED), (POD, CONTAINER_STARTED),
        ("a", CONTAINER_CREATED), ("a", CONTAINER_STARTED), ("a", CONTAINER_STOPPED),
        ("a", CONTAINER_DELETED), (POD, CONTAINER_STOPPED), (POD, CONTAINER_DELETED),
    ]  # fmt: skip
    stamps = [e.created_at for e in events]
    assert stamps == sorted(set(stamps))  # strictly increasing though the clock stood still
    assert [tuple(c.state for c in e.containers) for e in events[2:6]] == [
        (CREATED,), (RUNNING,), (EXITED,), ()]
    assert events[0].containers == () and events[-2].pod.state == NOTREADY

    reply = to_pb_event(events[4])
    assert reply.container_event_type == pb.CONTAINER_STOPPED_EVENT
    assert reply.pod_sandbox_status.metadata.uid == "uid1"
    assert reply.pod_sandbox_status.state == pb.SANDBOX_READY
    assert [(s.id, s.state, s.exit_code) for s in reply.containers_statuses] == [
        ("a", pb.CONTAINER_EXITED, 3)]


def test_a_failing_publisher_never_fails_the_change(setup: tuple) -> None:
    store, _bus, _publisher, _pods = setup

    def broken(old: object, new: object) -> None:
        raise RuntimeError("boom")

    store.on_change = broken
    store.insert(ctr("b"))
    assert store.update("b", lambda c: replace(c, state=CREATED)).state == CREATED  # type: ignore[union-attr]


def test_no_event_for_a_container_whose_pod_is_unknown(setup: tuple) -> None:
    store, bus, _publisher, pods = setup
    sub = bus.subscribe(10)
    pods.clear()
    store.insert(ctr("c"))
    store.update("c", lambda c: replace(c, state=CREATED))
    assert sub.next(timeout=0) is None


def events_of(sub: object) -> list[tuple[str, str]]:
    out = []
    while (ev := sub.next(timeout=0)) is not None:  # type: ignore[attr-defined]
        out.append((ev.container_id, ev.kind))
    return out


def test_a_container_kept_after_a_failed_create_is_created_then_stopped(setup: tuple) -> None:
    """Its DELETED (RemoveContainer) then follows a CREATED, as for any container."""
    store, bus, _publisher, _pods = setup
    sub = bus.subscribe(10)
    store.insert(ctr("k"))
    store.update("k", lambda c: replace(c, state=EXITED, reason="CreateError"))
    store.delete("k")
    assert events_of(sub) == [("k", CONTAINER_CREATED), ("k", CONTAINER_STOPPED),
                              ("k", CONTAINER_DELETED)]  # fmt: skip


def test_a_pod_kept_notready_after_a_failed_build_is_created_then_stopped(setup: tuple) -> None:
    """The kubelet sees the kept pod (NOTREADY) before its DELETED, never STARTED."""
    _store, bus, publisher, pods = setup
    sub = bus.subscribe(10)
    pods[POD] = pod(NOTREADY)
    publisher.pod_kept(pods[POD])
    publisher.pod_removed(pods.pop(POD))
    assert events_of(sub) == [(POD, CONTAINER_CREATED), (POD, CONTAINER_STOPPED),
                              (POD, CONTAINER_DELETED)]  # fmt: skip
