"""RunPodSandbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.errors import FailedPrecondition, InvalidArgument
from base.text import check_text
from cri.call import call_context
from cri.convert import sandbox as sandbox_convert

if TYPE_CHECKING:
    from cri.services import Services


def run_pod_sandbox(
    d: Services, req: pb.RunPodSandboxRequest, ctx: grpc.ServicerContext
) -> pb.RunPodSandboxResponse:
    """Create and start a pod sandbox: namespaces, files, shm, cgroup, network."""
    if not req.HasField("config"):
        raise InvalidArgument("RunPodSandboxRequest.config is missing")
    handler = check_text(req.runtime_handler, "RunPodSandboxRequest.runtime_handler", 255)
    d.runtimes.get(handler)  # InvalidArgument naming the configured handlers if unknown
    config = sandbox_convert.pod_config(req.config, d.config)
    if config.userns is not None:
        why = d.runtimes.user_namespaces_refusal(handler)
        if why:
            raise FailedPrecondition(f"this node cannot run pods in their own user namespace "
                                     f"(hostUsers: false): {why}")  # fmt: skip
    name = config.metadata.sandbox_name()
    record = d.pods.run(config, handler, call_context(ctx, f"RunPodSandbox of {name}"))
    return pb.RunPodSandboxResponse(pod_sandbox_id=record.id)
