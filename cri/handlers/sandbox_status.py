"""PodSandboxStatus, ListPodSandbox and StreamPodSandboxes: from the in-memory index only.

PodSandboxStatus (not verbose) and ListPodSandbox answer in wire format, from items
encoded once per record snapshot (``cri.convert.item_cache``, ``cri.convert.wire``).
"""

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
from cri.convert.wire import Encoded, varint
from sandbox.record import SandboxRecord

if TYPE_CHECKING:
    from cri.services import Services


_ITEMS: ItemCache[SandboxRecord, pb.PodSandbox] = ItemCache(sandbox_convert.to_pb_sandbox)
_STATUSES: ItemCache[SandboxRecord, pb.PodSandboxStatus] = ItemCache(
    sandbox_convert.to_pb_status
)
_STATUS_FIELD = pb.PodSandboxStatusResponse.STATUS_FIELD_NUMBER
# The timestamp's tag: field 4, varint.
_TIMESTAMP_TAG = varint(pb.PodSandboxStatusResponse.TIMESTAMP_FIELD_NUMBER << 3)
_ITEMS_FIELD = pb.ListPodSandboxResponse.ITEMS_FIELD_NUMBER


def pod_sandbox_status(
    d: Services, req: pb.PodSandboxStatusRequest, ctx: grpc.ServicerContext
) -> pb.PodSandboxStatusResponse | Encoded:
    """State, IPs, metadata and namespace options of one pod; verbose adds an info map."""
    pod_id = object_id(req.pod_sandbox_id, "PodSandboxStatusRequest.pod_sandbox_id",
                     "the id RunPodSandbox returned")
    rec = d.pods.get(pod_id)
    live = len(d.pods.store.all())
    if not req.verbose:
        status = _STATUSES.encoded([rec], live, _STATUS_FIELD)
        data = status + _TIMESTAMP_TAG + varint(time.time_ns())
        return Encoded(pb.PodSandboxStatusResponse, data)
    return pb.PodSandboxStatusResponse(
        status=_STATUSES.items([rec], live)[0],
        info=sandbox_convert.verbose_info(rec),
        timestamp=time.time_ns(),
    )


def list_pod_sandbox(
    d: Services, req: pb.ListPodSandboxRequest, ctx: grpc.ServicerContext
) -> Encoded:
    """Pods matching the filter (id or unique id prefix, state, labels)."""
    data = _ITEMS.encoded(_records(d, req), len(d.pods.store.all()), _ITEMS_FIELD)
    return Encoded(pb.ListPodSandboxResponse, data)


def stream_pod_sandboxes(
    d: Services, req: pb.StreamPodSandboxesRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.StreamPodSandboxesResponse]:
    """ListPodSandbox's answer in batches (none for an empty list)."""
    for batch in batches(_sandboxes(d, req)):
        yield pb.StreamPodSandboxesResponse(pod_sandboxes=batch)


def _sandboxes(
    d: Services, req: pb.ListPodSandboxRequest | pb.StreamPodSandboxesRequest
) -> list[pb.PodSandbox]:
    return _ITEMS.items(_records(d, req), len(d.pods.store.all()))


def _records(
    d: Services, req: pb.ListPodSandboxRequest | pb.StreamPodSandboxesRequest
) -> list[SandboxRecord]:
    flt = sandbox_convert.sandbox_filter(req.filter) if req.HasField("filter") else None
    return d.pods.list(flt)
