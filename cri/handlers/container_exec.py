"""ExecSync: run a command in a running container and return its output."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.errors import InvalidArgument
from cri.call import call_context, require

if TYPE_CHECKING:
    from cri.services import Services


def exec_sync(
    d: Services, req: pb.ExecSyncRequest, ctx: grpc.ServicerContext
) -> pb.ExecSyncResponse:
    """Run ``cmd``; a non-zero exit code or a timeout (-1) is a result, not an error."""
    ctr_id = require(req.container_id, "ExecSyncRequest.container_id", "a container id")
    if not req.cmd:
        raise InvalidArgument("ExecSyncRequest.cmd is empty; give the command to run")
    if req.timeout < 0:
        raise InvalidArgument(f"ExecSyncRequest.timeout {req.timeout} is negative")
    result = d.containers.exec_sync(
        ctr_id, list(req.cmd), req.timeout, call_context(ctx, f"exec in container {ctr_id}")
    )
    return pb.ExecSyncResponse(
        stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
    )
