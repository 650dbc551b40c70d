"""RemovePodSandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import call_context, possible_id

if TYPE_CHECKING:
    from cri.services import Services


def remove_pod_sandbox(
    d: Services, req: pb.RemovePodSandboxRequest, ctx: grpc.ServicerContext
) -> pb.RemovePodSandboxResponse:
    """Stop the pod if needed and delete everything it has; idempotent."""
    pod_id = req.pod_sandbox_id
    field = "RemovePodSandboxRequest.pod_sandbox_id"
    if not possible_id(pod_id, field, "the id RunPodSandbox returned"):
        return pb.RemovePodSandboxResponse()
    d.pods.remove(pod_id, call_context(ctx, f"RemovePodSandbox of {pod_id}"))
    return pb.RemovePodSandboxResponse()
