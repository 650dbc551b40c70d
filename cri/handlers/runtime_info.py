"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.errors import InvalidArgument
from base.netaddr import ip_network
from cri import config as configmod

if TYPE_CHECKING:
    from cri.services import Services

log = logging.getLogger("peapod.runtime")

RUNTIME_NAME = "peapod"
CRI_API_VERSION = "v1"


def version(d: Services, req: pb.VersionRequest, ctx: grpc.ServicerContext) -> pb.VersionResponse:
    """Name and version of the runtime and of the CRI API it speaks."""
    return pb.VersionResponse(
        version="0.1.0",
        runtime_name=RUNTIME_NAME,
        runtime_version=d.version,
        runtime_api_version=CRI_API_VERSION,
    )


def status(d: Services, req: pb.StatusRequest, ctx: grpc.ServicerContext) -> pb.StatusResponse:
    """Runtime and network readiness; verbose adds the effective configuration."""
    net_ready, net_reason, net_message = d.pods.network_ready()
    conditions = [
        pb.RuntimeCondition(type="RuntimeReady", status=True),
        pb.RuntimeCondition(
            type="NetworkReady", status=net_ready, reason=net_reason, message=net_message
        ),
    ]
    info: dict[str, str] = {}
    if req.verbose:
        info["config"] = json.dumps(configmod.to_dict(d.config))
        info["version"] = json.dumps({"runtime": RUNTIME_NAME, "version": d.version})
        info["podCIDR"] = json.dumps(d.pod_cidr)
        info["nri"] = json.dumps(d.nri.describe() if d.nri is not None else {"enabled": False})
    return pb.StatusResponse(
        status=pb.RuntimeStatus(conditions=conditions),
        info=info,
        runtime_handlers=runtime_handlers(d),
        # Merge and Strict are peapod's own work (oci/spec/user.py), for every runtime.
        features=pb.RuntimeFeatures(supplemental_groups_policy=True),
    )


def runtime_handlers(d: Services) -> list[pb.RuntimeHandler]:
    """Every configured handler with its features; "" stands for the default one."""
    out = []
    for name in ["", *d.runtimes.names()]:
        found = d.runtimes.features(name)
        features = pb.RuntimeHandlerFeatures(
            recursive_read_only_mounts=found.recursive_read_only_mounts,
            user_namespaces=found.user_namespaces,
        )
        out.append(pb.RuntimeHandler(name=name, features=features))
    return out


def runtime_config(
    d: Services, req: pb.RuntimeConfigRequest, ctx: grpc.ServicerContext
) -> pb.RuntimeConfigResponse:
    """The cgroup driver, so the kubelet can match it."""
    driver = pb.SYSTEMD if d.config.cgroup_manager == "systemd" else pb.CGROUPFS
    return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))


def update_runtime_config(
    d: Services, req: pb.UpdateRuntimeConfigRequest, ctx: grpc.ServicerContext
) -> pb.UpdateRuntimeConfigResponse:
    """Record the pod CIDR (or comma-separated CIDRs, dual-stack) the kubelet hands down."""
    cidr = req.runtime_config.network_config.pod_cidr
    if cidr:
        parts = cidr.split(",", 2)
        if len(parts) > 2:
            raise InvalidArgument(
                "UpdateRuntimeConfigRequest pod_cidr names more than two CIDRs (one per family)"
            )
        for part in parts:
            ip_network(part, "UpdateRuntimeConfigRequest pod_cidr")
    if cidr and cidr != d.pod_cidr:
        log.info("pod CIDR set", extra={"pod_cidr": cidr})
        d.pod_cidr = cidr
    return pb.UpdateRuntimeConfigResponse()
