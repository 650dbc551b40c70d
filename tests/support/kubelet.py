"""A real kubelet in standalone mode (static pods, no API server) against a CRI socket.

``Kubelet`` writes a KubeletConfiguration whose every path lies in its own temporary
folder (root-dir, static pod manifests, podLogsDir, cert dir, volume plugin dir,
resolv.conf), starts the binary ``deploy/build-clients.sh`` built, and reads its
endpoints: ``/pods`` and ``/healthz`` on the read-only port, ``/metrics``, and the
authenticated port (anonymous, AlwaysAllow) for the debugging handlers.

Two kubelet paths are not configurable (``/var/lib/kubelet/device-plugins`` and the
``/var/log/containers`` symlinks): the kubelet runs in a mount namespace of its own
(propagation slave) where both are bind mounts of folders in its temporary folder, so
nothing of it lands there, and a kubelet the host may run keeps its sockets.
``support.kubelet_host.KubeletHost`` records and restores what it changes host-wide.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
)

from support.daemon import REPO
from support.ports import free_port

CLIENTS_DIR = Path(os.environ.get("PEAPOD_CLIENTS_DIR", REPO / ".cache" / "clients"))
# Host paths the kubelet writes to whatever its configuration says.
FIXED_PATHS = ("/var/lib/kubelet", "/var/log/containers")


def kubelet_binary() -> Path:
    """The kubelet deploy/build-clients.sh built; a clear error if it is missing."""
    path = CLIENTS_DIR / "kubelet"
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"no kubelet at {path}: run deploy/build-clients.sh "
                           "(deploy/setup.sh test does) or set PEAPOD_CLIENTS_DIR")
    return path


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _nofile_hard_limit() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1_000_000 if hard == resource.RLIM_INFINITY else min(hard, 1_000_000)


def kubelet_config(endpoint: str, dirs: dict[str, Path], ports: dict[str, int],
                   cgroup_root: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A KubeletConfiguration for a standalone node on a busy test host.

    Eviction is off (a loaded VM must not evict the test's pods), image GC is off,
    crash-loop back-off is capped at a few seconds, and the cgroup driver is peapod's
    (cgroupfs). ``failCgroupV1: false`` lets it run on this v1/hybrid host.
    """
    cfg: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{cgroup_root}",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failCgroupV1": False,
        "failSwapOn": False,
        "staticPodPath": str(dirs["manifests"]),
        "fileCheckFrequency": "2s",
        "syncFrequency": "10s",
        "podLogsDir": str(dirs["pod-logs"]),
        "volumePluginDir": str(dirs["volume-plugins"]),
        "resolvConf": str(dirs["resolv.conf"]),
        "address": "127.0.0.1",
        "port": ports["port"],
        "readOnlyPort": ports["read-only"],
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["healthz"],
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False},
                           "x509": {}},
        "authorization": {"mode": "AlwaysAllow"},
        "serializeImagePulls": True,
        "evictionHard": {signal: "0%" for signal in (
            "memory.available", "nodefs.available", "nodefs.inodesFree",
            "imagefs.available", "imagefs.inodesFree")},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "containerLogMaxSize": "1Mi",
        "containerLogMaxFiles": 2,
        "crashLoopBackOff": {"maxContainerRestartPeriod": "4s"},
        # The kubelet's own oom_score_adj of -999 needs CAP_SYS_RESOURCE, which this
        # host's bounding set lacks.
        "oomScoreAdj": 0,
        # Its default of 10^6 open files is above this host's hard limit, which it cannot
        # raise without CAP_SYS_RESOURCE either.
        "maxOpenFiles": _nofile_hard_limit(),
        "logging": {"format": "text"},
    }
    cfg.update(overrides or {})
    return cfg


class Kubelet:
    """One kubelet process, its configuration, folders and HTTP endpoints."""

    def __init__(self, endpoint: str, cgroup_root: str, node_name: str = "peapod-node",
                 base: Path | None = None, overrides: dict[str, Any] | None = None,
                 gc_flags: tuple[str, ...] = ()) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="peapod-kubelet-"))
        self.node_name = node_name
        self.cgroup_root = cgroup_root
        self.dirs = {name: self.base / name for name in (
            "root", "manifests", "pod-logs", "volume-plugins", "certs",
            "var-lib-kubelet", "var-log-containers")}
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        self.dirs["resolv.conf"] = self.base / "resolv.conf"
        self.dirs["resolv.conf"].write_text(
            "nameserver 192.0.2.53\nsearch peapod.test\noptions ndots:2\n")
        self.ports = {"port": free_port(), "read-only": free_port(), "healthz": free_port()}
        self.config_path = self.base / "kubelet-config.yaml"
        self.config = kubelet_config(endpoint, self.dirs, self.ports, cgroup_root, overrides)
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.log_path = self.base / "kubelet.log"
        self.gc_flags = gc_flags
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------ process
    def command(self) -> list[str]:
        """unshare + bind mounts of the fixed paths, then the kubelet."""
        script = ("mount --bind \"$1\" /var/lib/kubelet && "
                  "mount --bind \"$2\" /var/log/containers && shift 2 && exec \"$@\"")
        return [
            "unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script, "sh",
            str(self.dirs["var-lib-kubelet"]), str(self.dirs["var-log-containers"]),
            str(kubelet_binary()), f"--config={self.config_path}",
            f"--root-dir={self.dirs['root']}", f"--cert-dir={self.dirs['certs']}",
            f"--hostname-override={self.node_name}", *self.gc_flags, "--v=2",
        ]

    def start(self, timeout: float = 60) -> Kubelet:
        """Start it; return once /healthz answers ok and its three ports accept
        connections (it opens them one by one)."""
        for path in FIXED_PATHS:
            if not Path(path).is_dir():
                raise RuntimeError(f"{path} must exist for the kubelet's bind mount "
                                   "(support.kubelet_host.KubeletHost makes it)")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kubelet exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if self.healthy() and all(map(_listening, self.ports.values())):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"kubelet not healthy within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (SIGKILL after ``timeout``); returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code, self.proc = self.proc.returncode, None
        return code

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> list[str]:
        """Kill the kubelet and delete its folder (pods and host state are the caller's);
        what could not be deleted."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        failed: list[str] = []
        shutil.rmtree(self.base, onerror=lambda _f, path, exc: failed.append(f"{path}: {exc[1]}"))
        return failed

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------ manifests
    def manifest_path(self, name: str) -> Path:
        return self.dirs["manifests"] / f"{name}.yaml"

    def write_manifest(self, name: str, pod: dict[str, Any]) -> None:
        """Write a static pod manifest atomically (the kubelet ignores dot files)."""
        tmp = self.dirs["manifests"] / f".{name}.tmp"
        tmp.write_text(yaml.safe_dump(pod, sort_keys=False))
        tmp.rename(self.manifest_path(name))

    def remove_manifest(self, name: str) -> None:
        self.manifest_path(name).unlink(missing_ok=True)

    # ------------------------------------------------------------ endpoints
    def _get(self, url: str, timeout: float = 10,
             context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    def read_only(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` on the read-only port (plain HTTP)."""
        return self._get(f"http://127.0.0.1:{self.ports['read-only']}{path}")

    def secure(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        """``method`` ``path`` on the authenticated port as an anonymous user."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        req = urllib.request.Request(f"https://127.0.0.1:{self.ports['port']}{path}",
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read()

    def websocket(self, path: str, protocol: str, send: tuple[tuple[int, bytes], ...] = (),
                  until: Callable[[dict[int, bytes]], bool] | None = None,
                  timeout: float = 30) -> dict[int, bytes]:
        """A WebSocket session on the authenticated port, as kubectl exec or port-forward
        opens one: ``send`` is written once it is accepted (channel, data); returns what
        arrived per channel (a message's first byte) when the kubelet closes it or
        ``until`` holds. Channel -1 holds the status and body of a refused upgrade."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        host = f"127.0.0.1:{self.ports['port']}"
        raw = socket.create_connection(("127.0.0.1", self.ports["port"]), timeout=timeout)
        channels: dict[int, bytes] = {}
        with ctx.wrap_socket(raw) as sock:
            ws = WSConnection(ConnectionType.CLIENT)
            sock.sendall(ws.send(Request(host=host, target=path, subprotocols=[protocol])))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not (until and until(channels)):
                data = sock.recv(65536)
                ws.receive_data(data or None)
                for ev in ws.events():
                    if isinstance(ev, AcceptConnection):
                        for channel, payload in send:
                            sock.sendall(ws.send(BytesMessage(data=bytes([channel]) + payload)))
                    elif isinstance(ev, RejectConnection):
                        channels[-1] = str(ev.status_code).encode()
                    elif isinstance(ev, RejectData):
                        channels[-1] = channels.get(-1, b"") + b" " + ev.data
                        if ev.body_finished:
                            return channels
                    elif isinstance(ev, BytesMessage) and ev.data:
                        ch = ev.data[0]
                        channels[ch] = channels.get(ch, b"") + bytes(ev.data[1:])
                    elif isinstance(ev, CloseConnection):
                        sock.sendall(ws.send(ev.response()))
                        return channels
                if not data:
                    break
        return channels

    def healthy(self) -> bool:
        try:
            status, body = self._get(f"http://127.0.0.1:{self.ports['healthz']}/healthz",
                                     timeout=2)
        except OSError:
            return False
        return status == 200 and body == b"ok"

    def pods(self) -> list[dict[str, Any]]:
        """The kubelet's pods with their status (``/pods``)."""
        status, body = self.read_only("/pods")
        if status != 200:
            raise RuntimeError(f"/pods answered {status}: {body[:300]!r}")
        return list(json.loads(body).get("items") or [])

    def pod(self, name: str) -> dict[str, Any] | None:
        """The static pod made from manifest ``name`` (the kubelet appends -<node>)."""
        full = f"{name}-{self.node_name}"
        return next((p for p in self.pods() if p["metadata"]["name"] == full), None)

    def metrics_text(self) -> str:
        status, body = self.read_only("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body.decode()


def crictl(endpoint: str, *args: str, timeout: float = 60) -> str:
    """crictl from PEAPOD_CLIENTS_DIR against ``endpoint``: its stdout (it warns on stderr)."""
    binary = CLIENTS_DIR / "crictl"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"no crictl at {binary}: run deploy/build-clients.sh")
    out = subprocess.run(
        [str(binary), "--config", "/dev/null", "--runtime-endpoint", endpoint,
         "--image-endpoint", endpoint, "--timeout", "20s", *args],
        capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"crictl {' '.join(args)} failed ({out.returncode}): {out.stderr}")
    return out.stdout


def static_pod(name: str, containers: list[dict[str, Any]], namespace: str = "default",
               **spec: Any) -> dict[str, Any]:
    """A Pod manifest; ``spec`` adds fields (restartPolicy, initContainers, volumes...)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 2, **spec, "containers": containers}}
