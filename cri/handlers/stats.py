"""ContainerStats, PodSandboxStats and their List and Stream forms.

The Stream forms answer from the same code as the List ones, cut into messages of
``STREAM_BATCH`` items (an empty result sends no message).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import object_id
from cri.convert.batches import batches
from cri.convert.item_cache import ItemCache
from cri.convert.stats import (
    container_stats_filter,
    pod_stats_filter,
    to_pb_container_stats,
    to_pb_pod_stats,
)

if TYPE_CHECKING:
    from cri.services import Services
from oci.stats.model import ContainerStats, PodStats

# Converted once per answer object: the service hands out the same object until a
# figure of that container or pod changes (each collection round).
_CONTAINERS: ItemCache[ContainerStats, pb.ContainerStats] = ItemCache(to_pb_container_stats)
_PODS: ItemCache[PodStats, pb.PodSandboxStats] = ItemCache(to_pb_pod_stats)

# A ContainerStats is well under 1 KB on the wire and a pod's a few KB with its
# containers: 200 pods a message stays far below the kubelet's 16 MiB limit.
STREAM_BATCH = 200


def container_stats(
    d: Services, req: pb.ContainerStatsRequest, ctx: grpc.ServicerContext
) -> pb.ContainerStatsResponse:
    """One container's cpu, memory, swap, io and writable-layer figures."""
    ctr_id = object_id(req.container_id, "ContainerStatsRequest.container_id", "a container id")
    return pb.ContainerStatsResponse(stats=to_pb_container_stats(d.stats.container(ctr_id)))


def _container_items(d: Services, req: pb.ListContainerStatsRequest) -> list[pb.ContainerStats]:
    flt = container_stats_filter(req.filter) if req.HasField("filter") else None
    return _CONTAINERS.items(d.stats.list_containers(flt), len(d.containers.store.all()))


def list_container_stats(
    d: Services, req: pb.ListContainerStatsRequest, ctx: grpc.ServicerContext
) -> pb.ListContainerStatsResponse:
    """Stats of the created and running containers matching the filter."""
    return pb.ListContainerStatsResponse(stats=_container_items(d, req))


def stream_container_stats(
    d: Services, req: pb.StreamContainerStatsRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.StreamContainerStatsResponse]:
    """ListContainerStats as a stream of messages of at most ``STREAM_BATCH`` items."""
    items = _container_items(d, pb.ListContainerStatsRequest(filter=req.filter))
    for part in batches(items, STREAM_BATCH):
        yield pb.StreamContainerStatsResponse(container_stats=part)


def pod_sandbox_stats(
    d: Services, req: pb.PodSandboxStatsRequest, ctx: grpc.ServicerContext
) -> pb.PodSandboxStatsResponse:
    """One pod's cgroup, network and process figures, with its containers'."""
    pod_id = object_id(req.pod_sandbox_id, "PodSandboxStatsRequest.pod_sandbox_id",
                       "a pod sandbox id")  # fmt: skip
    return pb.PodSandboxStatsResponse(stats=to_pb_pod_stats(d.stats.pod(pod_id)))


def _pod_items(d: Services, req: pb.ListPodSandboxStatsRequest) -> list[pb.PodSandboxStats]:
    flt = pod_stats_filter(req.filter) if req.HasField("filter") else None
    return _PODS.items(d.stats.list_pods(flt), len(d.pods.store.all()))


def list_pod_sandbox_stats(
    d: Services, req: pb.ListPodSandboxStatsRequest, ctx: grpc.ServicerContext
) -> pb.ListPodSandboxStatsResponse:
    """Stats of the ready pods matching the filter."""
    return pb.ListPodSandboxStatsResponse(stats=_pod_items(d, req))


def stream_pod_sandbox_stats(
    d: Services, req: pb.StreamPodSandboxStatsRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.StreamPodSandboxStatsResponse]:
    """ListPodSandboxStats as a stream of messages of at most ``STREAM_BATCH`` items."""
    items = _pod_items(d, pb.ListPodSandboxStatsRequest(filter=req.filter))
    for part in batches(items, STREAM_BATCH):
        yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=part)
