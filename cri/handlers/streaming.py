"""Exec, Attach and PortForward: validate the request, hand out a single-use streaming URL.

The session itself runs when the client connects to that URL (``cri.streaming``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.errors import FailedPrecondition, InvalidArgument
from base.text import check_no_nul
from cri.call import object_id
from cri.streaming.requests import ATTACH, EXEC, PORTFORWARD, StreamRequest
from oci.container.record import RUNNING
from oci.spec.executable import check_executable
from sandbox.record import READY

if TYPE_CHECKING:
    from cri.services import Services


def _check_streams(rpc: str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if not (stdin or stdout or stderr):
        raise InvalidArgument(f"{rpc}: ask for at least one of stdin, stdout and stderr")
    if tty and stderr:
        raise InvalidArgument(
            f"{rpc}: tty and stderr cannot both be set (a terminal has one output stream)"
        )


def _running(d: Services, ctr_id: str, what: str) -> str:
    rec = d.containers.status(ctr_id)
    if rec.state != RUNNING:
        raise FailedPrecondition(f"cannot {what} container {rec.id}: it is {rec.state}")
    return rec.id


def exec_(d: Services, req: pb.ExecRequest, ctx: grpc.ServicerContext) -> pb.ExecResponse:
    """A URL that runs ``cmd`` in the running container with the asked-for streams."""
    ctr_id = object_id(req.container_id, "ExecRequest.container_id", "a container id")
    if not req.cmd or not req.cmd[0]:
        raise InvalidArgument("ExecRequest.cmd is empty; give the command to run")
    for arg in req.cmd:
        check_no_nul(arg, "ExecRequest.cmd argument")
    _check_streams("ExecRequest", req.tty, req.stdin, req.stdout, req.stderr)
    full_id = _running(d, ctr_id, "exec in")
    rec = d.containers.status(full_id)
    check_executable(d.containers.spec(rec), rec.rootfs, list(req.cmd))
    url = d.streams.url(StreamRequest(EXEC, full_id, tuple(req.cmd), req.tty, req.stdin,
                                      req.stdout, req.stderr))  # fmt: skip
    return pb.ExecResponse(url=url)


def attach(d: Services, req: pb.AttachRequest, ctx: grpc.ServicerContext) -> pb.AttachResponse:
    """A URL attaching to the running container's stdio through its conmon."""
    ctr_id = object_id(req.container_id, "AttachRequest.container_id", "a container id")
    _check_streams("AttachRequest", req.tty, req.stdin, req.stdout, req.stderr)
    full_id = _running(d, ctr_id, "attach to")
    url = d.streams.url(StreamRequest(ATTACH, full_id, (), req.tty, req.stdin, req.stdout,
                                      req.stderr))  # fmt: skip
    return pb.AttachResponse(url=url)


def port_forward(
    d: Services, req: pb.PortForwardRequest, ctx: grpc.ServicerContext
) -> pb.PortForwardResponse:
    """A URL forwarding TCP connections to ports of the ready pod's network namespace."""
    pod_id = object_id(req.pod_sandbox_id, "PortForwardRequest.pod_sandbox_id", "a pod sandbox id")
    for port in req.port:
        if not 1 <= port <= 65535:
            raise InvalidArgument(f"PortForwardRequest.port {port} is outside 1-65535")
    pod = d.pods.get(pod_id)
    if pod.state != READY:
        raise FailedPrecondition(f"cannot forward ports of pod sandbox {pod.id}: it is {pod.state}")
    url = d.streams.url(StreamRequest(PORTFORWARD, pod.id, ports=tuple(req.port)))
    return pb.PortForwardResponse(url=url)
