"""StopPodSandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import call_context, possible_id

if TYPE_CHECKING:
    from cri.services import Services


def stop_pod_sandbox(
    d: Services, req: pb.StopPodSandboxRequest, ctx: grpc.ServicerContext
) -> pb.StopPodSandboxResponse:
    """Stop the pod's containers, release its network, kill its infra process; idempotent."""
    pod_id = req.pod_sandbox_id
    field = "StopPodSandboxRequest.pod_sandbox_id"
    if not possible_id(pod_id, field, "the id RunPodSandbox returned"):
        return pb.StopPodSandboxResponse()
    d.pods.stop(pod_id, call_context(ctx, f"StopPodSandbox of {pod_id}"))
    return pb.StopPodSandboxResponse()
