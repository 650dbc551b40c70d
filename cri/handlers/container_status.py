"""ContainerStatus, ListContainers and StreamContainers: answered from the in-memory cache.

ContainerStatus (not verbose) and ListContainers answer in wire format, from items
encoded once per record snapshot (``cri.convert.item_cache``, ``cri.convert.wire``).
"""

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
from cri.convert.wire import Encoded
from oci.container.record import ContainerRecord

if TYPE_CHECKING:
    from cri.services import Services

_ITEMS: ItemCache[ContainerRecord, pb.Container] = ItemCache(to_pb_container)
_STATUSES: ItemCache[ContainerRecord, pb.ContainerStatus] = ItemCache(to_pb_status)
_STATUS_FIELD = pb.ContainerStatusResponse.STATUS_FIELD_NUMBER
_CONTAINERS_FIELD = pb.ListContainersResponse.CONTAINERS_FIELD_NUMBER


def container_status(
    d: Services, req: pb.ContainerStatusRequest, ctx: grpc.ServicerContext
) -> pb.ContainerStatusResponse | Encoded:
    """State, times, exit code and reason, image, mounts, log path; verbose adds pid and spec."""
    ctr_id = object_id(req.container_id, "ContainerStatusRequest.container_id", "a container id")
    rec = d.containers.status(ctr_id)
    live = len(d.containers.store.all())
    if not req.verbose:
        data = _STATUSES.encoded([rec], live, _STATUS_FIELD)
        return Encoded(pb.ContainerStatusResponse, data)
    try:
        spec = d.containers.spec(rec)
    except PeapodError:
        spec = None
    status = _STATUSES.items([rec], live)[0]
    return pb.ContainerStatusResponse(status=status, info=verbose_info(rec, spec))


def list_containers(
    d: Services, req: pb.ListContainersRequest, ctx: grpc.ServicerContext
) -> Encoded:
    """Containers matching the filter (id or prefix, pod, state, labels)."""
    records = _records(d, req)
    data = _ITEMS.encoded(records, len(d.containers.store.all()), _CONTAINERS_FIELD)
    return Encoded(pb.ListContainersResponse, data)


def stream_containers(
    d: Services, req: pb.StreamContainersRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.StreamContainersResponse]:
    """ListContainers' answer in batches (none for an empty list)."""
    for batch in batches(_containers(d, req)):
        yield pb.StreamContainersResponse(containers=batch)


def _containers(
    d: Services, req: pb.ListContainersRequest | pb.StreamContainersRequest
) -> list[pb.Container]:
    return _ITEMS.items(_records(d, req), len(d.containers.store.all()))


def _records(
    d: Services, req: pb.ListContainersRequest | pb.StreamContainersRequest
) -> list[ContainerRecord]:
    if not req.HasField("filter"):
        return d.containers.list(None)
    flt = container_filter(req.filter)
    return [] if flt is None else d.containers.list(flt)
