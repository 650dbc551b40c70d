"""Start a real peapod daemon for a test and talk to it over its socket."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from api import api_pb2, api_pb2_grpc

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registries_conf_text(insecure_hosts: list[str], extra: str = "") -> str:
    """A registries.conf v2 marking the test registries insecure (plain HTTP on loopback)."""
    lines = ["unqualified-search-registries = []", ""]
    for host in insecure_hosts:
        lines += ["[[registry]]", f'location = "{host}"', "insecure = true", ""]
    return "\n".join(lines) + extra


class Peapod:
    """One peapod process with its own root, runroot, socket and metrics port."""

    def __init__(
        self,
        base: Path | None = None,
        config: dict[str, Any] | None = None,
        registries_conf: str = "",
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = dict(env or {})  # added to the daemon's environment
        self.base = base or Path(tempfile.mkdtemp(prefix="peapod-test-"))
        # Searchable (not listable) by others, as /run is: the runtime reaches the rootfs of
        # a user-namespaced container as the pod's root, not as host root.
        self.base.chmod(0o711)
        self.root = self.base / "root"
        self.runroot = self.base / "run"
        self.socket = self.runroot / "peapod.sock"
        self.config_file = self.base / "peapod.yaml"
        self.config_dir = self.base / "peapod.yaml.d"
        self.registries_conf = self.base / "registries.conf"
        self.log_path = self.base / "peapod.log"
        self.metrics_port = free_port()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.registries_conf.write_text(registries_conf)
        cfg: dict[str, Any] = {
            "listen": str(self.socket),
            "root": str(self.root),
            "runroot": str(self.runroot),
            "log_level": "debug",
            "metrics": {"address": f"127.0.0.1:{self.metrics_port}"},
            "image": {
                "registries_conf": str(self.registries_conf),
                "registries_conf_dir": str(self.base / "registries.conf.d"),
                "certs_dir": str(self.base / "certs.d"),
            },
            # No CNI config unless a test provides one: the host's /etc/cni/net.d is not used.
            "network": {"network_dir": str(self.base / "net.d")},
            # NRI on, but on a socket of its own and with no host plugins.
            "nri": {"socket_path": str(self.runroot / "nri.sock"),
                    "plugin_dirs": [str(self.base / "nri-plugins")],
                    "plugin_config_dir": str(self.base / "nri-conf.d")},
        }
        _deep_update(cfg, config or {})
        self.config_file.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    # ------------------------------------------------------------ lifecycle
    def command(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cri.main",
            "run",
            "--config",
            str(self.config_file),
            "--config-dir",
            str(self.config_dir),
            *extra,
        ]

    def start(self, *extra: str, timeout: float = 20, new_session: bool = False) -> Peapod:
        """Start and wait for Version; ``new_session`` keeps a terminal's Ctrl-C off it."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(*extra), cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env}, start_new_session=new_session,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"peapod exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists():
                try:
                    self.runtime.Version(api_pb2.VersionRequest(), timeout=1)
                    return self
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"peapod did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Stop the daemon with ``sig``; returns its exit status."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def cleanup(self) -> None:
        self.stop(signal.SIGKILL if self.proc and self.proc.poll() is None else signal.SIGTERM)
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # ------------------------------------------------------------ clients
    def _channel(self) -> grpc.Channel:
        if self.channel is None:
            self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        return self.channel

    @property
    def runtime(self) -> api_pb2_grpc.RuntimeServiceStub:
        return api_pb2_grpc.RuntimeServiceStub(self._channel())

    @property
    def images(self) -> api_pb2_grpc.ImageServiceStub:
        return api_pb2_grpc.ImageServiceStub(self._channel())

    def metrics_text(self) -> str:
        import urllib.request

        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            return resp.read().decode()


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    want = labels or {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        got = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part)
        got = {k: v.strip('"') for k, v in got.items()}
        if all(got.get(k) == v for k, v in want.items()):
            return float(value)
    return 0.0


def _deep_update(into: dict[str, Any], data: dict[str, Any]) -> None:
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


def running_as_root() -> bool:
    return os.geteuid() == 0
