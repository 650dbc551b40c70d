"""A CRI v1 client for benchmarks: any endpoint, the calls a kubelet makes for a pod.

Nothing here knows which runtime answers; the same calls measure peapod, containerd,
CRI-O or any other CRI runtime given its socket. Two kubelet habits some runtimes depend
on are kept: ImageSpec.user_specified_image is set (CRI-O refuses a create without it
when a signature policy is set), and the pod's and the container's log directories exist
before RunPodSandbox and CreateContainer (conmon does not create them).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import grpc

from api import api_pb2 as pb
from api import api_pb2_grpc


def channel_target(endpoint: str) -> str:
    """A gRPC target from `unix:///path`, `unix:/path` or a bare socket path."""
    if endpoint.startswith("unix://"):
        return "unix:" + endpoint[len("unix://") :]
    if endpoint.startswith("unix:"):
        return endpoint
    if endpoint.startswith("/"):
        return "unix:" + endpoint
    return endpoint


RUN_LABEL = "io.peapod.bench.run"  # set on every pod and container a run creates


class CriDriver:
    """Kubelet-shaped calls on one CRI endpoint."""

    def __init__(
        self, endpoint: str, log_root: Path, cgroup_root: str, run_tag: str, timeout: float = 120
    ) -> None:
        self.endpoint = endpoint
        self.run_tag = run_tag
        self.log_root = log_root
        self.cgroup_root = cgroup_root.strip("/")
        self.timeout = timeout
        self.channel = grpc.insecure_channel(channel_target(endpoint))
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.images = api_pb2_grpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    # ------------------------------------------------------------ runtime info
    def version(self) -> pb.VersionResponse:
        return self.runtime.Version(pb.VersionRequest(), timeout=10)

    def wait_ready(self, timeout: float = 30) -> None:
        """Until Version answers and RuntimeReady and NetworkReady are true."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                status = self.runtime.Status(pb.StatusRequest(), timeout=2).status
                conds = {c.type: c for c in status.conditions}
                if all(
                    conds.get(t) is not None and conds[t].status
                    for t in ("RuntimeReady", "NetworkReady")
                ):
                    return
                last = "; ".join(
                    f"{c.type}={c.status} {c.reason} {c.message}" for c in status.conditions
                )
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            time.sleep(0.1)
        raise RuntimeError(f"{self.endpoint} not ready after {timeout}s: {last}")

    # ------------------------------------------------------------ images
    def pull(self, image: str) -> str:
        req = pb.PullImageRequest(image=pb.ImageSpec(image=image, user_specified_image=image))
        return str(self.images.PullImage(req, timeout=self.timeout).image_ref)

    def remove_image(self, image: str) -> None:
        self.images.RemoveImage(
            pb.RemoveImageRequest(image=pb.ImageSpec(image=image)), timeout=self.timeout
        )

    def has_image(self, image: str) -> bool:
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image=image))
        return self.images.ImageStatus(req, timeout=10).HasField("image")

    # ------------------------------------------------------------ pods
    def pod_config(self, name: str) -> pb.PodSandboxConfig:
        uid = secrets.token_hex(8)
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="bench", attempt=0),
            hostname=name[:63],
            log_directory=str(self.log_root / f"bench_{name}_{uid}"),
            labels={RUN_LABEL: self.run_tag},
        )
        cfg.linux.cgroup_parent = f"/{self.cgroup_root}/pod{uid}"
        cfg.linux.security_context.namespace_options.network = pb.POD
        cfg.linux.security_context.namespace_options.pid = pb.CONTAINER
        cfg.linux.security_context.namespace_options.ipc = pb.POD
        return cfg

    def run_pod(self, cfg: pb.PodSandboxConfig) -> str:
        Path(cfg.log_directory).mkdir(parents=True, exist_ok=True)  # as the kubelet does
        req = pb.RunPodSandboxRequest(config=cfg)
        return str(self.runtime.RunPodSandbox(req, timeout=self.timeout).pod_sandbox_id)

    def create_container(
        self, pod_id: str, pod_cfg: pb.PodSandboxConfig, image: str, command: list[str]
    ) -> str:
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="main", attempt=0),
            image=pb.ImageSpec(image=image, user_specified_image=image),
            command=command,
            log_path="main/0.log",
            labels={RUN_LABEL: self.run_tag},
        )
        # As the kubelet does: <pod log directory>/<container name>/ exists before the
        # create, and the log path is inside it.
        (Path(pod_cfg.log_directory) / cfg.metadata.name).mkdir(parents=True, exist_ok=True)
        # As the kubelet does: the container's namespace modes are the pod's.
        cfg.linux.security_context.namespace_options.CopyFrom(
            pod_cfg.linux.security_context.namespace_options
        )
        req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pod_cfg)
        return str(self.runtime.CreateContainer(req, timeout=self.timeout).container_id)

    def start_container(self, container_id: str) -> None:
        self.runtime.StartContainer(
            pb.StartContainerRequest(container_id=container_id), timeout=self.timeout
        )

    def stop_pod(self, pod_id: str) -> None:
        self.runtime.StopPodSandbox(
            pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=self.timeout
        )

    def remove_pod(self, pod_id: str) -> None:
        self.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=self.timeout
        )

    def stop_container(self, container_id: str, grace: int = 0) -> None:
        req = pb.StopContainerRequest(container_id=container_id, timeout=grace)
        self.runtime.StopContainer(req, timeout=self.timeout)

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 10) -> int:
        req = pb.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout)
        return int(self.runtime.ExecSync(req, timeout=self.timeout).exit_code)

    def pod_status(self, pod_id: str) -> pb.PodSandboxStatusResponse:
        return self.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id),
                                             timeout=10)

    def container_status(
        self, container_id: str, verbose: bool = False
    ) -> pb.ContainerStatusResponse:
        req = pb.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return self.runtime.ContainerStatus(req, timeout=10)

    def list_containers(self) -> list[pb.Container]:
        return list(self.runtime.ListContainers(pb.ListContainersRequest(), timeout=10).containers)

    def list_pods(self) -> list[pb.PodSandbox]:
        return list(self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items)

    def run_pods(self) -> list[pb.PodSandbox]:
        """This run's pods (by label); other pods on the endpoint are not touched."""
        flt = pb.PodSandboxFilter(label_selector={RUN_LABEL: self.run_tag})
        req = pb.ListPodSandboxRequest(filter=flt)
        return list(self.runtime.ListPodSandbox(req, timeout=10).items)

    def remove_all_pods(self) -> list[str]:
        """Stop and remove this run's pods, each on its own; returns the failures."""
        failures = []
        for pod in self.run_pods():
            try:
                self.stop_pod(pod.id)
                self.remove_pod(pod.id)
            except grpc.RpcError as err:
                failures.append(f"pod {pod.id}: {err.code().name}: {err.details()}")
        return failures
