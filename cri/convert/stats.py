"""Container and pod stats: CRI filters to the domain, domain figures to protobuf.

Every number goes into its ``UInt64Value`` wrapper only when known, so an unset field
tells the kubelet "not available" rather than 0; every message that is set carries
the (non-zero) time of the read it comes from.
"""

from __future__ import annotations

from api import api_pb2 as pb
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
    SwapUsage,
)
from oci.stats.network import InterfaceUsage
from oci.stats.service import StatsFilter


def container_stats_filter(f: pb.ContainerStatsFilter) -> StatsFilter:
    """ListContainerStats' filter: id (or unique prefix), pod id, labels, all ANDed."""
    return StatsFilter(id=f.id, pod_id=f.pod_sandbox_id, labels=dict(f.label_selector))


def pod_stats_filter(f: pb.PodSandboxStatsFilter) -> StatsFilter:
    """ListPodSandboxStats' filter: id (or unique prefix) and labels."""
    return StatsFilter(id=f.id, labels=dict(f.label_selector))


def _u64(value: int) -> pb.UInt64Value:
    return pb.UInt64Value(value=max(value, 0))


def _psi_data(d: PsiData) -> pb.PsiData:
    return pb.PsiData(Total=d.total_ns, Avg10=d.avg10, Avg60=d.avg60, Avg300=d.avg300)


def to_pb_psi(p: Pressure) -> pb.PsiStats:
    out = pb.PsiStats(Some=_psi_data(p.some))
    if p.full is not None:
        out.Full.CopyFrom(_psi_data(p.full))
    return out


def to_pb_cpu(c: CpuUsage) -> pb.CpuUsage:
    out = pb.CpuUsage(timestamp=c.timestamp, usage_core_nano_seconds=_u64(c.usage_core_ns))
    if c.usage_nano_cores is not None:
        out.usage_nano_cores.value = max(c.usage_nano_cores, 0)
    if c.psi is not None:
        out.psi.CopyFrom(to_pb_psi(c.psi))
    return out


def to_pb_memory(m: MemoryUsage) -> pb.MemoryUsage:
    out = pb.MemoryUsage(
        timestamp=m.timestamp,
        working_set_bytes=_u64(m.working_set_bytes),
        available_bytes=_u64(m.available_bytes),
        usage_bytes=_u64(m.usage_bytes),
        rss_bytes=_u64(m.rss_bytes),
        page_faults=_u64(m.page_faults),
        major_page_faults=_u64(m.major_page_faults),
    )
    if m.psi is not None:
        out.psi.CopyFrom(to_pb_psi(m.psi))
    return out


def to_pb_swap(s: SwapUsage) -> pb.SwapUsage:
    return pb.SwapUsage(
        timestamp=s.timestamp,
        swap_available_bytes=_u64(s.available_bytes),
        swap_usage_bytes=_u64(s.usage_bytes),
    )


def to_pb_io(i: IoUsage) -> pb.IoUsage:
    return pb.IoUsage(timestamp=i.timestamp, psi=to_pb_psi(i.psi))


def to_pb_layer(f: FilesystemUsage) -> pb.FilesystemUsage:
    return pb.FilesystemUsage(
        timestamp=f.timestamp,
        fs_id=pb.FilesystemIdentifier(mountpoint=f.mountpoint),
        used_bytes=_u64(f.used_bytes),
        inodes_used=_u64(f.inodes_used),
    )


def to_pb_container_stats(s: ContainerStats) -> pb.ContainerStats:
    rec = s.record
    out = pb.ContainerStats(
        attributes=pb.ContainerAttributes(
            id=rec.id,
            metadata=pb.ContainerMetadata(name=rec.metadata_name, attempt=rec.attempt),
            labels=rec.labels,
            annotations=rec.annotations,
        )
    )
    if s.cpu is not None:
        out.cpu.CopyFrom(to_pb_cpu(s.cpu))
    if s.memory is not None:
        out.memory.CopyFrom(to_pb_memory(s.memory))
    if s.writable_layer is not None:
        out.writable_layer.CopyFrom(to_pb_layer(s.writable_layer))
    if s.swap is not None:
        out.swap.CopyFrom(to_pb_swap(s.swap))
    if s.io is not None:
        out.io.CopyFrom(to_pb_io(s.io))
    return out


def _interface(i: InterfaceUsage) -> pb.NetworkInterfaceUsage:
    return pb.NetworkInterfaceUsage(
        name=i.name,
        rx_bytes=_u64(i.rx_bytes),
        rx_errors=_u64(i.rx_errors),
        tx_bytes=_u64(i.tx_bytes),
        tx_errors=_u64(i.tx_errors),
    )


def to_pb_network(n: NetworkUsage) -> pb.NetworkUsage:
    out = pb.NetworkUsage(timestamp=n.timestamp, interfaces=[_interface(i) for i in n.others])
    if n.default is not None:
        out.default_interface.CopyFrom(_interface(n.default))
    return out


def to_pb_process(p: ProcessUsage) -> pb.ProcessUsage:
    return pb.ProcessUsage(timestamp=p.timestamp, process_count=_u64(p.process_count))


def to_pb_pod_stats(s: PodStats) -> pb.PodSandboxStats:
    rec = s.record
    md = rec.metadata
    linux = pb.LinuxPodSandboxStats(containers=[to_pb_container_stats(c) for c in s.containers])
    if s.cpu is not None:
        linux.cpu.CopyFrom(to_pb_cpu(s.cpu))
    if s.memory is not None:
        linux.memory.CopyFrom(to_pb_memory(s.memory))
    if s.network is not None:
        linux.network.CopyFrom(to_pb_network(s.network))
    if s.process is not None:
        linux.process.CopyFrom(to_pb_process(s.process))
    if s.io is not None:
        linux.io.CopyFrom(to_pb_io(s.io))
    return pb.PodSandboxStats(
        attributes=pb.PodSandboxAttributes(
            id=rec.id,
            metadata=pb.PodSandboxMetadata(
                name=md.name, uid=md.uid, namespace=md.namespace, attempt=md.attempt
            ),
            labels=rec.labels,
            annotations=rec.annotations,
        ),
        linux=linux,
    )
