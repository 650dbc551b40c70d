"""Background CNI DEL retries: a hung plugin delays only its own pod."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from base.cancel import CallContext
from base.db import Database
from cni import CNIClient, parse_network
from sandbox.build import PodSettings
from sandbox.manager import PodManager
from sandbox.network import PodNetwork, pending_entry
from sandbox.pod_config import PodMetadata
from sandbox.procs import wait_until
from sandbox.record import NOTREADY, SandboxRecord
from sandbox.retry import BackgroundRetrier
from sandbox.store import SandboxStore

NETWORK = parse_network({"cniVersion": "1.0.0", "name": "unit",
                         "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}]})
HUNG = "a" * 64
OTHER = "b" * 64


class HangingNetwork:
    """DEL hangs for pod HUNG until ``release`` is set; other pods' DELs succeed at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.hung_called = threading.Event()
        self.deleted: list[str] = []

    def detach_all(self, entries: list[Mapping[str, Any]], ctx: CallContext) -> None:
        pods = {e["runtime"]["containerID"] for e in entries}
        if HUNG in pods:
            self.hung_called.set()
            self.release.wait(30)
        self.deleted += sorted(pods)

    def ready(self) -> tuple[bool, str, str]:
        return True, "", ""


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[PodManager, HangingNetwork, SandboxStore]]:
    db = Database(tmp_path / "state.db")
    store = SandboxStore(db)
    fake = HangingNetwork()
    mgr = PodManager(PodSettings(pods_dir=tmp_path / "pods"), store, fake)  # type: ignore[arg-type]
    try:
        yield mgr, fake, store
    finally:
        fake.release.set()
        mgr.close()
        db.close()


def pending_pod(pod_id: str, tmp: Path) -> SandboxRecord:
    net = PodNetwork(CNIClient([]), "/nonexistent")
    plans = net.plan(NETWORK, pod_id, f"/run/x/{pod_id}/ns/net", PodMetadata(pod_id[:4], "u", "n"))
    return SandboxRecord(
        id=pod_id, name=f"k8s_{pod_id[:4]}", metadata=PodMetadata(pod_id[:4], "u", "n"),
        state=NOTREADY, created_at=1, pod_dir=str(tmp / "pods" / pod_id),
        attachments=[pending_entry(n, r) for n, r in plans], pending_network_teardown=True,
    )


def test_a_hung_del_does_not_delay_another_pods_retry(
    manager: tuple[PodManager, HangingNetwork, SandboxStore], tmp_path: Path
) -> None:
    mgr, fake, store = manager
    for pod_id in (HUNG, OTHER):
        rec = pending_pod(pod_id, tmp_path)
        store.put(rec)
        mgr.adopt(rec, pending=False)
    mgr.adopt(store.get(HUNG), pending=True)  # type: ignore[arg-type]
    assert fake.hung_called.wait(5)
    mgr.adopt(store.get(OTHER), pending=True)  # type: ignore[arg-type]
    assert wait_until(lambda: not store.get(OTHER).pending_network_teardown,  # type: ignore[union-attr]
                      2.0, interval=0.01)
    assert fake.deleted == [OTHER]
    assert store.get(HUNG).pending_network_teardown  # type: ignore[union-attr]
    fake.release.set()
    assert wait_until(lambda: not store.get(HUNG).pending_network_teardown,  # type: ignore[union-attr]
                      5.0, interval=0.01)
    assert sorted(fake.deleted) == [HUNG, OTHER]


def test_retries_run_in_parallel_up_to_the_cap_and_never_twice_per_key() -> None:
    release = threading.Event()
    lock = threading.Lock()
    running: list[str] = []
    peak: list[int] = [0]
    per_key_overlap: list[str] = []
    calls: dict[str, int] = {}

    def attempt(key: str) -> bool:
        with lock:
            if key in running:
                per_key_overlap.append(key)
            running.append(key)
            peak[0] = max(peak[0], len(running))
            calls[key] = calls.get(key, 0) + 1
        try:
            release.wait(5)
            return True
        finally:
            with lock:
                running.remove(key)

    retrier = BackgroundRetrier(attempt, base=0.01, max_workers=2)
    try:
        for key in "abc":
            retrier.schedule(key, delay=0)
        assert wait_until(lambda: len(running) == 2, 2.0, interval=0.005)
        time.sleep(0.2)
        assert len(running) == 2 and peak[0] == 2  # the third waits for a free worker
        retrier.schedule("a", delay=0)  # already running: not started a second time
        time.sleep(0.1)
        assert per_key_overlap == []
        assert sorted(retrier.pending()) == ["a", "b", "c"]
        release.set()
        assert wait_until(lambda: retrier.pending() == [], 5.0, interval=0.005)
        assert per_key_overlap == [] and peak[0] == 2
        assert set(calls) == {"a", "b", "c"}
    finally:
        release.set()
        retrier.close()
