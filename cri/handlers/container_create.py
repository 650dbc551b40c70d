"""CreateContainer and StartContainer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import call_context, object_id
from cri.convert.container import create_request

if TYPE_CHECKING:
    from cri.services import Services


def create_container(
    d: Services, req: pb.CreateContainerRequest, ctx: grpc.ServicerContext
) -> pb.CreateContainerResponse:
    """Create a container in a ready pod sandbox; it runs only after StartContainer."""
    request = create_request(req)
    what = f"creation of container {req.config.metadata.name} in pod {req.pod_sandbox_id}"
    rec = d.containers.create(request, call_context(ctx, what))
    return pb.CreateContainerResponse(container_id=rec.id)


def start_container(
    d: Services, req: pb.StartContainerRequest, ctx: grpc.ServicerContext
) -> pb.StartContainerResponse:
    """Run a created container's process."""
    ctr_id = object_id(req.container_id, "StartContainerRequest.container_id", "a container id")
    d.containers.start(ctr_id, call_context(ctx, f"start of container {ctr_id}"))
    return pb.StartContainerResponse()
