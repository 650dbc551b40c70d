"""What a stats call answers, for one container or one pod: plain values, units in names.

Timestamps are unix nanoseconds of the read they come from. A part that could not be
read (a cgroup gone, a controller the host lacks) is None rather than zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from oci.container.record import ContainerRecord
from oci.stats.cgroups import Pressure
from oci.stats.layers import LayerUsage
from oci.stats.network import InterfaceUsage
from sandbox.record import SandboxRecord


@dataclass(frozen=True)
class CpuUsage:
    """Cumulative CPU time (ns, all cores) and cores in use (ns per s; None on the first
    sample), with PSI where the cgroup2 tree gives it."""

    timestamp: int
    usage_core_ns: int
    usage_nano_cores: int | None
    psi: Pressure | None = None


@dataclass(frozen=True)
class MemoryUsage:
    """Bytes: working set (usage less inactive file pages), available (limit less
    working set; 0 when unlimited), usage, RSS (anonymous); page fault counts."""

    timestamp: int
    working_set_bytes: int
    available_bytes: int
    usage_bytes: int
    rss_bytes: int
    page_faults: int
    major_page_faults: int
    psi: Pressure | None = None


@dataclass(frozen=True)
class SwapUsage:
    """Swap used by the cgroup alone and what its allowance leaves (0 when unlimited)."""

    timestamp: int
    available_bytes: int
    usage_bytes: int


@dataclass(frozen=True)
class IoUsage:
    """I/O pressure (the only I/O figure the CRI has)."""

    timestamp: int
    psi: Pressure


@dataclass(frozen=True)
class FilesystemUsage:
    """A writable layer's use, and a directory on the filesystem holding it."""

    timestamp: int
    mountpoint: str
    used_bytes: int
    inodes_used: int


@dataclass(frozen=True)
class ContainerStats:
    """One container's figures; ``record`` gives its id, metadata, labels, annotations."""

    record: ContainerRecord
    cpu: CpuUsage | None = None
    memory: MemoryUsage | None = None
    swap: SwapUsage | None = None
    io: IoUsage | None = None
    writable_layer: FilesystemUsage | None = None

    @property
    def id(self) -> str:
        return self.record.id


@dataclass(frozen=True)
class NetworkUsage:
    """The pod's interfaces: the default one (``eth0``, else the first) and the others;
    loopback is left out."""

    timestamp: int
    default: InterfaceUsage | None
    others: list[InterfaceUsage] = field(default_factory=list)


@dataclass(frozen=True)
class ProcessUsage:
    """Tasks in the pod cgroup (``pids.current``, threads included)."""

    timestamp: int
    process_count: int


@dataclass(frozen=True)
class PodStats:
    """One pod's figures from its own cgroup and network namespace, with its containers'."""

    record: SandboxRecord
    cpu: CpuUsage | None = None
    memory: MemoryUsage | None = None
    swap: SwapUsage | None = None
    io: IoUsage | None = None
    network: NetworkUsage | None = None
    process: ProcessUsage | None = None
    containers: list[ContainerStats] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.record.id


def layer_figure(usage: LayerUsage, mountpoint: str) -> FilesystemUsage:
    """The CRI view of a writable layer's usage."""
    return FilesystemUsage(usage.timestamp, mountpoint, usage.used_bytes, usage.inodes_used)
