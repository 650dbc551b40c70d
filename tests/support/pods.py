"""A peapod daemon with a private CNI network, for pod sandbox tests and benchmarks.

``PodEnv`` gives one daemon its own CNI config dir naming a unique bridge (pp<hex>),
a unique /24 from 10.230.0.0/16 (locked with the same /tmp lock files the CNI plugin
tests use) and a host-local data dir in its temp dir, plus its own cgroup parent and a
test plugin that fails ADD/DEL or is slow on demand (a slow DEL hangs until its marker
goes). ``sweep()`` puts the machine back as found: pods, mounts, processes, cgroups,
iptables rules, the bridge, lock file.
``HostState`` restores what the plugins change host-wide (ip_forward, portmap chains).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import re
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from api import api_pb2 as pb
from sandbox import procs
from sandbox.cgroup_layout import detect_layout
from sandbox.cgroups import hierarchy_roots
from sandbox.mounts import umount_all
from support import subnets
from support.daemon import REPO, Peapod

PLUGIN_DIR = "/usr/lib/cni"
DEPLOY_CONFLIST = REPO / "deploy" / "cni" / "10-peapod.conflist"
PORTMAP_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK")
_COUNTER = itertools.count()


def sh(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True,
                          timeout=timeout)


class HostState:
    """ip_forward and portmap's shared chains as found; ``restore()`` puts them back."""

    def __init__(self) -> None:
        self._forward = Path("/proc/sys/net/ipv4/ip_forward")
        self._forward_before = self._forward.read_text()
        self._chains_before = "CNI-HOSTPORT-DNAT" in sh("iptables-save", "-t", "nat").stdout

    def restore(self) -> None:
        if self._forward.read_text() != self._forward_before:
            self._forward.write_text(self._forward_before)
        nat = sh("iptables-save", "-t", "nat").stdout
        if self._chains_before or "-A CNI-HOSTPORT-DNAT" in nat:
            return
        for jump in (["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j",
                      "CNI-HOSTPORT-DNAT"],
                     ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j",
                      "CNI-HOSTPORT-DNAT"],
                     ["POSTROUTING", "-m", "comment", "--comment",
                      "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"]):
            sh("iptables", "-t", "nat", "-D", *jump, check=False)
        for chain in PORTMAP_CHAINS:
            sh("iptables", "-t", "nat", "-F", chain, check=False)
            sh("iptables", "-t", "nat", "-X", chain, check=False)


FLAKY_PLUGIN = """#!{python}
import json, os, sys, time
conf = json.load(sys.stdin)
cmd = os.environ.get("CNI_COMMAND")
markers = conf["markerDir"]
def marker(name):
    return os.path.exists(os.path.join(markers, name))
def fail(code, msg):
    print(json.dumps({{"cniVersion": conf["cniVersion"], "code": code, "msg": msg,
                      "details": "test plugin refuses " + cmd}}))
    print("refusing on purpose", file=sys.stderr)
    sys.exit(1)
if cmd == "ADD":
    if marker("slow-add"):
        time.sleep(float(open(os.path.join(markers, "slow-add")).read() or "2"))
    if marker("fail-add"):
        fail(104, "forced failure")
    print(json.dumps(conf["prevResult"]))
elif cmd == "DEL":
    if marker("slow-del"):  # hangs while the marker exists (up to its seconds, default 30)
        try:
            limit = float(open(os.path.join(markers, "slow-del")).read() or "30")
        except OSError:
            limit = 0
        limit += time.monotonic()
        while marker("slow-del") and time.monotonic() < limit:
            time.sleep(0.05)
    if marker("fail-del"):
        fail(11, "DEL refused for now")
elif cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}}))
"""


class PodEnv:
    """A peapod daemon, its bridge/subnet/host-local dir, test plugins and cgroup parent."""

    def __init__(self, network: bool = True, wait_for_config: float = 3.0,
                 flaky: bool = False) -> None:
        self.tag = f"{secrets.token_hex(2)}{next(_COUNTER)}"
        self.bridge = f"pp{self.tag}"[:15]
        self.netname = f"pptest{self.tag}"
        self.cgroup_parent = f"peapod-test-{self.tag}"
        base = Path(tempfile.mkdtemp(prefix="peapod-test-"))
        self.conf_dir = base / "net.d"
        self.plugin_dir = base / "plugins"
        self.data_dir = base / "host-local"
        self.markers = base / "markers"
        for d in (self.conf_dir, self.plugin_dir, self.data_dir, self.markers):
            d.mkdir(parents=True, exist_ok=True)
        start = secrets.randbelow(2560)
        self._subnet = subnets.reserve(
            ipaddress.IPv4Network(f"10.{230 + n // 256}.{n % 256}.0/24")
            for n in ((start + k) % 2560 for k in range(2560))
        )
        self.subnet = self._subnet.network
        self.flaky = f"ppflaky{self.tag}"
        plugin = self.plugin_dir / self.flaky
        plugin.write_text(FLAKY_PLUGIN.format(python=sys.executable))
        plugin.chmod(0o755)
        self.peapod = Peapod(base, config={
            "network": {"network_dir": str(self.conf_dir),
                        "plugin_dirs": [str(self.plugin_dir), PLUGIN_DIR],
                        "wait_for_config": wait_for_config},
            "sandbox": {"default_cgroup_parent": self.cgroup_parent},
        })
        if network:
            self.write_conflist(flaky=flaky)

    def conflist(self, flaky: bool = False) -> dict[str, Any]:
        doc = json.loads(DEPLOY_CONFLIST.read_text())
        doc["name"] = self.netname
        bridge = doc["plugins"][0]
        bridge["bridge"] = self.bridge
        bridge["ipam"]["ranges"] = [[{"subnet": str(self.subnet)}]]
        bridge["ipam"]["dataDir"] = str(self.data_dir)
        if flaky:
            doc["plugins"].insert(1, {"type": self.flaky, "markerDir": str(self.markers)})
        return doc

    def write_conflist(self, flaky: bool = False) -> None:
        tmp = self.conf_dir / ".tmp"
        tmp.write_text(json.dumps(self.conflist(flaky)))
        tmp.rename(self.conf_dir / "10-test.conflist")

    def marker(self, name: str, content: str = "") -> None:
        (self.markers / name).write_text(content)

    def unmark(self, name: str) -> None:
        (self.markers / name).unlink(missing_ok=True)

    # ---- calls --------------------------------------------------------
    @property
    def rt(self) -> Any:
        return self.peapod.runtime

    def config(self, name: str = "pod", **kw: Any) -> pb.PodSandboxConfig:
        c = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(
            name=f"{name}-{secrets.token_hex(3)}", uid=secrets.token_hex(8), namespace="test"))
        for key, value in kw.items():
            if key == "pid":
                c.linux.security_context.namespace_options.pid = value
            elif key == "host_network":
                c.linux.security_context.namespace_options.network = pb.NODE if value else pb.POD
            elif key == "sysctls":
                c.linux.sysctls.update(value)
            elif key in ("labels", "annotations"):
                getattr(c, key).update(value)
            elif key == "port_mappings":
                c.port_mappings.extend(value)
            elif key == "dns":
                c.dns_config.CopyFrom(value)
            else:
                setattr(c, key, value)
        return c

    def run(self, config: pb.PodSandboxConfig | None = None, timeout: float = 60) -> str:
        req = pb.RunPodSandboxRequest(config=config or self.config())
        return str(self.rt.RunPodSandbox(req, timeout=timeout).pod_sandbox_id)

    def status(self, pod_id: str, verbose: bool = False) -> pb.PodSandboxStatusResponse:
        return self.rt.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=verbose), timeout=10)

    def info(self, pod_id: str) -> dict[str, Any]:
        return json.loads(self.status(pod_id, verbose=True).info["info"])

    def stop(self, pod_id: str) -> None:
        self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)

    def remove(self, pod_id: str) -> None:
        self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)

    def list(self, flt: pb.PodSandboxFilter | None = None) -> list[pb.PodSandbox]:
        req = pb.ListPodSandboxRequest() if flt is None else pb.ListPodSandboxRequest(filter=flt)
        return list(self.rt.ListPodSandbox(req, timeout=10).items)

    # ---- host-side views ----------------------------------------------
    def leases(self) -> list[str]:
        d = self.data_dir / self.netname
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir()
                      if re.fullmatch(r"[0-9.]+", p.name) and p.name.count(".") == 3)

    def db_rows(self) -> list[tuple[str, str]]:
        conn = sqlite3.connect(f"file:{self.peapod.root / 'peapod.db'}?mode=ro", uri=True)
        try:
            return [(r[0], r[1]) for r in conn.execute("SELECT id, state FROM sandboxes")]
        finally:
            conn.close()

    def mounts(self) -> list[str]:
        prefix = str(self.peapod.base) + "/"
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if line.split()[4].startswith(prefix)]

    def cgroup_dirs(self, sub: str = "") -> list[Path]:
        rel = f"{self.cgroup_parent}/{sub}" if sub else self.cgroup_parent
        return [r / rel for r in hierarchy_roots(detect_layout()) if (r / rel).exists()]

    def firewall_lines(self) -> list[str]:
        prefix = str(self.subnet.network_address).rsplit(".", 1)[0] + "."
        out = sh("iptables-save", check=False).stdout.splitlines()
        return [ln for ln in out if prefix in ln or self.netname in ln]

    # ---- cleanup ------------------------------------------------------
    def remove_all_pods(self) -> None:
        for name in ("fail-add", "fail-del", "slow-add", "slow-del"):
            self.unmark(name)
        if self.peapod.proc is None:
            return
        for item in self.list():
            self.remove(item.id)

    def sweep(self) -> None:
        """Put the machine back as found, whatever state the test left."""
        with contextlib.suppress(Exception):
            self.remove_all_pods()
        self.peapod.stop(signal.SIGKILL)
        for d in self.cgroup_dirs():
            for pids in d.rglob("cgroup.procs"):
                for pid in pids.read_text().split():
                    start = procs.start_time(int(pid))
                    if start is not None:
                        procs.kill_and_wait(int(pid), start, 5)
        for mount_point in sorted(self.mounts(), key=len, reverse=True):
            umount_all(Path(mount_point))
        for d in self.cgroup_dirs():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()),
                              key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()
        self._sweep_rules()
        if Path(f"/sys/class/net/{self.bridge}").exists():
            sh("ip", "link", "del", self.bridge, check=False)
        self.peapod.cleanup()
        self._subnet.release()

    def _sweep_rules(self) -> None:
        table = ""
        chains: set[str] = set()
        for line in sh("iptables-save", check=False).stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
            if not line.startswith("-A ") or line not in self.firewall_lines():
                continue
            words = shlex.split(line)
            if "-j" in words:
                target = words[words.index("-j") + 1]
                if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT-"):
                    chains.add(target)
            sh("iptables", "-t", table, "-D", *words[1:], check=False)
        for chain in chains:
            for t in ("nat", "filter"):
                sh("iptables", "-t", t, "-F", chain, check=False)
                sh("iptables", "-t", t, "-X", chain, check=False)


@contextlib.contextmanager
def pod_env(**kw: Any) -> Iterator[PodEnv]:
    env = PodEnv(**kw)
    try:
        env.peapod.start()
        yield env
    finally:
        env.sweep()


