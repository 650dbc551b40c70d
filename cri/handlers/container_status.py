"""ContainerStatus, ListContainers and StreamContainers: answered from the in-memory cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.errors import PeapodError
from cri.call import object_id
from cri.convert.batches import batches
from cri.convert.container import (
    container_filter,
    to_pb_container,
    to_pb_status,
    verbose_info,
)
from cri.convert.item_cache import ItemCache
from oci.container.record import ContainerRecord

if TYPE_CHECKING:
    from cri.services import Services

_ITEMS: ItemCache[ContainerRecord, pb.Container] = ItemCache(to_pb_container)


def container_status(
    d: Services, req: pb.ContainerStatusRequest, ctx: grpc.ServicerContext
) -> pb.ContainerStatusResponse:
    """State, times, exit code and reason, image, mounts, log path; verbose adds pid and spec."""
    ctr_id = object_id(req.container_id, "ContainerStatusRequest.container_id", "a container id")
    rec = d.containers.status(ctr_id)
    info: dict[str, str] = {}
    if req.verbose:
        try:
            spec = d.containers.spec(rec)
        except PeapodError:
            spec = None
        info = verbose_info(rec, spec)
    return pb.ContainerStatusResponse(status=to_pb_status(rec), info=info)


def list_containers(
    d: Services, req: pb.ListContainersRequest, ctx: grpc.ServicerContext
) -> pb.ListContainersResponse:
    """Containers matching the filter (id or prefix, pod, state, labels)."""
    return pb.ListContainersResponse(containers=_containers(d, req))


def stream_containers(
    d: Services, req: pb.StreamContainersRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.StreamContainersResponse]:
    """ListContainers' answer in batches (none for an empty list)."""
    for batch in batches(_containers(d, req)):
        yield pb.StreamContainersResponse(containers=batch)


def _containers(
    d: Services, req: pb.ListContainersRequest | pb.StreamContainersRequest
) -> list[pb.Container]:
    flt = container_filter(req.filter) if req.HasField("filter") else None
    if req.HasField("filter") and flt is None:
        return []
    records = d.containers.list(flt)
    return _ITEMS.items(records, len(d.containers.store.all()))
