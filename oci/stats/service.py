"""StatsService: container and pod stats, read when asked, with cached writable layers.

What is listed (as CRI-O): ListContainerStats covers created and running containers
(an exited one has no cgroup left; the kubelet only asks about running ones), and
ListPodSandboxStats ready pods (a stopped pod's processes and network are gone), each
with its created and running containers. Asked for by id, any visible container or
pod answers, with what can still be read. Unknown ids raise NotFound; filters that
match nothing give empty lists.

Each call reads the cgroup files then and there (CPU, memory, swap where the host has
swap, PSI where the cgroup2 tree has it; for pods also the task count and the network
counters of the pod's namespace); a cgroup that vanishes mid-read leaves those parts
unset and the rest answered. Writable layers are walked only by the background
``StatsCollector``; calls serve its cached figures and never wait for a walk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from base.errors import PeapodError
from oci.container.manager import ContainerFilter, ContainerManager
from oci.container.record import CREATED, RUNNING, ContainerRecord
from oci.container.rootfs import UPPER
from oci.spec.resources import cgroups_path
from oci.stats.cgroups import (
    CgroupDirs,
    container_dirs,
    dirs_for,
    host_has_swap,
    read_cpu_usage,
)
from oci.stats.cpu_rate import CpuRates
from oci.stats.layers import LayerUsages
from oci.stats.model import ContainerStats, NetworkUsage, PodStats, layer_figure
from oci.stats.network import read_pods, split_default
from oci.stats.sampling import CgroupFigures, read_figures
from sandbox.cgroup_layout import CgroupLayout, detect_layout
from sandbox.cgroup_paths import cgroup_path
from sandbox.manager import PodManager
from sandbox.record import READY, SandboxRecord
from sandbox.store import SandboxFilter

log = logging.getLogger("peapod.stats")

LISTED_STATES = (CREATED, RUNNING)
SWAP_RECHECK = 10.0  # seconds between looks at whether the host has swap


@dataclass(frozen=True)
class StatsSettings:
    """``collection_period``: seconds between background rounds; ``walk_budget``:
    directory entries one round of writable-layer walks may visit; ``mountpoint``: the
    directory reported as the writable layers' filesystem."""

    collection_period: float = 10.0
    walk_budget: int = 100_000
    mountpoint: str = ""


@dataclass(frozen=True)
class StatsFilter:
    """Every given part must match: id (or unique prefix), pod id, labels."""

    id: str = ""
    pod_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)


class StatsService:
    """Answers the stats rpcs from cgroup reads, pod namespaces and cached layer walks."""

    def __init__(
        self,
        settings: StatsSettings,
        containers: ContainerManager,
        pods: PodManager,
        layout: CgroupLayout | None = None,
    ) -> None:
        self.settings = settings
        self.containers = containers
        self.pods = pods
        self.layout = layout if layout is not None else detect_layout()
        self.rates = CpuRates()
        self.layers = LayerUsages(settings.walk_budget)
        self._dirs: dict[str, CgroupDirs] = {}
        self._dirs_lock = threading.Lock()
        self._swap = host_has_swap()
        self._swap_checked = time.monotonic()
        self.on_unwalked: Any = None  # called when a listed container has no layer figure

    # ---- containers ------------------------------------------------------------
    def container(self, id_or_prefix: str) -> ContainerStats:
        """Stats of one visible container, in any state; NotFound if unknown."""
        return self._container_stats(self.containers.status(id_or_prefix))

    def list_containers(self, flt: StatsFilter | None = None) -> list[ContainerStats]:
        """Stats of the created and running containers matching ``flt``."""
        return [self._container_stats(r) for r in self._listed_containers(flt)]

    def _listed_containers(self, flt: StatsFilter | None) -> list[ContainerRecord]:
        cflt = None
        if flt is not None:
            cflt = ContainerFilter(id=flt.id, pod_id=flt.pod_id, labels=flt.labels)
        return [r for r in self.containers.list(cflt) if r.state in LISTED_STATES]

    def _container_stats(self, rec: ContainerRecord) -> ContainerStats:
        layer = self.layers.get(rec.id)
        if layer is None and self.on_unwalked is not None:
            self.on_unwalked()
        writable = layer_figure(layer, self.settings.mountpoint) if layer is not None else None
        if rec.state not in LISTED_STATES:
            return ContainerStats(rec, writable_layer=writable)
        dirs = self.container_dirs(rec)
        if dirs is None:
            return ContainerStats(rec, writable_layer=writable)
        got = read_figures(dirs, rec.id, self.rates, swap=self.host_swap())
        return ContainerStats(rec, got.cpu, got.memory, got.swap, got.io, writable)

    def container_dirs(self, rec: ContainerRecord) -> CgroupDirs | None:
        """The container's cgroup directories: from its spec's ``linux.cgroupsPath``, else
        worked out from its pod's cgroup parent; None if neither is known."""
        with self._dirs_lock:
            dirs = self._dirs.get(rec.id)
        if dirs is not None:
            return dirs
        path = self._cgroups_path(rec)
        if not path:
            return None
        dirs = container_dirs(path, self.layout)
        with self._dirs_lock:
            self._dirs[rec.id] = dirs
        return dirs

    def _cgroups_path(self, rec: ContainerRecord) -> str:
        try:
            path = self.containers.spec(rec).get("linux", {}).get("cgroupsPath", "")
            if isinstance(path, str) and path:
                return path
        except PeapodError:
            pass
        pod = self.pods.find(rec.sandbox_id)
        if pod is None:
            return ""
        facts = self.containers.facts
        try:
            return cgroups_path(facts.cgroup_driver, pod.cgroup_parent, rec.id,
                                facts.systemd_scope_prefix)  # fmt: skip
        except PeapodError:
            return ""

    # ---- pods ------------------------------------------------------------------
    def pod(self, id_or_prefix: str) -> PodStats:
        """Stats of one pod in any state, with its created and running containers."""
        rec = self.pods.get(id_or_prefix)
        return self._pod_stats([rec])[0]

    def list_pods(self, flt: StatsFilter | None = None) -> list[PodStats]:
        """Stats of the ready pods matching ``flt`` (id and labels)."""
        flt = flt or StatsFilter()
        pods = self.pods.list(SandboxFilter(id=flt.id, state=READY, labels=flt.labels))
        return self._pod_stats(pods)

    def _pod_stats(self, pods: list[SandboxRecord]) -> list[PodStats]:
        by_pod: dict[str, list[ContainerRecord]] = {p.id: [] for p in pods}
        one = StatsFilter(pod_id=pods[0].id) if len(pods) == 1 else None
        for c in self._listed_containers(one) if pods else []:
            if c.sandbox_id in by_pod:
                by_pod[c.sandbox_id].append(c)
        networks = self._networks(pods, by_pod)
        swap = self.host_swap()
        out = []
        for pod in pods:
            dirs = self.pod_dirs(pod)
            got = CgroupFigures()
            if dirs is not None:
                got = read_figures(dirs, ("pod", pod.id), self.rates, swap=swap, pids=True)
            out.append(PodStats(
                record=pod, cpu=got.cpu, memory=got.memory, swap=got.swap, io=got.io,
                network=networks.get(pod.id), process=got.process,
                containers=[self._container_stats(c) for c in by_pod[pod.id]],
            ))  # fmt: skip
        return out

    def pod_dirs(self, pod: SandboxRecord) -> CgroupDirs | None:
        """The pod cgroup's directories (its recorded path, else its cgroup parent's);
        None if it has neither."""
        path = (pod.cgroup or {}).get("path")
        if not path:
            try:
                path = cgroup_path(pod.cgroup_parent, self.containers.facts.cgroup_driver.value)
            except PeapodError:
                return None
        return dirs_for(str(path), self.layout)

    def _networks(
        self, pods: list[SandboxRecord], containers: dict[str, list[ContainerRecord]]
    ) -> dict[str, NetworkUsage]:
        """Network counters of each pod with a namespace of its own (none for host-network
        pods, whose counters are the node's)."""
        wanted: dict[str, tuple[str, list[int]]] = {}
        for pod in pods:
            netns = pod.ns_paths.get("net", "")
            if pod.host_network or not netns:
                continue
            pids = [c.pid for c in containers.get(pod.id, []) if c.state == RUNNING and c.pid]
            if pod.infra and pod.infra.get("pid"):
                pids.insert(0, int(pod.infra["pid"]))
            wanted[pod.id] = (netns, pids)
        now = time.time_ns()
        out = {}
        for pod_id, interfaces in read_pods(wanted).items():
            default, others = split_default(interfaces)
            out[pod_id] = NetworkUsage(now, default, others)
        return out

    # ---- housekeeping ----------------------------------------------------------
    def host_swap(self) -> bool:
        """Whether the host has swap (looked at again every ``SWAP_RECHECK`` seconds)."""
        if time.monotonic() - self._swap_checked > SWAP_RECHECK:
            self._swap = host_has_swap()
            self._swap_checked = time.monotonic()
        return self._swap

    def uppers(self) -> dict[str, str]:
        """The writable (upper) dir of each created or running container."""
        return {r.id: os.path.join(r.storage_dir, UPPER) for r in self._listed_containers(None)}

    def sample_cpu(self) -> None:
        """Add a CPU sample for every listed container and ready pod, so a first stats
        call already gets a rate; forget the samples and paths of those gone."""
        keys: list[Any] = []
        for rec in self._listed_containers(None):
            dirs = self.container_dirs(rec)
            keys.append(rec.id)
            if dirs is not None:
                self._cpu_sample(dirs, rec.id)
        for pod in self.pods.list(SandboxFilter(state=READY)):
            keys.append(("pod", pod.id))
            pod_dirs = self.pod_dirs(pod)
            if pod_dirs is not None:
                self._cpu_sample(pod_dirs, ("pod", pod.id))
        self.rates.retain(keys)
        live = {k for k in keys if isinstance(k, str)}
        with self._dirs_lock:
            for gone in [c for c in self._dirs if c not in live]:
                del self._dirs[gone]


    def _cpu_sample(self, dirs: CgroupDirs, key: Any) -> None:
        usage = read_cpu_usage(dirs)
        if usage is not None:
            self.rates.observe(key, time.time_ns(), usage)
