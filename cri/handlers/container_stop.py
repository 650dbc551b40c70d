"""StopContainer and RemoveContainer; both succeed for unknown containers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.errors import InvalidArgument
from cri.call import call_context, possible_id

if TYPE_CHECKING:
    from cri.services import Services


def stop_container(
    d: Services, req: pb.StopContainerRequest, ctx: grpc.ServicerContext
) -> pb.StopContainerResponse:
    """Send the stop signal, then SIGKILL after ``timeout`` seconds (0: at once)."""
    ctr_id = req.container_id
    if not possible_id(ctr_id, "StopContainerRequest.container_id", "a container id"):
        return pb.StopContainerResponse()
    if req.timeout < 0:
        raise InvalidArgument(f"StopContainerRequest.timeout {req.timeout} is negative")
    d.containers.stop(ctr_id, req.timeout, call_context(ctx, f"stop of container {ctr_id}"))
    return pb.StopContainerResponse()


def remove_container(
    d: Services, req: pb.RemoveContainerRequest, ctx: grpc.ServicerContext
) -> pb.RemoveContainerResponse:
    """Kill the container if it runs, then delete it with its root filesystem."""
    ctr_id = req.container_id
    if not possible_id(ctr_id, "RemoveContainerRequest.container_id", "a container id"):
        return pb.RemoveContainerResponse()
    d.containers.remove(ctr_id, call_context(ctx, f"removal of container {ctr_id}"))
    return pb.RemoveContainerResponse()
