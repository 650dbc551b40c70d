"""The runtimes a comparison drives: peapod and Debian's containerd, each set up for one
run, and the base class of the peers this run starts as daemons (runtime_crio.py,
runtime_containerd2.py).

Each runtime has its own socket, state directories and logs under the run's base
directory, and shares with the others the CNI config directory, the plugins in
/usr/lib/cni, /usr/sbin/runc and the loopback registry. ``stop`` takes down every pod the
runtime still has, stops the daemon and removes what it left: processes, mounts, state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cri_driver import CriDriver, channel_target
from support.daemon import Peapod, registries_conf_text

from oci.spec.capabilities import read_bounding_set
from sandbox.mounts import MOUNTINFO, parse_mountinfo, umount_all

RUNC = "/usr/sbin/runc"
CNI_BIN = "/usr/lib/cni"
CONTAINERD = "/usr/bin/containerd"


@dataclass
class Shared:
    """What every runtime in a run uses: registry host, CNI config, pause image, paths."""

    base: Path
    registry_host: str
    net_dir: Path
    pause_image: str
    cgroup_root: str  # each runtime's pods go under /<this>/<runtime name>/pod<uid>
    run_tag: str


def read_proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def has_sys_resource() -> bool:
    """Whether this host can grant CAP_SYS_RESOURCE (needed to lower oom_score_adj)."""
    return "CAP_SYS_RESOURCE" in read_bounding_set()


def command_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError as err:
        return f"unavailable: {err}"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def list_dir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def unmount_under(prefix: Path) -> None:
    """Lazily unmount every mount at or below ``prefix``, deepest first."""
    points = {e.mount_point for e in parse_mountinfo(MOUNTINFO.read_text())
              if e.mount_point == str(prefix) or e.mount_point.startswith(f"{prefix}/")}
    for point in sorted(points, key=len, reverse=True):
        with contextlib.suppress(OSError):
            umount_all(Path(point))


@dataclass
class RuntimeUnderTest:
    """One CRI runtime in the comparison; subclasses start and stop it."""

    name: str
    shared: Shared
    dir: Path = field(init=False)
    driver: CriDriver | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.dir = self.shared.base / self.name

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> list[str]:
        """Take the runtime and everything it runs down; returns what went wrong."""
        raise NotImplementedError

    def restart(self) -> None:
        """Stop the daemon alone (SIGTERM; pods and containers keep running), start it again
        and return once it answers Version."""
        raise NotImplementedError

    def daemon_pid(self) -> int | None:
        """The daemon's PID, None for a runtime this run did not start."""
        return None

    def monitor_pids(self) -> list[int]:
        """The runtime's per-pod or per-container monitor processes (conmon, shims)."""
        return []

    def kill_monitors(self) -> None:
        """SIGKILL the monitors still running: they outlive their daemon by design, and any
        left once the pods are removed belong to pods that could not be."""
        for pid in self.monitor_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def pause_pids(self) -> list[int]:
        """Pause or infra processes (pause, catatonit) in this runtime's pod cgroups."""
        mark = f"/{self.shared.cgroup_root}/{self.name}/"
        found = []
        for pid in all_pids():
            argv = read_proc_cmdline(pid)
            if not argv or os.path.basename(argv[0]) not in ("pause", "catatonit"):
                continue
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{pid}/cgroup").read_text():
                    found.append(pid)
        return found

    def versions(self) -> dict[str, str]:
        return {}

    def config(self) -> dict[str, Any]:
        return {}

    def connect(self) -> CriDriver:
        self.driver = CriDriver(
            self.endpoint,
            self.dir / "pod-logs",
            f"{self.shared.cgroup_root}/{self.name}",
            self.shared.run_tag,
        )
        return self.driver

    def teardown_pods(self) -> list[str]:
        """Remove this run's pods through the runtime; what could not be removed."""
        if self.driver is None:
            return []
        try:
            failures = self.driver.remove_all_pods()
        except Exception as err:  # the runtime may be gone; the caller cleans up after it
            failures = [f"listing pods failed: {err}"]
        self.driver.close()
        self.driver = None
        return [f"{self.name}: {f}" for f in failures]


class PeapodRuntime(RuntimeUnderTest):
    """peapod from this checkout, with its operator defaults except paths."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.daemon: Peapod | None = None

    @property
    def endpoint(self) -> str:
        return f"unix://{self.dir / 'run' / 'peapod.sock'}"

    def settings(self) -> dict[str, Any]:
        return {
            "log_level": "info",
            "network": {"network_dir": str(self.shared.net_dir), "plugin_dirs": [CNI_BIN]},
        }

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        self.daemon = Peapod(
            self.dir,
            config=self.settings(),
            registries_conf=registries_conf_text([self.shared.registry_host]),
        )
        self.daemon.start(timeout=60, new_session=True)
        self.connect().wait_ready()

    def restart(self) -> None:
        assert self.daemon is not None
        if self.driver is not None:
            self.driver.close()
        self.daemon.stop()
        self.daemon.start(timeout=600, new_session=True)
        self.connect()

    def stop(self) -> list[str]:
        problems = self.teardown_pods()
        if self.daemon is not None:
            self.daemon.stop()
            self.kill_monitors()
            unmount_under(self.dir)
            self.daemon.cleanup()
            self.daemon = None
        return problems

    def daemon_pid(self) -> int | None:
        return self.daemon.proc.pid if self.daemon and self.daemon.proc else None

    def monitor_pids(self) -> list[int]:
        mark = str(self.dir)
        return [
            p
            for p in all_pids()
            if (argv := read_proc_cmdline(p))
            and os.path.basename(argv[0]) == "conmon"
            and any(mark in a for a in argv)
        ]

    def versions(self) -> dict[str, str]:
        out = subprocess.run(
            [sys.executable, "-m", "cri.main", "version"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        return {
            "peapod": out.stdout.strip().replace("\n", "; "),
            "conmon": command_version(["conmon", "--version"]),
            "runc": command_version([RUNC, "--version"]),
        }

    def config(self) -> dict[str, Any]:
        return self.settings()


class ProcessRuntime(RuntimeUnderTest):
    """A runtime whose daemon this run starts as a child process, logging to one file."""

    log_name = "daemon.log"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        raise NotImplementedError

    @property
    def endpoint(self) -> str:
        return f"unix://{self.socket}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The daemon's environment; None inherits this process's."""
        return None

    def _launch(self) -> None:
        with open(self.dir / self.log_name, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.environment(),
            )
        deadline = time.monotonic() + 60
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.connect().wait_ready(timeout=60)

    def restart(self) -> None:
        assert self.proc is not None
        if self.driver is not None:
            self.driver.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.socket.unlink(missing_ok=True)
        self._launch()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = (self.dir / self.log_name).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop_daemon(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None

    def daemon_pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None


class ContainerdRuntime(ProcessRuntime):
    """Debian's containerd with its built-in CRI plugin, runc v2 shim and overlayfs."""

    SHIM_SOCKETS = Path("/run/containerd")  # fixed in containerd 1.6, not configurable
    binary = CONTAINERD
    install_hint = "install Debian's containerd (./deploy/setup.sh bench does)"
    log_name = "containerd.log"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.made_shim_dir = False
        self.shim_sockets_before: set[str] = set()

    @property
    def socket(self) -> Path:
        return self.dir / "containerd.sock"

    def command(self) -> list[str]:
        return [self.binary, "--config", str(self.dir / "config.toml")]

    def config_toml(self) -> str:
        d = self.dir
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"
oom_score = 0
# Plugins that would touch paths outside this run's directories, or are unused here.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[{cri}]
  sandbox_image = "{self.shared.pause_image}"
  disable_apparmor = true
  # Pod network namespaces under this run's state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  # The pause container's oom_score_adj (-998) needs CAP_SYS_RESOURCE, which hosts without it
  # (this VM) cannot grant: runc then fails. Clamp to containerd's own score, as peapod does.
  restrict_oom_score_adj = {str(not has_sys_resource()).lower()}
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.shared.net_dir}"
    max_conf_num = 1
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        Root = "{d / "runc"}"
        SystemdCgroup = false
  [{cri}.registry]
    config_path = "{d / "certs.d"}"
"""

    def hosts_toml(self) -> str:
        host = self.shared.registry_host
        return (
            f'server = "http://{host}"\n\n[host."http://{host}"]\n'
            f'  capabilities = ["pull", "resolve"]\n'
        )

    def start(self) -> None:
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"{self.binary} not found: {self.install_hint}")
        self.dir.mkdir(parents=True)
        self.note_shim_sockets()
        (self.dir / "config.toml").write_text(self.config_toml())
        certs = self.dir / "certs.d" / self.shared.registry_host
        certs.mkdir(parents=True)
        (certs / "hosts.toml").write_text(self.hosts_toml())
        self._launch()

    def note_shim_sockets(self) -> None:
        """Before the start: which shim sockets exist already (1.6's go to a fixed place)."""
        self.made_shim_dir = not self.SHIM_SOCKETS.exists()
        self.shim_sockets_before = set(list_dir(self.SHIM_SOCKETS / "s"))

    def stop(self) -> list[str]:
        problems = self.teardown_pods()
        self.stop_daemon()
        self.kill_monitors()
        unmount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        return problems + self.remove_shim_sockets()

    def remove_shim_sockets(self) -> list[str]:
        """The shim sockets this run left; what could not be removed."""
        problems = []
        sockets = self.SHIM_SOCKETS / "s"
        for entry in set(list_dir(sockets)) - self.shim_sockets_before:
            with contextlib.suppress(OSError):
                (sockets / entry).unlink()
        if self.made_shim_dir:
            for d in (sockets, self.SHIM_SOCKETS):
                with contextlib.suppress(OSError):
                    d.rmdir()
        if self.made_shim_dir and self.SHIM_SOCKETS.exists():
            problems.append(f"{self.name}: {self.SHIM_SOCKETS} left: {list_dir(sockets)}")
        return problems

    def monitor_pids(self) -> list[int]:
        sock = str(self.socket)
        return [
            p
            for p in all_pids()
            if (argv := read_proc_cmdline(p))
            and os.path.basename(argv[0]).startswith("containerd-shim")
            and sock in argv
        ]

    def versions(self) -> dict[str, str]:
        return {
            "containerd": command_version([self.binary, "--version"]),
            "runc": command_version([RUNC, "--version"]),
        }

    def config(self) -> dict[str, Any]:
        return {"config.toml": self.config_toml(), "hosts.toml": self.hosts_toml()}


class ExternalRuntime(RuntimeUnderTest):
    """A CRI runtime the operator already runs: only its socket is known."""

    def __init__(self, name: str, shared: Shared, endpoint: str) -> None:
        super().__init__(name, shared)
        self._endpoint = endpoint

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        self.connect().wait_ready()

    def stop(self) -> list[str]:
        problems = self.teardown_pods()
        shutil.rmtree(self.dir, ignore_errors=True)
        return problems

    def config(self) -> dict[str, Any]:
        return {"endpoint": channel_target(self._endpoint)}
