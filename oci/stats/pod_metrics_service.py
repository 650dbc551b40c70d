"""The daemon's CRI metrics: which pods and containers are measured, and with what.

Ready pods are measured, with their created and running containers; a stopped pod or
an exited container has no live figures to give (the kubelet's series for it end, as
they do when cAdvisor sees a cgroup go). Records come from the managers' in-memory
indexes; cgroup directories and writable-layer figures from the ``StatsService`` the
stats rpcs use.
"""

from __future__ import annotations

import os
from collections import defaultdict

from oci.container.record import CREATED, RUNNING, ContainerRecord
from oci.container.rootfs import UPPER
from oci.stats.layers import LayerUsage
from oci.stats.metric_catalog import MetricSpec
from oci.stats.pod_metrics import ContainerTarget, PodMetricsCollector, PodMetricSet, PodTarget
from oci.stats.service import StatsService
from sandbox.record import READY, SandboxRecord

MEASURED_STATES = (CREATED, RUNNING)


class PodMetricsService:
    """ListMetricDescriptors and ListPodSandboxMetrics over the daemon's pods."""

    def __init__(self, stats: StatsService, families: frozenset[str]) -> None:
        self.stats = stats
        self.collector = PodMetricsCollector(families, self._layer_usage)

    @property
    def descriptors(self) -> tuple[MetricSpec, ...]:
        return self.collector.descriptors

    def list(self) -> list[PodMetricSet]:
        """The samples of every ready pod and of its created and running containers."""
        by_pod: defaultdict[str, list[ContainerRecord]] = defaultdict(list)
        for rec in self.stats.containers.list():
            if rec.state in MEASURED_STATES:
                by_pod[rec.sandbox_id].append(rec)
        targets = [
            (pod_target(pod), [self._target(c) for c in by_pod.get(pod.id, [])])
            for pod in self.stats.pods.list()
            if pod.state == READY
        ]
        return self.collector.collect(targets)

    def _target(self, rec: ContainerRecord) -> ContainerTarget:
        return ContainerTarget(
            id=rec.id,
            name=rec.metadata_name,
            image=rec.image,
            dirs=self.stats.container_dirs(rec),
            pid=rec.pid if rec.state == RUNNING else 0,
            started_at=rec.started_at or rec.created_at,
            upper_dir=os.path.join(rec.storage_dir, UPPER),
        )

    def _layer_usage(self, ctr_id: str) -> LayerUsage | None:
        usage = self.stats.layers.get(ctr_id)
        if usage is None and self.stats.on_unwalked is not None:
            self.stats.on_unwalked()  # the background walks take it up early
        return usage


def pod_target(pod: SandboxRecord) -> PodTarget:
    """The collector's view of ``pod``: host-network pods get no namespace to read."""
    infra_pid = int(pod.infra["pid"]) if pod.infra else 0
    return PodTarget(
        id=pod.id,
        name=pod.metadata.name,
        namespace=pod.metadata.namespace,
        netns_path="" if pod.host_network else pod.ns_paths.get("net", ""),
        pids=(infra_pid,) if infra_pid > 0 else (),
    )
