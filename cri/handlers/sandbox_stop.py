"""StopPodSandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import call_context, require

if TYPE_CHECKING:
    from cri.services import Services


def stop_pod_sandbox(
    d: Services, req: pb.StopPodSandboxRequest, ctx: grpc.ServicerContext
) -> pb.StopPodSandboxResponse:
    """Stop the pod's containers, release its network, kill its infra process; idempotent."""
    pod_id = require(req.pod_sandbox_id, "StopPodSandboxRequest.pod_sandbox_id",
                     "the id RunPodSandbox returned")
    d.pods.stop(pod_id, call_context(ctx, f"StopPodSandbox of {pod_id}"))
    return pb.StopPodSandboxResponse()
