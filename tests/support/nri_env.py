"""A peapod with NRI for the tests: its socket, plugin directory, and test plugins to run.

``NRIEnv`` is a daemon (host-network pods, runc) whose NRI timeouts are short, with
helpers to start ``tests/support/nri_plugin.py`` on its socket or from its plugin
directory, read a plugin's event log, and check what is left on the host.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from api import api_pb2 as pb
from support.daemon import REPO, Peapod, registries_conf_text
from support.daemon_leftovers import RUNC, DaemonLeftovers

PLUGIN = REPO / "tests" / "support" / "nri_plugin.py"
REQUEST_TIMEOUT = 1.0
REGISTRATION_TIMEOUT = 3.0


class RunningPlugin:
    """One running test plugin (external, on the daemon's NRI socket)."""

    def __init__(self, env: NRIEnv, name: str, idx: str, settings: dict[str, Any]) -> None:
        self.name, self.idx = name, idx
        tag = f"{idx}-{name}-{secrets.token_hex(3)}"
        self.log = env.base / f"plugin-{tag}.log"
        self.control = env.base / f"control-{tag}"  # markers: fail-, sleep-, crash-<Method>
        self.control.mkdir()
        cfg = {"log": str(self.log), "control": str(self.control), **settings}
        self.proc = subprocess.Popen(
            [sys.executable, str(PLUGIN), "--socket", str(env.nri_socket), "--name", name,
             "--idx", idx, "--config", json.dumps(cfg)], stdin=subprocess.DEVNULL)

    @property
    def full_name(self) -> str:
        return f"{self.idx}-{self.name}"

    def marker(self, kind: str, method: str, text: str = "") -> None:
        (self.control / f"{kind}-{method}").write_text(text)

    def unmark(self, kind: str, method: str) -> None:
        (self.control / f"{kind}-{method}").unlink(missing_ok=True)

    def entries(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(line) for line in self.log.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def events(self, **match: str) -> list[str]:
        """The methods called, in order, of entries whose fields equal ``match``."""
        return [e["event"] for e in self.entries()
                if all(e.get(k) == v for k, v in match.items())]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class NRIEnv(DaemonLeftovers):
    """The daemon, its directories and cgroup parent, its plugins."""

    def __init__(self, registry_host: str, **nri: Any) -> None:
        self.tag = secrets.token_hex(3)
        self.base = Path(tempfile.mkdtemp(prefix="peapod-nri-"))
        self.cgroup_parent = f"peapod-nri-{self.tag}"
        self.plugin_dir = self.base / "nri-plugins"
        self.conf_dir = self.base / "nri-conf.d"
        for d in (self.plugin_dir, self.conf_dir, self.base / "logs"):
            d.mkdir()
        self.runtime_root = self.base / "run" / "runtimes" / "runc"
        self.peapod = Peapod(self.base, registries_conf=registries_conf_text([registry_host]),
                             config={
            "sandbox": {"default_cgroup_parent": self.cgroup_parent},
            "runtime": {"runtimes": {"runc": {"runtime_path": RUNC}}},
            "nri": {"plugin_request_timeout": REQUEST_TIMEOUT,
                    "plugin_registration_timeout": REGISTRATION_TIMEOUT, **nri},
        })
        self.nri_socket = self.peapod.runroot / "nri.sock"
        self.plugins: list[RunningPlugin] = []

    @property
    def rt(self) -> Any:
        return self.peapod.runtime

    # ---- plugins ----------------------------------------------------------
    def plugin(self, name: str = "test", idx: str = "10", wait: bool = True,
               **settings: Any) -> RunningPlugin:
        p = RunningPlugin(self, name, idx, settings)
        self.plugins.append(p)
        if wait:
            self.wait_plugin(p.full_name)
        return p

    def install(self, name: str, idx: str, settings: dict[str, Any]) -> Path:
        """Put a test plugin in the plugin directory, with its .conf; returns its log."""
        log = self.base / f"plugin-{idx}-{name}.log"
        script = self.plugin_dir / f"{idx}-{name}"
        script.write_text(f"#!/bin/sh\nexec {sys.executable} {PLUGIN}\n")
        script.chmod(0o755)
        (self.conf_dir / f"{idx}-{name}.conf").write_text(json.dumps({"log": str(log),
                                                                       **settings}))
        return log

    def nri_status(self) -> dict[str, Any]:
        info = self.rt.Status(pb.StatusRequest(verbose=True), timeout=10).info
        return dict(json.loads(info["nri"]))

    def ready_plugins(self) -> list[str]:
        return [p["name"] for p in self.nri_status()["plugins"] if p["ready"]]

    def wait_plugin(self, name: str, present: bool = True, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while (name in self.ready_plugins()) != present:
            if time.monotonic() > deadline:
                state = "ready" if present else "gone"
                raise AssertionError(f"plugin {name} not {state}; NRI: {self.nri_status()}\n"
                                     f"{self.peapod.log_tail(20)}")
            time.sleep(0.05)

    def stop_plugins(self) -> None:
        for p in self.plugins:
            p.stop()
        self.plugins.clear()

    # ---- pods and containers -------------------------------------------------
    def pod_config(self, name: str = "p") -> pb.PodSandboxConfig:
        uid = secrets.token_hex(6)
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"{name}{uid}", uid=uid, namespace="test"),
            log_directory=str(self.base / "logs" / uid))
        cfg.linux.security_context.namespace_options.network = pb.NODE
        return cfg

    def pod(self, cfg: pb.PodSandboxConfig | None = None) -> str:
        req = pb.RunPodSandboxRequest(config=cfg or self.pod_config())
        return str(self.rt.RunPodSandbox(req, timeout=60).pod_sandbox_id)

    def create(self, pod: str, image: str, command: list[str], name: str = "c",
               pod_cfg: pb.PodSandboxConfig | None = None) -> str:
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                 image=pb.ImageSpec(image=image), command=command,
                                 log_path=f"{name}/0.log")
        req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg,
                                        sandbox_config=pod_cfg or self.pod_config())
        return str(self.rt.CreateContainer(req, timeout=60).container_id)

    def start(self, ctr: str) -> None:
        self.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)

    def sh(self, ctr: str, script: str) -> str:
        got = self.rt.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["sh", "-c", script]),
                               timeout=30)
        assert got.exit_code == 0, got.stderr
        return str(got.stdout.decode())

    def pods(self) -> list[pb.PodSandbox]:
        return list(self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items)

    def containers(self) -> list[pb.Container]:
        return list(self.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers)

    def remove_all(self) -> None:
        for item in self.pods():
            self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=item.id),
                                     timeout=60)

    def runtime_roots(self) -> list[Path]:
        return [self.runtime_root]

    def leftovers(self) -> dict[str, list[Any]]:
        found = {"mounts": self.mounts(), "processes": self.our_processes(),
                 "container dirs": self.container_dirs(),
                 "runtime state": ([p.name for p in self.runtime_root.iterdir()]
                                   if self.runtime_root.is_dir() else [])}
        return {k: v for k, v in found.items() if v}

    def restart(self, **nri: Any) -> None:
        """Stop the daemon (SIGTERM) and start it again, with ``nri`` options changed."""
        self.peapod.stop(signal.SIGTERM)
        drop_in = self.peapod.config_dir / "50-nri.yaml"
        if nri:
            drop_in.write_text(json.dumps({"nri": nri}))
        else:
            drop_in.unlink(missing_ok=True)
        self.peapod.start()

    def sweep(self) -> None:
        self.stop_plugins()
        super().sweep()
