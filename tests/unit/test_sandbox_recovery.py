"""Unit tests for the CNI attachment plan and for restart recovery (with a fake network)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from base.cancel import CallContext
from base.db import Database
from base.errors import Unavailable
from cni import CNIClient, PortMapping, loopback_network, parse_network
from sandbox.build import PodSettings
from sandbox.manager import PodManager
from sandbox.network import PodNetwork, delete_target, pending_entry, pod_ips
from sandbox.pod_config import PodMetadata
from sandbox.record import CREATING, NOTREADY, READY, SandboxRecord
from sandbox.recover import recover_pods
from sandbox.store import SandboxStore

NETWORK = parse_network({
    "cniVersion": "1.0.0", "name": "unit",
    "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}}],
})
META = PodMetadata("web", "uid-1", "ns")


def test_plan_attaches_the_network_alone_with_capability_args() -> None:
    net = PodNetwork(CNIClient([]), "/nonexistent")
    plans = net.plan(NETWORK, "ab" * 32, "/run/x/ns/net", META,
                     [PortMapping(8080, 80, "tcp"), PortMapping(0, 81, "udp")],
                     (1_000_000, None))
    [(main_net, main)] = plans  # no loopback plugin: lo is up when the namespace is made
    assert main_net is NETWORK and main.ifname == "eth0"
    assert main.capability_args == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        "bandwidth": {"ingressRate": 1_000_000, "ingressBurst": 2**31 - 1},
    }
    assert ("K8S_POD_NAME", "web") in main.args and ("K8S_POD_UID", "uid-1") in main.args
    assert main.container_id == "ab" * 32


RESULT = {"cniVersion": "1.0.0",
          "interfaces": [{"name": "eth0", "sandbox": "/run/x/ns/net"}],
          "ips": [{"interface": 0, "address": "10.9.0.7/24"},
                  {"interface": 0, "address": "fd00::7/64"}]}


def attached() -> list[dict[str, Any]]:
    """An older record's attachments: the built-in loopback network, then the network."""
    net = PodNetwork(CNIClient([]), "/nonexistent")
    [(mn, mr)] = net.plan(NETWORK, "cd" * 32, "/run/x/ns/net", META)
    loop = pending_entry(loopback_network(), replace(mr, ifname="lo", capability_args={}))
    loop["result"] = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": "x"}],
                      "ips": [{"interface": 0, "address": "127.0.0.1/8"}]}
    main = pending_entry(mn, mr)
    main["result"] = RESULT
    return [loop, main]


def test_recorded_attachments_give_ips_and_delete_targets() -> None:
    entries = attached()
    assert pod_ips(entries) == ["10.9.0.7", "fd00::7"]  # loopback left out
    pending = {**entries[1], "result": None}
    assert pod_ips([pending]) == []
    network, runtime, result = delete_target(pending)  # type: ignore[misc]
    assert network.name == "unit" and runtime.ifname == "eth0" and result is None
    assert delete_target(entries[1]).pod_ips() == ["10.9.0.7", "fd00::7"]  # type: ignore[union-attr]


class FakeNetwork:
    """Records DELs; fails them while ``fail`` is set, hangs while ``hang`` is clear."""

    def __init__(self) -> None:
        self.deleted: list[list[str]] = []
        self.fail = False
        self.called = threading.Event()
        self.hang = threading.Event()
        self.hang.set()

    def detach_all(self, entries: list[Mapping[str, Any]], ctx: CallContext) -> None:
        self.called.set()
        self.hang.wait(30)
        if self.fail:
            raise Unavailable("CNI plugin 'bridge' DEL failed: try again later")
        self.deleted.append([e["runtime"]["ifname"] for e in entries])

    def ready(self) -> tuple[bool, str, str]:
        return True, "", ""


class Told:
    """A PodLifecycleObserver that notes its calls: (what, pod id, pod state)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def pod_started(self, rec: SandboxRecord) -> None:
        self.calls.append(("started", rec.id, rec.state))

    def pod_stopped(self, rec: SandboxRecord) -> None:
        self.calls.append(("stopped", rec.id, rec.state))

    def pod_kept(self, rec: SandboxRecord) -> None:
        self.calls.append(("kept", rec.id, rec.state))

    def pod_removed(self, rec: SandboxRecord) -> None:
        self.calls.append(("removed", rec.id, rec.state))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[PodManager, FakeNetwork, SandboxStore]]:
    db = Database(tmp_path / "state.db")
    store = SandboxStore(db)
    fake = FakeNetwork()
    manager = PodManager(PodSettings(pods_dir=tmp_path / "pods"), store, fake)  # type: ignore[arg-type]
    yield manager, fake, store
    manager.close()
    db.close()


def rec(pod_id: str, state: str, tmp: Path, **kw: Any) -> SandboxRecord:
    return SandboxRecord(id=pod_id, name=f"k8s_{pod_id}_ns_u_0", metadata=META, state=state,
                         created_at=1, pod_dir=str(tmp / "pods" / pod_id), **kw)


def test_recovery_takes_apart_unfinished_pods_and_marks_lost_ones(
    setup: tuple[PodManager, FakeNetwork, SandboxStore], tmp_path: Path
) -> None:
    manager, fake, store = setup
    (tmp_path / "pods" / "half").mkdir(parents=True)
    store.save(rec("half", CREATING, tmp_path, attachments=attached()))
    store.save(rec("lost", READY, tmp_path, attachments=attached(), ips=["10.9.0.7"],
                   ns_paths={"net": str(tmp_path / "pods/lost/ns/net")}))
    store.save(rec("noinfra", READY, tmp_path,
                   infra={"pid": 2**22 + 7, "start_time": 1, "parent_pid": 2**22 + 6,
                          "parent_start_time": 1}))
    store.save(rec("stopped", NOTREADY, tmp_path))
    recover_pods(manager)
    # The interrupted build: DEL of both attachments (newest first) in the background,
    # then files and row gone.
    assert _wait(lambda: store.get("half") is None)
    assert ["lo", "eth0"] in fake.deleted
    assert not (tmp_path / "pods" / "half").exists()
    assert _wait(lambda: [r[0] for r in store._db.query(
        "SELECT id FROM sandboxes ORDER BY id")] == ["lost", "noinfra", "stopped"])
    assert manager._names.reserved("k8s_half_ns_u_0") is None
    # Namespaces gone: NOTREADY, and its DEL runs in the background at once.
    lost = store.get("lost")
    assert lost is not None and lost.state == NOTREADY
    assert _wait(lambda: len(fake.deleted) == 2)
    assert _wait(lambda: not store.get("lost").pending_network_teardown)  # type: ignore[union-attr]
    assert store.get("lost").attachments == [] and store.get("lost").ips == []  # type: ignore[union-attr]
    # Infra process no longer running: NOTREADY without an infra record.
    noinfra = store.get("noinfra")
    assert noinfra is not None and noinfra.state == NOTREADY and noinfra.infra is None
    assert store.get("stopped").state == NOTREADY  # type: ignore[union-attr]
    # Names are reserved again.
    assert manager._names.reserved("k8s_lost_ns_u_0") == "lost"


def test_recovery_keeps_an_unfinished_pod_whose_del_fails(
    setup: tuple[PodManager, FakeNetwork, SandboxStore], tmp_path: Path
) -> None:
    manager, fake, store = setup
    told = manager.lifecycle = Told()
    fake.fail = True
    store.save(rec("half", CREATING, tmp_path, attachments=attached()))
    (tmp_path / "pods" / "half").mkdir(parents=True)
    recover_pods(manager)
    kept = store.get("half")
    assert kept is not None and kept.state == NOTREADY and kept.pending_network_teardown
    assert told.calls == [("kept", "half", NOTREADY)]  # the kubelet's events: created, stopped
    assert _wait(lambda: "try again later" in store.get("half").network_error)  # type: ignore[union-attr]
    # The row stays "creating" meanwhile, so a restart takes the pod apart again.
    assert store._db.query("SELECT state FROM sandboxes")[0][0] == CREATING
    fake.fail = False
    assert _wait(lambda: store.get("half") is None)
    assert store._db.query("SELECT id FROM sandboxes") == []
    assert not (tmp_path / "pods" / "half").exists()
    assert [c[0] for c in told.calls] == ["kept", "removed"]


def test_recovery_never_waits_for_a_hung_del(
    setup: tuple[PodManager, FakeNetwork, SandboxStore], tmp_path: Path
) -> None:
    manager, fake, store = setup
    fake.hang.clear()
    (tmp_path / "pods" / "half").mkdir(parents=True)
    store.save(rec("half", CREATING, tmp_path, attachments=attached()))
    store.save(rec("stuck", NOTREADY, tmp_path, attachments=attached(),
                   pending_network_teardown=True))
    started = time.monotonic()
    recover_pods(manager)
    assert time.monotonic() - started < 1.0
    assert fake.called.wait(5)  # a DEL is under way, hanging
    half = store.get("half")
    assert half is not None and half.state == NOTREADY and half.pending_network_teardown
    assert [r.id for r in manager.list()] == ["half", "stuck"]
    assert manager._names.reserved("k8s_half_ns_u_0") == "half"
    fake.hang.set()
    assert _wait(lambda: store.get("half") is None)
    assert _wait(lambda: not store.get("stuck").pending_network_teardown)  # type: ignore[union-attr]
    assert manager._names.reserved("k8s_half_ns_u_0") is None
    assert manager._names.reserved("k8s_stuck_ns_u_0") == "stuck"
    assert not (tmp_path / "pods" / "half").exists()
    assert [r[0] for r in store._db.query("SELECT id FROM sandboxes")] == ["stuck"]


def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    from sandbox.procs import wait_until

    return wait_until(predicate, timeout, interval=0.01)


def test_waiting_for_a_network_fails_with_a_clear_precondition(tmp_path: Path) -> None:
    from base.errors import FailedPrecondition

    (tmp_path / "10-other.conflist").write_text(
        '{"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "fake-plugin"}]}')
    plugins = tmp_path / "bin"
    plugins.mkdir()
    (plugins / "fake-plugin").write_text("#!/bin/sh\nexit 0\n")
    (plugins / "fake-plugin").chmod(0o755)
    net = PodNetwork(CNIClient([str(plugins)]), str(tmp_path), default_network="wanted",
                     wait_for_config=0.3)
    with pytest.raises(FailedPrecondition,
                       match=r"not ready after waiting 0.3s: network 'wanted' not found"):
        net.wait_ready(CallContext.with_timeout(5))
    assert net.ready()[0] is False
    net.default_network = ""
    assert net.wait_ready(CallContext.with_timeout(5)).name == "other"
