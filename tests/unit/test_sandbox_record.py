"""Unit tests for the sandbox record (JSON round trip, container facts) and pod config."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from base.errors import DataLoss, InvalidArgument
from cni.capabilities import PortMapping
from sandbox.pod_config import CONTAINER, NODE, POD, PodConfig, PodMetadata, parse_quantity
from sandbox.pod_files import DnsConfig
from sandbox.record import READY, SandboxRecord


def full_record() -> SandboxRecord:
    return SandboxRecord(
        id="0f" * 32,
        name="k8s_web_ns_uid_1",
        metadata=PodMetadata("web", "uid", "ns", 1),
        state=READY,
        created_at=1_700_000_000_000_000_000,
        runtime_handler="runc",
        labels={"app": "web"},
        annotations={"note": "x"},
        log_directory="/var/log/pods/ns_web_uid",
        hostname="web-0",
        dns=DnsConfig(servers=("10.0.0.10",), searches=("svc",), options=("ndots:5",)),
        port_mappings=[PortMapping(8080, 80, "tcp", "")],
        pid_mode=POD,
        sysctls={"net.ipv4.ip_forward": "1"},
        pod_dir="/run/peapod/pods/x",
        ns_paths={"net": "/run/peapod/pods/x/ns/net", "ipc": "/run/peapod/pods/x/ns/ipc",
                  "uts": "/run/peapod/pods/x/ns/uts"},
        shm_path="/run/peapod/pods/x/shm",
        cgroup_parent="/kubepods/podx",
        cgroup={"path": "/kubepods/podx", "version": "hybrid", "dirs": [], "created": []},
        infra={"pid": 4242, "start_time": 1, "parent_pid": 4241, "parent_start_time": 1},
        attachments=[{"format": "peapod.cni.attachment/v1", "network": {}, "runtime": {},
                      "result": None}],
        ips=["10.1.0.2"],
        security={"privileged": True},
        overhead={"cpu_shares": "2"},
        resources={},
        pending_network_teardown=True,
        network_error="bridge said no",
    )


def test_json_round_trip_is_exact() -> None:
    rec = full_record()
    again = SandboxRecord.from_json(rec.to_json())
    assert again == rec
    assert again.to_json() == rec.to_json()
    none_dns = SandboxRecord(id="a", name="n", metadata=PodMetadata("a", "b", "c"),
                             state=READY, created_at=1)
    assert SandboxRecord.from_json(none_dns.to_json()) == none_dns


@pytest.mark.parametrize(
    "text",
    ["not json", "[1]", '{"format": 99}', '{"format": 1, "id": "x"}',
     '{"format": 1, "id": "a", "name": "n", "metadata": {"name": "a"}, "state": "ready", '
     '"created_at": 1}'],
)
def test_unreadable_records_are_data_loss(text: str) -> None:
    with pytest.raises(DataLoss):
        SandboxRecord.from_json(text)


def test_facts_for_a_pod_with_its_own_namespaces_and_infra() -> None:
    facts = full_record().facts()
    assert facts.netns_path == "/run/peapod/pods/x/ns/net"
    assert facts.ipcns_path == "/run/peapod/pods/x/ns/ipc"
    assert facts.utsns_path == "/run/peapod/pods/x/ns/uts"
    assert facts.pidns_path == "/proc/4242/ns/pid"
    assert facts.resolv_conf_path == "/run/peapod/pods/x/resolv.conf"
    assert facts.hosts_path == "/run/peapod/pods/x/hosts"
    assert facts.hostname_path == "/run/peapod/pods/x/hostname"
    assert facts.shm_path == "/run/peapod/pods/x/shm"
    assert facts.cgroup_parent == "/kubepods/podx"
    assert facts.hostname == "web-0"
    assert dict(facts.sysctls) == {"net.ipv4.ip_forward": "1"}
    assert not (facts.host_network or facts.host_ipc or facts.host_pid)


def test_facts_for_host_namespaces_and_container_pid_mode() -> None:
    rec = replace(full_record(), ns_paths={}, host_network=True, host_ipc=True,
                  host_pid=True, pid_mode=NODE, shm_path="")
    facts = rec.facts()
    assert facts.host_network and facts.host_ipc and facts.host_pid
    assert facts.netns_path == facts.ipcns_path == facts.utsns_path == facts.pidns_path == ""
    assert replace(rec, pid_mode=CONTAINER, host_pid=False).facts().pidns_path == ""


@pytest.mark.parametrize(
    ("text", "value"),
    [("10", 10), ("10M", 10_000_000), ("1Mi", 2**20), ("1.5k", 1500), ("2G", 2 * 10**9),
     ("1e6", 10**6), ("500m", Decimal("0.5")), ("3Gi", 3 * 2**30)],
)
def test_quantities(text: str, value: object) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "M", "10Q", "1.2.3", "-5", "ten"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_bandwidth_annotations() -> None:
    meta = PodMetadata("a", "b", "c")
    pod = PodConfig(meta, annotations={"kubernetes.io/ingress-bandwidth": "1M",
                                       "kubernetes.io/egress-bandwidth": "2.5k"})
    assert pod.bandwidth() == (1_000_000, 2500)
    assert PodConfig(meta).bandwidth() == (None, None)
    with pytest.raises(InvalidArgument, match="outside 1k-1P bit/s"):
        PodConfig(meta, annotations={"kubernetes.io/ingress-bandwidth": "100m"}).bandwidth()
