"""ListPodSandboxMetrics in the domain: the samples of pods and their containers.

A pod's own samples (container ``POD``) are its network counters, per interface of its
namespace but loopback (host-network pods have none: the node's traffic is not the
pod's), and ``container_last_seen``. Each created or running container gets the
selected families read from its cgroup, ``/proc`` and writable layer. Everything is
read when asked (timestamp 0, "live", to the kubelet) except the writable layer's used
bytes, which come from the background walk and carry its time (layers it has not reached
are walked in the call, from one budget for the whole call). A container whose cgroup
vanished mid-read still gets every figure that could be read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from oci.stats.cgroups import CgroupDirs
from oci.stats.metric_blkio import disk_io
from oci.stats.metric_catalog import BY_NAME, POD_CONTAINER, MetricSpec, catalog_for
from oci.stats.metric_cgroup import NS_PER_S, Reading, cpu, hugetlb, memory, oom, pressure
from oci.stats.metric_disk import LayerUsageLookup, WalkBudget, writable_layer_fs
from oci.stats.metric_process import process
from oci.stats.metric_spec import spec
from oci.stats.network import InterfaceUsage, read_pods

log = logging.getLogger(__name__)
_SHAPE = {name: (s.kind, len(s.label_keys)) for name, s in BY_NAME.items()}


@dataclass(frozen=True)
class MetricSample:
    """One metric value; ``labels`` in the order of its descriptor's label keys."""

    name: str
    kind: str
    labels: tuple[str, ...]
    value: int
    timestamp: int = 0  # unix ns; 0 = read now


@dataclass(frozen=True)
class ContainerMetricSet:
    container_id: str
    samples: tuple[MetricSample, ...]


@dataclass(frozen=True)
class PodMetricSet:
    pod_id: str
    samples: tuple[MetricSample, ...]
    containers: tuple[ContainerMetricSet, ...]


@dataclass(frozen=True)
class PodTarget:
    """What the collector needs of a pod: ids, names and its pinned network namespace
    ("" for host network) and pids that may be in it."""

    id: str
    name: str
    namespace: str
    netns_path: str
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ContainerTarget:
    """What the collector needs of a container (``dirs`` None if its cgroup is unknown;
    ``pid`` 0 if it has no process)."""

    id: str
    name: str
    image: str
    dirs: CgroupDirs | None
    pid: int
    started_at: int  # unix ns, or created_at if it never started
    upper_dir: str


class PodMetricsCollector:
    """Reads the configured metric families for pods and their containers."""

    def __init__(self, families: frozenset[str],
                 layer_usage: LayerUsageLookup | None = None) -> None:  # fmt: skip
        self.families = families
        self.descriptors: tuple[MetricSpec, ...] = catalog_for(families)
        self._layer_usage = layer_usage

    def collect(
        self, pods: Sequence[tuple[PodTarget, Sequence[ContainerTarget]]]
    ) -> list[PodMetricSet]:
        """Samples of each pod (container ``POD``) and of each of its containers; the
        pods' network namespaces are read in one batch, and the layers without a figure
        walked from one ``WalkBudget``."""
        now_s = time.time_ns() // NS_PER_S
        nets: dict[str, list[InterfaceUsage]] = {}
        if "network" in self.families:
            nets = read_pods({
                pod.id: (pod.netns_path, (*pod.pids, *(c.pid for c in ctrs if c.pid > 0)))
                for pod, ctrs in pods if pod.netns_path
            })  # fmt: skip
        walks = WalkBudget()
        return [self._pod(pod, ctrs, nets.get(pod.id, []), now_s, walks) for pod, ctrs in pods]

    def _pod(self, pod: PodTarget, containers: Sequence[ContainerTarget],
             net: Sequence[InterfaceUsage], now_s: int,
             walks: WalkBudget) -> PodMetricSet:  # fmt: skip
        base = (POD_CONTAINER, pod.id, "", pod.namespace, pod.name)
        own = [self._sample("container_last_seen", base, now_s)]
        own += [self._sample(n, base + extra, v) for n, extra, v in network_readings(net)]
        sets = tuple(
            ContainerMetricSet(c.id, tuple(self._container(pod, c, now_s, walks)))
            for c in containers
        )
        return PodMetricSet(pod.id, tuple(own), sets)

    def _container(self, pod: PodTarget, c: ContainerTarget, now_s: int,
                   walks: WalkBudget) -> Iterator[MetricSample]:  # fmt: skip
        base = (c.name, c.id, c.image, pod.namespace, pod.name)
        yield self._sample("container_last_seen", base, now_s)
        for name, extra, value, stamp in self._readings(c, walks):
            yield self._sample(name, base + extra, value, stamp)

    def _readings(
        self, c: ContainerTarget, walks: WalkBudget
    ) -> Iterator[tuple[str, tuple[str, ...], int, int]]:
        fams = self.families
        dirs = c.dirs
        if dirs is not None:
            readers: dict[str, Callable[[], Iterable[Reading]]] = {
                "cpu": lambda: cpu(dirs),
                "memory": lambda: memory(dirs),
                "hugetlb": lambda: hugetlb(dirs),
                "oom": lambda: oom(dirs),
                "pressure": lambda: pressure(dirs),
                "diskIO": lambda: disk_io(dirs),
                "process": lambda: process(dirs, c.pid),
                "spec": lambda: spec(dirs, c.started_at),
            }
            for family, read in readers.items():
                if family in fams:
                    for name, extra, value in _guarded(family, c.id, read):
                        yield name, extra, value, 0
        if "disk" in fams and c.upper_dir:
            yield from writable_layer_fs(c.id, c.upper_dir, self._layer_usage, walks)

    @staticmethod
    def _sample(name: str, labels: tuple[str, ...], value: int, stamp: int = 0) -> MetricSample:
        kind, width = _SHAPE[name]
        assert len(labels) == width, name
        return MetricSample(name, kind, labels, max(int(value), 0), stamp)


def _guarded(family: str, ctr_id: str, read: Callable[[], Iterable[Reading]]) -> list[Reading]:
    """The family's readings; none (logged) if reading it failed in a way the readers do
    not absorb (a file of unexpected content), so the other families still answer."""
    try:
        return list(read())
    except (OSError, ValueError) as exc:
        log.warning("cannot read metric family", extra={
            "family": family, "container": ctr_id, "error": str(exc)})  # fmt: skip
        return []


def network_readings(counters: Sequence[InterfaceUsage]) -> Iterator[Reading]:
    """The eight network counters of every interface but loopback."""
    for i in counters:
        if i.name == "lo":
            continue
        for name, value in (
            ("container_network_receive_bytes_total", i.rx_bytes),
            ("container_network_receive_packets_total", i.rx_packets),
            ("container_network_receive_packets_dropped_total", i.rx_dropped),
            ("container_network_receive_errors_total", i.rx_errors),
            ("container_network_transmit_bytes_total", i.tx_bytes),
            ("container_network_transmit_packets_total", i.tx_packets),
            ("container_network_transmit_packets_dropped_total", i.tx_dropped),
            ("container_network_transmit_errors_total", i.tx_errors),
        ):
            yield name, (i.name,), value
