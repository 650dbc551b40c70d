"""ExecSync: run a command in a running container and return its output."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.errors import InvalidArgument
from base.text import check_no_nul
from conmon.argv import MAX_EXEC_TIMEOUT
from cri.call import call_context, object_id
from oci.container.record import RUNNING
from oci.spec.executable import check_executable

if TYPE_CHECKING:
    from cri.services import Services


def exec_sync(
    d: Services, req: pb.ExecSyncRequest, ctx: grpc.ServicerContext
) -> pb.ExecSyncResponse:
    """Run ``cmd``; a non-zero exit code or a timeout (-1) is a result, not an error."""
    ctr_id = object_id(req.container_id, "ExecSyncRequest.container_id", "a container id")
    if not req.cmd:
        raise InvalidArgument("ExecSyncRequest.cmd is empty; give the command to run")
    for arg in req.cmd:
        check_no_nul(arg, "ExecSyncRequest.cmd argument")
    if not 0 <= req.timeout <= MAX_EXEC_TIMEOUT:
        raise InvalidArgument(
            f"ExecSyncRequest.timeout {req.timeout} is outside 0-{MAX_EXEC_TIMEOUT} seconds "
            "(0: no timeout)"
        )
    rec = d.containers.status(ctr_id)
    if rec.state == RUNNING:
        # A missing command is the caller's error; runc would report it as its own failure.
        check_executable(d.containers.spec(rec), rec.rootfs, list(req.cmd))
    result = d.containers.exec_sync(
        ctr_id, list(req.cmd), req.timeout, call_context(ctx, f"exec in container {ctr_id}")
    )
    return pb.ExecSyncResponse(
        stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
    )
