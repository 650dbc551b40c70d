"""PodSandboxStatus, ListPodSandbox and StreamPodSandboxes: from the in-memory index only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import object_id
from cri.convert import sandbox as sandbox_convert
from cri.convert.batches import batches
from cri.convert.item_cache import ItemCache
from sandbox.record import SandboxRecord

if TYPE_CHECKING:
    from cri.services import Services


_ITEMS: ItemCache[SandboxRecord, pb.PodSandbox] = ItemCache(sandbox_convert.to_pb_sandbox)


def pod_sandbox_status(
    d: Services, req: pb.PodSandboxStatusRequest, ctx: grpc.ServicerContext
) -> pb.PodSandboxStatusResponse:
    """State, IPs, metadata and namespace options of one pod; verbose adds an info map."""
    pod_id = object_id(req.pod_sandbox_id, "PodSandboxStatusRequest.pod_sandbox_id",
                     "the id RunPodSandbox returned")
    rec = d.pods.get(pod_id)
    info = sandbox_convert.verbose_info(rec) if req.verbose else {}
    return pb.PodSandboxStatusResponse(
        status=sandbox_convert.to_pb_status(rec), info=info, timestamp=time.time_ns()
    )


def list_pod_sandbox(
    d: Services, req: pb.ListPodSandboxRequest, ctx: grpc.ServicerContext
) -> pb.ListPodSandboxResponse:
    """Pods matching the filter (id or unique id prefix, state, labels)."""
    return pb.ListPodSandboxResponse(items=_sandboxes(d, req))


def stream_pod_sandboxes(
    d: Services, req: pb.StreamPodSandboxesRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.StreamPodSandboxesResponse]:
    """ListPodSandbox's answer in batches (none for an empty list)."""
    for batch in batches(_sandboxes(d, req)):
        yield pb.StreamPodSandboxesResponse(pod_sandboxes=batch)


def _sandboxes(
    d: Services, req: pb.ListPodSandboxRequest | pb.StreamPodSandboxesRequest
) -> list[pb.PodSandbox]:
    flt = sandbox_convert.sandbox_filter(req.filter) if req.HasField("filter") else None
    records = d.pods.list(flt)
    return _ITEMS.items(records, len(d.pods.store.all()))
