"""A daemon for container tests of one module: runc, a loopback-only CNI network, and helpers.

``ContainerEnv`` starts a peapod under its own temporary directory and cgroup parent,
pulls the images a module names, and knows what the daemon may leave on the host
(mounts, processes, runtime state, container dirs); ``sweep`` puts the host back.
The ``container_env`` context manager runs a module's daemon and always sweeps.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from api import api_pb2 as pb
from support.daemon import Peapod, registries_conf_text
from support.daemon_leftovers import DaemonLeftovers
from support.registry import Registry

RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin") or "/usr/sbin/runc"
PLUGIN_DIR = "/usr/lib/cni"


class ContainerEnv(DaemonLeftovers):
    """One module's daemon, its directories, and the checks on what it leaves."""

    def __init__(
        self, registry: Registry, prefix: str, config: dict[str, Any] | None = None
    ) -> None:
        self.tag = secrets.token_hex(3)
        self.base = Path(tempfile.mkdtemp(prefix=f"peapod-{prefix}-"))
        self.cgroup_parent = f"peapod-{prefix}-{self.tag}"
        self.logs = self.base / "logs"
        net = self.base / "net.d"
        for d in (self.logs, net):
            d.mkdir()
        (net / "10-lo.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": f"pp-{prefix}-{self.tag}",
            "plugins": [{"type": "loopback"}],
        }))  # fmt: skip
        self.runc_root = self.base / "run" / "runtimes" / "runc"
        self.peapod = Peapod(
            self.base,
            registries_conf=registries_conf_text([registry.host]),
            config={
                "network": {"network_dir": str(net), "plugin_dirs": [PLUGIN_DIR]},
                "sandbox": {"default_cgroup_parent": self.cgroup_parent},
                "runtime": {"runtimes": {"runc": {"runtime_path": RUNC}}},
                **(config or {}),  # more sections of the daemon's config
            },
        )

    @property
    def rt(self) -> Any:
        return self.peapod.runtime

    @property
    def img(self) -> Any:
        return self.peapod.images

    # ---- images, pods and containers -----------------------------------------
    def pull(self, ref: str) -> str:
        """Pull ``ref``; its image ID."""
        req = pb.PullImageRequest(image=pb.ImageSpec(image=ref))
        return str(self.img.PullImage(req, timeout=60).image_ref)

    def remove_image(self, ref: str) -> None:
        self.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=30)

    def image_present(self, ref: str) -> bool:
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))
        return self.img.ImageStatus(req, timeout=10).HasField("image")

    def pod(self) -> str:
        uid = secrets.token_hex(6)
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"p{uid}", uid=uid, namespace="test"),
            log_directory=str(self.logs / uid),
        )
        cfg.linux.security_context.namespace_options.network = pb.NODE
        req = pb.RunPodSandboxRequest(config=cfg)
        return str(self.rt.RunPodSandbox(req, timeout=60).pod_sandbox_id)

    def create(self, pod: str, image: str, command: list[str], *, name: str = "c",
               linux: pb.LinuxContainerConfig | None = None, **config: Any) -> str:  # fmt: skip
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=image),
            command=command,
            log_path=f"{name}/0.log",
            **config,
        )
        if linux is not None:
            cfg.linux.CopyFrom(linux)
        req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg)
        return str(self.rt.CreateContainer(req, timeout=60).container_id)

    def start(self, ctr: str) -> None:
        self.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)

    def run(self, pod: str, image: str, command: list[str], **kw: Any) -> str:
        ctr = self.create(pod, image, command, **kw)
        self.start(ctr)
        return ctr

    def status(self, ctr: str) -> pb.ContainerStatus:
        req = pb.ContainerStatusRequest(container_id=ctr)
        return self.rt.ContainerStatus(req, timeout=10).status

    def exec(self, ctr: str, cmd: list[str]) -> pb.ExecSyncResponse:
        req = pb.ExecSyncRequest(container_id=ctr, cmd=cmd, timeout=30)
        return self.rt.ExecSync(req, timeout=60)

    def sh(self, ctr: str, script: str) -> str:
        got = self.exec(ctr, ["sh", "-c", script])
        assert got.exit_code == 0, got.stderr
        return got.stdout.decode()

    def remove(self, ctr: str) -> None:
        self.rt.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=0), timeout=30)
        self.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr), timeout=30)

    def containers(self) -> list[pb.Container]:
        return list(self.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers)

    def remove_all(self) -> None:
        items = self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items
        for item in items:
            self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=item.id),
                                     timeout=60)  # fmt: skip

    # ---- what is left on the host --------------------------------------------
    def runtime_roots(self) -> list[Path]:
        return [self.runc_root]

    def leftovers(self) -> dict[str, list[Any]]:
        runtime = [p.name for p in self.runc_root.iterdir()] if self.runc_root.is_dir() else []
        found = {
            "mounts": self.mounts(),
            "processes": self.our_processes(),
            "runtime state": runtime,
            "container dirs": self.container_dirs(),
        }
        return {k: v for k, v in found.items() if v}

    def container_leftovers(self) -> dict[str, list[Any]]:
        """What containers left while their pods still exist: their mounts and dirs."""
        dirs = (str(self.peapod.root / "containers"), str(self.peapod.runroot / "containers"))
        runtime = [p.name for p in self.runc_root.iterdir()] if self.runc_root.is_dir() else []
        found = {
            "mounts": [m for m in self.mounts() if m.startswith(dirs)],
            "runtime state": runtime,
            "container dirs": self.container_dirs(),
        }
        return {k: v for k, v in found.items() if v}


@contextmanager
def container_env(
    registry: Registry, prefix: str, images: list[str], config: dict[str, Any] | None = None
) -> Iterator[ContainerEnv]:
    """A started ContainerEnv with ``images`` pulled; swept afterwards whatever happened.

    ``config`` adds top-level sections to the daemon's configuration (e.g. ``events``).
    """
    if os.geteuid() != 0:
        raise RuntimeError("container tests need root (mounts, cgroups, namespaces)")
    for path in (RUNC, f"{PLUGIN_DIR}/loopback"):
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} is missing; run deploy/setup.sh test")
    env = ContainerEnv(registry, prefix, config)
    try:
        env.peapod.start()
        for ref in images:
            env.pull(ref)
        yield env
    finally:
        env.sweep()
