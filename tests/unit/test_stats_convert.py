"""cri.convert.stats: wrappers set only for known figures, PSI names, pod attributes."""

from __future__ import annotations

from api import api_pb2 as pb
from cri.convert.stats import (
    container_stats_filter,
    pod_stats_filter,
    to_pb_container_stats,
    to_pb_pod_stats,
)
from oci.container.record import RUNNING, ContainerRecord
from oci.stats.cgroups import Pressure, PsiData
from oci.stats.model import (
    ContainerStats,
    CpuUsage,
    FilesystemUsage,
    IoUsage,
    MemoryUsage,
    NetworkUsage,
    PodStats,
    ProcessUsage,
)
from oci.stats.network import InterfaceUsage
from sandbox.pod_config import PodMetadata
from sandbox.record import READY, SandboxRecord

T = 1_700_000_000_000_000_000
PSI = Pressure(PsiData(5000, 1.5, 0.5, 0.25), None)


def record() -> ContainerRecord:
    return ContainerRecord(
        id="c" * 64, sandbox_id="p" * 64, name="k8s_x", metadata_name="x", attempt=2,
        state=RUNNING, created_at=T, runtime_handler="", image="busybox", image_id="sha256:1",
        image_ref="sha256:1", bundle="/b", storage_dir="/s", log_path="",
        labels={"a": "b"}, annotations={"n": "v"},
    )  # fmt: skip


def test_unknown_figures_stay_unset() -> None:
    out = to_pb_container_stats(ContainerStats(record()))
    assert out.attributes.id == "c" * 64 and out.attributes.metadata.attempt == 2
    assert dict(out.attributes.labels) == {"a": "b"}
    assert dict(out.attributes.annotations) == {"n": "v"}
    for part in ("cpu", "memory", "writable_layer", "swap", "io"):
        assert not out.HasField(part)  # type: ignore[arg-type]


def test_figures_and_psi() -> None:
    stats = ContainerStats(
        record(),
        cpu=CpuUsage(T, 10, None, PSI),
        memory=MemoryUsage(T, 1, 0, 3, 4, 5, 0),
        io=IoUsage(T, PSI),
        writable_layer=FilesystemUsage(T, "/var/lib/peapod/containers", 4096, 3),
    )
    out = to_pb_container_stats(stats)
    assert out.cpu.timestamp == T and out.cpu.usage_core_nano_seconds.value == 10
    assert not out.cpu.HasField("usage_nano_cores")  # a first sample: no rate yet
    assert out.cpu.psi.Some.Total == 5000 and out.cpu.psi.Some.Avg10 == 1.5
    assert not out.cpu.psi.HasField("Full")
    assert out.memory.HasField("available_bytes") and out.memory.available_bytes.value == 0
    assert out.memory.HasField("major_page_faults") and not out.memory.HasField("psi")
    assert out.io.psi.Some.Avg300 == 0.25
    assert out.writable_layer.fs_id.mountpoint == "/var/lib/peapod/containers"
    assert (out.writable_layer.used_bytes.value, out.writable_layer.inodes_used.value) == (4096, 3)


def test_pod_stats() -> None:
    pod = SandboxRecord(id="p" * 64, name="n", metadata=PodMetadata("web", "uid1", "ns", 1),
                        state=READY, created_at=T, labels={"app": "web"})  # fmt: skip
    eth0 = InterfaceUsage("eth0", 1, 2, 3, 4, 5, 6, 7, 8)
    net1 = InterfaceUsage("net1", 10, 0, 0, 0, 20, 0, 0, 0)
    out = to_pb_pod_stats(PodStats(
        pod, network=NetworkUsage(T, eth0, [net1]), process=ProcessUsage(T, 7),
        containers=[ContainerStats(record())],
    ))  # fmt: skip
    md = out.attributes.metadata
    assert (md.name, md.uid, md.namespace, md.attempt) == ("web", "uid1", "ns", 1)
    net = out.linux.network
    assert net.default_interface.name == "eth0" and net.default_interface.rx_errors.value == 3
    assert net.default_interface.tx_bytes.value == 5 and net.default_interface.tx_errors.value == 7
    assert [i.name for i in net.interfaces] == ["net1"]
    assert out.linux.process.process_count.value == 7
    assert not out.linux.HasField("cpu") and len(out.linux.containers) == 1
    assert not out.HasField("windows")


def test_filters() -> None:
    f = container_stats_filter(pb.ContainerStatsFilter(id="ab", pod_sandbox_id="cd",
                                                       label_selector={"k": "v"}))  # fmt: skip
    assert (f.id, f.pod_id, f.labels) == ("ab", "cd", {"k": "v"})
    p = pod_stats_filter(pb.PodSandboxStatsFilter(id="ef", label_selector={"x": "y"}))
    assert (p.id, p.pod_id, p.labels) == ("ef", "", {"x": "y"})
