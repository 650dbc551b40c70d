"""UpdateContainerResources and ReopenContainerLog."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.errors import InvalidArgument
from cri.call import call_context, object_id
from cri.convert.resources import resources

if TYPE_CHECKING:
    from cri.services import Services


def update_container_resources(
    d: Services, req: pb.UpdateContainerResourcesRequest, ctx: grpc.ServicerContext
) -> pb.UpdateContainerResourcesResponse:
    """Apply new cgroup limits to a created or running container."""
    ctr_id = object_id(
        req.container_id, "UpdateContainerResourcesRequest.container_id", "a container id"
    )
    if not req.HasField("linux"):
        raise InvalidArgument("UpdateContainerResourcesRequest.linux is not set")
    d.containers.update_resources(
        ctr_id, resources(req.linux), call_context(ctx, f"update of container {ctr_id}")
    )
    return pb.UpdateContainerResourcesResponse()


def reopen_container_log(
    d: Services, req: pb.ReopenContainerLogRequest, ctx: grpc.ServicerContext
) -> pb.ReopenContainerLogResponse:
    """Have the container's monitor start a new log file at the same path."""
    ctr_id = object_id(req.container_id, "ReopenContainerLogRequest.container_id", "a container id")
    d.containers.reopen_log(ctr_id)
    return pb.ReopenContainerLogResponse()
