"""The daemon's liveness probe: its thread, the pod infra check and the monitor metric."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import metric_value

from base.db import Database
from cri.liveness import INTERVAL_ENV, PROBE_INTERVAL, LivenessProbe, probe_interval
from cri.metrics import ContainerMetrics, Metrics
from sandbox import procs
from sandbox.build import PodSettings
from sandbox.manager import PodManager
from sandbox.pod_config import PodMetadata
from sandbox.record import NOTREADY, READY, SandboxRecord
from sandbox.store import SandboxStore

POD = "a" * 64


class _Network:
    def ready(self) -> tuple[bool, str, str]:
        return True, "", ""


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[tuple[PodManager, SandboxStore, Database]]:
    db = Database(tmp_path / "state.db")
    store = SandboxStore(db)
    manager = PodManager(PodSettings(pods_dir=tmp_path / "pods"), store, _Network())  # type: ignore[arg-type]
    yield manager, store, db
    manager.close()
    db.close()


@pytest.fixture
def infra() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def _pod(child: subprocess.Popen[bytes]) -> SandboxRecord:
    start = None
    while start is None:
        start = procs.start_time(child.pid)
    infra = {"pid": child.pid, "start_time": start, "parent_pid": child.pid,
             "parent_start_time": start}  # fmt: skip
    return SandboxRecord(id=POD, name="k8s_p_ns_u_0", metadata=PodMetadata("p", "u", "ns"),
                         state=READY, created_at=1, infra=infra)  # fmt: skip


def test_a_pod_whose_infra_died_becomes_notready(
    pods: tuple[PodManager, SandboxStore, Database], infra: subprocess.Popen[bytes]
) -> None:
    manager, store, _db = pods
    store.put(_pod(infra))
    manager.probe_infras()
    assert store.get(POD).state == READY  # type: ignore[union-attr]
    infra.kill()
    infra.wait()
    manager.probe_infras()
    assert store.get(POD).state == NOTREADY  # type: ignore[union-attr]
    assert [r.state for r in store.load_all()[0]] == [NOTREADY]  # persisted
    assert not manager.probe_infra(POD)  # reported once


def test_the_infra_probe_does_not_wait_for_a_busy_pod(
    pods: tuple[PodManager, SandboxStore, Database], infra: subprocess.Popen[bytes]
) -> None:
    manager, store, _db = pods
    store.put(_pod(infra))
    infra.kill()
    infra.wait()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with manager.lock(POD):
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(5)
        began = time.monotonic()
        assert not manager.probe_infra(POD)
        assert time.monotonic() - began < 2
        assert store.get(POD).state == READY  # type: ignore[union-attr]
    finally:
        release.set()
        holder.join()
    assert manager.probe_infra(POD)


def test_the_probe_thread_runs_every_check_until_closed() -> None:
    calls: list[str] = []
    ran = threading.Event()

    def failing() -> None:
        calls.append("failing")
        raise RuntimeError("boom")

    def counting() -> None:
        calls.append("counting")
        if calls.count("counting") >= 3:
            ran.set()

    probe = LivenessProbe([failing, counting], interval=0.01)
    probe.start()
    try:
        assert ran.wait(5)  # a failing check does not stop the others or the thread
    finally:
        probe.close()
    count = len(calls)
    time.sleep(0.05)
    assert len(calls) == count


def test_probe_interval_default_and_test_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert probe_interval() == PROBE_INTERVAL == 10.0
    monkeypatch.setenv(INTERVAL_ENV, "0.25")
    assert probe_interval() == 0.25
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    assert probe_interval() == PROBE_INTERVAL


def test_monitor_lost_counts_in_the_stopped_monitor_metric() -> None:
    from prometheus_client import generate_latest

    metrics = Metrics()
    ContainerMetrics(metrics).monitor_lost()
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "peapod_containers_stopped_monitor_total") == 1.0
