"""Valid CRI requests for every rpc peapod serves, to send as they are or to mutate.

``Targets`` names what the requests point at (a ready pod, a running container, an
image, directories the test owns); ``valid_request(rpc, targets)`` builds a request
that peapod accepts. Pod configs come from ``PodEnv.config``'s shape (unique name and
uid, namespace "test"); containers run busybox ``sleep``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import Message

from api import api_pb2 as pb

# rpc name -> (service, request class); the same names as cri.routes' tables.
RUNTIME_RPCS = {
    "Version": pb.VersionRequest, "Status": pb.StatusRequest,
    "RuntimeConfig": pb.RuntimeConfigRequest, "UpdateRuntimeConfig": pb.UpdateRuntimeConfigRequest,
    "RunPodSandbox": pb.RunPodSandboxRequest, "StopPodSandbox": pb.StopPodSandboxRequest,
    "RemovePodSandbox": pb.RemovePodSandboxRequest, "PodSandboxStatus": pb.PodSandboxStatusRequest,
    "ListPodSandbox": pb.ListPodSandboxRequest, "CreateContainer": pb.CreateContainerRequest,
    "StartContainer": pb.StartContainerRequest, "StopContainer": pb.StopContainerRequest,
    "RemoveContainer": pb.RemoveContainerRequest, "ContainerStatus": pb.ContainerStatusRequest,
    "ListContainers": pb.ListContainersRequest, "ExecSync": pb.ExecSyncRequest,
    "UpdateContainerResources": pb.UpdateContainerResourcesRequest,
    "ReopenContainerLog": pb.ReopenContainerLogRequest,
}
IMAGE_RPCS = {
    "PullImage": pb.PullImageRequest, "ImageStatus": pb.ImageStatusRequest,
    "ListImages": pb.ListImagesRequest, "ImageFsInfo": pb.ImageFsInfoRequest,
    "RemoveImage": pb.RemoveImageRequest,
}


@dataclass
class Targets:
    """What valid requests refer to."""

    pod_id: str
    container_id: str
    image: str  # a pulled image reference (host/repo:tag)
    spare_image: str  # an image reference the registry has, not pulled (PullImage pulls it)
    logs: Path  # pods' log directories are made below this
    volumes: Path  # host paths of mounts are made below this


def pod_config(targets: Targets, name: str = "pod") -> pb.PodSandboxConfig:
    """A pod on the test's CNI network, with its own log directory."""
    uid = secrets.token_hex(8)
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"{name}-{uid[:6]}", uid=uid, namespace="test"),
        hostname=f"{name}-{uid[:6]}",
        log_directory=str(targets.logs / uid),
        labels={"app": name},
        annotations={"peapod.test/purpose": "hostile"},
        dns_config=pb.DNSConfig(servers=["10.0.0.10"], searches=["test.svc"], options=["ndots:2"]),
        port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=8080)],
    )
    ns = cfg.linux.security_context.namespace_options
    ns.network, ns.pid, ns.ipc = pb.POD, pb.POD, pb.POD
    cfg.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"
    return cfg


def container_config(targets: Targets, name: str = "c") -> pb.ContainerConfig:
    """busybox sleeping, with a bind mount, env, resources and a seccomp profile."""
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=targets.image),
        command=["sleep"], args=["3600"], working_dir="/",
        envs=[pb.KeyValue(key="GREETING", value=b"hello")],
        mounts=[pb.Mount(container_path="/data", host_path=str(targets.volumes / "data"))],
        labels={"app": name}, log_path=f"{name}/0.log",
    )
    res = cfg.linux.resources
    res.cpu_shares, res.memory_limit_in_bytes, res.oom_score_adj = 256, 64 << 20, 100
    sc = cfg.linux.security_context
    sc.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
    sc.namespace_options.pid = pb.CONTAINER
    return cfg


def valid_request(rpc: str, t: Targets) -> Message:
    """A request for ``rpc`` that peapod accepts, aimed at ``t``."""
    ctr, pod = t.container_id, t.pod_id
    builders: dict[str, Message] = {
        "Version": pb.VersionRequest(version="v1"),
        "Status": pb.StatusRequest(verbose=True),
        "RuntimeConfig": pb.RuntimeConfigRequest(),
        "UpdateRuntimeConfig": pb.UpdateRuntimeConfigRequest(runtime_config=pb.RuntimeConfig(
            network_config=pb.NetworkConfig(pod_cidr="10.244.0.0/24"))),
        "RunPodSandbox": pb.RunPodSandboxRequest(config=pod_config(t)),
        "StopPodSandbox": pb.StopPodSandboxRequest(pod_sandbox_id=pod),
        "RemovePodSandbox": pb.RemovePodSandboxRequest(pod_sandbox_id=pod),
        "PodSandboxStatus": pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True),
        "ListPodSandbox": pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(
            id=pod, state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY),
            label_selector={"app": "pod"})),
        "CreateContainer": pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config(t), sandbox_config=pod_config(t)),
        "StartContainer": pb.StartContainerRequest(container_id=ctr),
        "StopContainer": pb.StopContainerRequest(container_id=ctr, timeout=1),
        "RemoveContainer": pb.RemoveContainerRequest(container_id=ctr),
        "ContainerStatus": pb.ContainerStatusRequest(container_id=ctr, verbose=True),
        "ListContainers": pb.ListContainersRequest(filter=pb.ContainerFilter(
            id=ctr, pod_sandbox_id=pod, state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING),
            label_selector={"app": "c"})),
        "ExecSync": pb.ExecSyncRequest(container_id=ctr, cmd=["echo", "hi"], timeout=5),
        "UpdateContainerResources": pb.UpdateContainerResourcesRequest(
            container_id=ctr, linux=pb.LinuxContainerResources(cpu_shares=512,
                                                               memory_limit_in_bytes=96 << 20)),
        "ReopenContainerLog": pb.ReopenContainerLogRequest(container_id=ctr),
        "PullImage": pb.PullImageRequest(image=pb.ImageSpec(image=t.spare_image),
                                         sandbox_config=pod_config(t)),
        "ImageStatus": pb.ImageStatusRequest(image=pb.ImageSpec(image=t.image), verbose=True),
        "ListImages": pb.ListImagesRequest(
            filter=pb.ImageFilter(image=pb.ImageSpec(image=t.image))),
        "ImageFsInfo": pb.ImageFsInfoRequest(),
        "RemoveImage": pb.RemoveImageRequest(image=pb.ImageSpec(image=t.spare_image)),
    }
    return builders[rpc]
