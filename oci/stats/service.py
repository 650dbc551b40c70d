"""StatsService: container and pod stats from cgroup reads sampled in the background.

What is listed (as CRI-O): ListContainerStats covers created and running containers
(an exited one has no cgroup left; the kubelet only asks about running ones), and
ListPodSandboxStats ready pods (a stopped pod's processes and network are gone), each
with its created and running containers. Asked for by id, any visible container or
pod answers, with what can still be read. Unknown ids raise NotFound; filters that
match nothing give empty lists.

Where the figures come from: each ``refresh`` (the background collector's round,
every ``collection_period``) reads the cgroup files of every listed container and
ready pod (CPU, memory, swap where the host has swap, PSI where the cgroup2 tree has
it; for pods the task count and their namespace's network counters) and keeps them.
The list calls serve those kept figures, stamped with the time they were read, like
CRI-O with a ``collection_period``: reading ~8 files per container per call would
make ListContainerStats cost ~100x ListContainers at 100 pods. A container or pod with
no kept figures yet, or whose kept CPU figure has no rate while a sample a second old
exists, is read during the call. The by-id calls always read afresh. A cgroup that
vanishes mid-read leaves those parts unset and the rest answered. Writable layers are
walked only by the background collector; calls serve its figures and never wait.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
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
)
from oci.stats.cpu_rate import MIN_WINDOW_NS, CpuRates
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
        self._kept: dict[Hashable, CgroupFigures] = {}
        self._kept_net: dict[str, NetworkUsage] = {}
        # The last answer per id and the parts it was made of: the same parts give the
        # same object, so the cri layer converts it once (``ItemCache``).
        self._made: dict[Hashable, tuple[tuple[object, ...], ContainerStats | PodStats]] = {}
        self.on_unwalked: Any = None  # called when a listed container has no layer figure

    # ---- containers ------------------------------------------------------------
    def container(self, id_or_prefix: str) -> ContainerStats:
        """Stats of one visible container, in any state, read now; NotFound if unknown."""
        return self._container_stats(self.containers.status(id_or_prefix), fresh=True)

    def list_containers(self, flt: StatsFilter | None = None) -> list[ContainerStats]:
        """Stats of the created and running containers matching ``flt`` (kept figures)."""
        return [self._container_stats(r, fresh=False) for r in self._listed_containers(flt)]

    def _listed_containers(self, flt: StatsFilter | None) -> list[ContainerRecord]:
        cflt = None
        if flt is not None:
            cflt = ContainerFilter(id=flt.id, pod_id=flt.pod_id, labels=flt.labels)
        return [r for r in self.containers.list(cflt) if r.state in LISTED_STATES]

    def _container_stats(self, rec: ContainerRecord, fresh: bool) -> ContainerStats:
        layer = self.layers.get(rec.id)
        if layer is None and self.on_unwalked is not None:
            self.on_unwalked()
        got = None
        if rec.state in LISTED_STATES:
            got = self._figures(rec.id, lambda: self.container_dirs(rec), fresh)
        parts = (rec, got, layer)
        hit = self._made.get(rec.id)
        if hit is not None and _same(hit[0], parts):
            return hit[1]  # type: ignore[return-value]
        writable = layer_figure(layer, self.settings.mountpoint) if layer is not None else None
        stats = ContainerStats(rec, writable_layer=writable)
        if got is not None:
            stats = ContainerStats(rec, got.cpu, got.memory, got.swap, got.io, writable)
        self._made[rec.id] = (parts, stats)
        return stats

    def _figures(
        self, key: Hashable, dirs: Callable[[], CgroupDirs | None], fresh: bool,
        pids: bool = False,
    ) -> CgroupFigures:  # fmt: skip
        """The kept figures of ``key`` or, if ``fresh`` or they will not do, a new read."""
        if not fresh:
            kept = self._kept.get(key)
            if kept is not None and not self._wants_rate(kept):
                return kept
        where = dirs()
        got = CgroupFigures()
        if where is not None:
            got = read_figures(where, key, self.rates, swap=self.host_swap(), pids=pids)
        self._kept[key] = got
        return got

    @staticmethod
    def _wants_rate(kept: CgroupFigures) -> bool:
        """A kept CPU figure without a rate, old enough that a read now would have one."""
        cpu = kept.cpu
        return (cpu is not None and cpu.usage_nano_cores is None
                and time.time_ns() - cpu.timestamp >= MIN_WINDOW_NS)  # fmt: skip

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
        """Stats of one pod in any state, with its created and running containers, read now."""
        rec = self.pods.get(id_or_prefix)
        return self._pod_stats([rec], fresh=True)[0]

    def list_pods(self, flt: StatsFilter | None = None) -> list[PodStats]:
        """Stats of the ready pods matching ``flt`` (id and labels), from kept figures."""
        flt = flt or StatsFilter()
        pods = self.pods.list(SandboxFilter(id=flt.id, state=READY, labels=flt.labels))
        return self._pod_stats(pods, fresh=False)

    def _pod_stats(self, pods: list[SandboxRecord], fresh: bool) -> list[PodStats]:
        by_pod: dict[str, list[ContainerRecord]] = {p.id: [] for p in pods}
        one = StatsFilter(pod_id=pods[0].id) if len(pods) == 1 else None
        for c in self._listed_containers(one) if pods else []:
            if c.sandbox_id in by_pod:
                by_pod[c.sandbox_id].append(c)
        networks = self._networks(pods, by_pod, fresh)
        out = []
        for pod in pods:
            got = self._figures(("pod", pod.id), lambda p=pod: self.pod_dirs(p), fresh, pids=True)
            containers = [self._container_stats(c, fresh) for c in by_pod[pod.id]]
            net = networks.get(pod.id)
            parts = (pod, got, net, *containers)
            hit = self._made.get(("pod", pod.id))
            if hit is not None and _same(hit[0], parts):
                out.append(hit[1])  # type: ignore[arg-type]
                continue
            stats = PodStats(
                record=pod, cpu=got.cpu, memory=got.memory, swap=got.swap, io=got.io,
                network=net, process=got.process, containers=containers,
            )  # fmt: skip
            self._made[("pod", pod.id)] = (parts, stats)
            out.append(stats)
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
        self, pods: list[SandboxRecord], containers: dict[str, list[ContainerRecord]],
        fresh: bool,
    ) -> dict[str, NetworkUsage]:  # fmt: skip
        """Network counters of each pod with a namespace of its own (none for host-network
        pods, whose counters are the node's): kept ones unless ``fresh``, else read now."""
        out: dict[str, NetworkUsage] = {}
        wanted: dict[str, tuple[str, list[int]]] = {}
        for pod in pods:
            netns = pod.ns_paths.get("net", "")
            if pod.host_network or not netns:
                continue
            kept = None if fresh else self._kept_net.get(pod.id)
            if kept is not None:
                out[pod.id] = kept
                continue
            pids = [c.pid for c in containers.get(pod.id, []) if c.state == RUNNING and c.pid]
            if pod.infra and pod.infra.get("pid"):
                pids.insert(0, int(pod.infra["pid"]))
            wanted[pod.id] = (netns, pids)
        if wanted:
            now = time.time_ns()
            for pod_id, interfaces in read_pods(wanted).items():
                default, others = split_default(interfaces)
                out[pod_id] = self._kept_net[pod_id] = NetworkUsage(now, default, others)
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

    def refresh(self) -> None:
        """Read and keep the figures of every listed container and ready pod (and their
        networks); forget what is kept for containers and pods that are gone."""
        pods = self.pods.list(SandboxFilter(state=READY))
        self._pod_stats(pods, fresh=True)
        ctrs = self._listed_containers(None)
        in_pods = {p.id for p in pods}
        for rec in ctrs:
            if rec.sandbox_id not in in_pods:
                self._figures(rec.id, lambda r=rec: self.container_dirs(r), fresh=True)
        live: set[Hashable] = {r.id for r in ctrs} | {("pod", p.id) for p in pods}
        self.rates.retain(live)
        for table in (self._kept, self._made):
            for key in [k for k in list(table) if k not in live]:
                table.pop(key, None)
        for pod_id in [k for k in list(self._kept_net) if ("pod", k) not in live]:
            self._kept_net.pop(pod_id, None)
        with self._dirs_lock:
            for gone in [c for c in self._dirs if c not in live]:
                del self._dirs[gone]


def _same(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    """Whether two tuples hold the very same objects."""
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))
