"""The CNI client driving the real plugins in /usr/lib/cni against real network namespaces.

Every test works on its own bridge, /24 from 10.199.0.0/16, netns and host-local
data dir, derived from deploy/cni/10-peapod.conflist, and removes them (and any
iptables rules naming its containers) afterwards, even on failure.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import subnets
from support.pods import HostState

from base.cancel import CallContext
from base.errors import PeapodError, Unavailable
from cni.attachment import Attachment
from cni.capabilities import PortMapping, port_mappings
from cni.client import CNIClient
from cni.netconf import NetworkConfig, loopback_network, parse_network
from cni.runtime_conf import RuntimeConf, k8s_args

PLUGIN_DIR = "/usr/lib/cni"
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "cni" / "10-peapod.conflist"
_COUNTER = itertools.count()
TIMINGS: dict[str, list[float]] = {}

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(f"{PLUGIN_DIR}/bridge") or not shutil.which("ip")
    or not shutil.which("iptables-save"),
    reason="needs root, iproute2, iptables and the CNI plugins in /usr/lib/cni",
)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def ip_json(*args: str) -> Any:
    out = sh("ip", "-j", *args, check=False)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


def firewall_lines() -> set[str]:
    """Every iptables/ip6tables line, without counters and comments."""
    lines: set[str] = set()
    for tool in ("iptables-save", "ip6tables-save"):
        for line in sh(tool, check=False).stdout.splitlines():
            if line.startswith("#"):
                continue
            lines.add(re.sub(r" \[\d+:\d+\]$", "", line))
    return lines


def free_port() -> int:
    """A TCP port that was free on the host a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def timed(label: str, start: float) -> None:
    TIMINGS.setdefault(label, []).append(time.monotonic() - start)


@pytest.fixture(scope="module", autouse=True)
def host_state() -> Iterator[None]:
    """Restore host-wide state the bridge and portmap plugins change, and print timings.

    bridge (isGateway) turns on net.ipv4.ip_forward; portmap creates its shared
    CNI-HOSTPORT-* chains and their jumps. Both are put back as found (see HostState).
    """
    state = HostState()
    yield
    state.restore()
    if TIMINGS:
        summary = ", ".join(f"{k}: n={len(v)} avg={sum(v) / len(v) * 1000:.0f}ms "
                            f"max={max(v) * 1000:.0f}ms" for k, v in sorted(TIMINGS.items()))
        print(f"\nCNI timings: {summary}")


class Lab:
    """Unique, self-cleaning network resources for one test."""

    def __init__(self) -> None:
        self.tag = f"{os.getpid() % 100000}x{next(_COUNTER)}"
        self.bridge = f"ppc{self.tag}"[:15]
        self.name = f"pptest{self.tag}"
        self.data_dir = tempfile.mkdtemp(prefix="peapod-cni-hostlocal-")
        self.client = CNIClient([PLUGIN_DIR], plugin_timeout=30)
        self.netns: list[str] = []
        self.attached: list[tuple[NetworkConfig, RuntimeConf]] = []
        self.container_ids: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.temp_dirs: list[str] = [self.data_dir]
        start = (os.getpid() * 7 + next(_COUNTER)) % 250
        self._subnet = subnets.reserve(
            ipaddress.IPv4Network(f"10.199.{(start + k) % 250 + 1}.0/24") for k in range(250)
        )
        self.subnet = self._subnet.network

    def network(self, version: str = "1.0.0", extra_plugins: tuple[dict[str, Any], ...] = (),
                ) -> NetworkConfig:
        """The deploy/cni default network, retargeted at this lab's names."""
        doc = json.loads(DEPLOY.read_text())
        doc["name"] = self.name
        doc["cniVersion"] = version
        bridge = doc["plugins"][0]
        assert bridge["type"] == "bridge"
        bridge["bridge"] = self.bridge
        bridge["ipam"]["ranges"] = [[{"subnet": str(self.subnet)}]]
        bridge["ipam"]["dataDir"] = self.data_dir
        doc["plugins"][1:1] = list(extra_plugins)
        return parse_network(doc, source=str(DEPLOY))

    def new_netns(self) -> str:
        name = f"ppcni{self.tag}n{len(self.netns)}"
        sh("ip", "netns", "add", name)
        self.netns.append(name)
        return name

    def runtime(self, netns: str, ifname: str = "eth0", **caps: Any) -> RuntimeConf:
        cid = f"peapodtest{self.tag}c{len(self.container_ids)}"
        self.container_ids.append(cid)
        return RuntimeConf(container_id=cid, netns=f"/run/netns/{netns}", ifname=ifname,
                           args=k8s_args("default", f"pod-{cid}", cid, f"uid-{cid}"),
                           capability_args=caps)

    def add(self, network: NetworkConfig, runtime: RuntimeConf) -> Attachment:
        self.attached.append((network, runtime))
        start = time.monotonic()
        attachment = self.client.add(network, runtime, CallContext.with_timeout(60))
        timed(f"ADD {'+'.join(network.plugin_types())}", start)
        return attachment

    def delete(self, attachment: Attachment) -> None:
        start = time.monotonic()
        self.client.delete(attachment, CallContext.with_timeout(60))
        timed(f"DEL {'+'.join(attachment.network.plugin_types())}", start)

    def leases(self) -> list[str]:
        """Addresses host-local holds for this lab's network."""
        directory = Path(self.data_dir) / self.name
        if not directory.is_dir():
            return []
        return [p.name for p in directory.iterdir() if re.match(r"^[0-9a-f.:]+$", p.name)
                and not p.name.startswith("last_reserved_ip")]

    def our_lines(self, lines: set[str]) -> set[str]:
        """Firewall lines naming one of this lab's containers or its subnet."""
        subnet_prefix = str(self.subnet.network_address).rsplit(".", 1)[0] + "."
        return {line for line in lines
                if any(cid in line for cid in self.container_ids) or subnet_prefix in line}

    def cleanup(self) -> None:
        for proc in self.processes:
            proc.kill()
            proc.wait()
        for network, runtime in reversed(self.attached):
            with contextlib.suppress(PeapodError):
                self.client.delete((network, runtime, None), CallContext.with_timeout(30))
        for name in self.netns:
            sh("ip", "netns", "del", name, check=False)
        self._remove_leftover_rules()
        if Path(f"/sys/class/net/{self.bridge}").exists():
            sh("ip", "link", "del", self.bridge, check=False)
        for directory in self.temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._subnet.release()

    def _remove_leftover_rules(self) -> None:
        """Delete rules naming our containers, and the per-container chains they jump to."""
        for tool in ("iptables", "ip6tables"):
            table = ""
            chains: set[str] = set()
            for line in sh(f"{tool}-save", check=False).stdout.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                if not line.startswith("-A ") or not any(c in line for c in self.container_ids):
                    continue
                words = shlex.split(line)
                if "-j" in words:
                    target = words[words.index("-j") + 1]
                    if target.startswith("CNI-") and not target.startswith("CNI-HOSTPORT-"):
                        chains.add(target)
                sh(tool, "-t", table, "-D", *words[1:], check=False)
            for chain in chains:
                for table_name in ("nat", "filter"):
                    sh(tool, "-t", table_name, "-F", chain, check=False)
                    sh(tool, "-t", table_name, "-X", chain, check=False)


@pytest.fixture
def lab() -> Iterator[Lab]:
    resources = Lab()
    try:
        yield resources
    finally:
        resources.cleanup()


def netns_addresses(netns: str, ifname: str) -> list[str]:
    """IPv4 addresses (with prefix) of an interface inside a netns."""
    links = ip_json("-n", netns, "-4", "addr", "show", "dev", ifname)
    return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link.get("addr_info", [])]


def link_exists(name: str, netns: str | None = None) -> bool:
    where = ["-n", netns] if netns else []
    return sh("ip", *where, "link", "show", "dev", name, check=False).returncode == 0


def host_veth(attachment: Attachment, bridge: str) -> str:
    names = [i.name for i in attachment.result.interfaces if not i.sandbox and i.name != bridge]
    assert len(names) == 1, attachment.result.interfaces
    return names[0]


def host_ipv4() -> str | None:
    route = ip_json("route", "get", "1.1.1.1")
    if route and route[0].get("prefsrc"):
        return str(route[0]["prefsrc"])
    return None


def http_get(host: str, port: int, timeout: float = 3.0) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/hello.txt")
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


# -- tests -------------------------------------------------------------------------------------


def test_add_configures_address_in_netns(lab: Lab) -> None:
    netns = lab.new_netns()
    attachment = lab.add(lab.network(), lab.runtime(netns))
    pod_ips = attachment.pod_ips()
    assert len(pod_ips) == 1
    pod_ip = ipaddress.ip_address(pod_ips[0])
    assert pod_ip in lab.subnet and pod_ip != lab.subnet.network_address + 1  # not the gateway
    assert netns_addresses(netns, "eth0") == [f"{pod_ip}/24"]
    link = ip_json("-n", netns, "link", "show", "dev", "eth0")[0]
    assert link["address"] == attachment.mac()
    assert attachment.result.ips[0].gateway == lab.subnet.network_address + 1
    assert attachment.container_interface() is not None
    assert link_exists(host_veth(attachment, lab.bridge))
    assert lab.leases() == [str(pod_ip)]
    routes = ip_json("-n", netns, "route", "show", "default")
    assert routes and routes[0]["gateway"] == str(lab.subnet.network_address + 1)
    lab.delete(attachment)


def test_two_pods_get_distinct_addresses_and_reach_each_other(lab: Lab) -> None:
    network = lab.network()
    first_ns, second_ns = lab.new_netns(), lab.new_netns()
    first = lab.add(network, lab.runtime(first_ns))
    second = lab.add(network, lab.runtime(second_ns))
    assert first.pod_ips() != second.pod_ips()
    assert sorted(lab.leases()) == sorted(first.pod_ips() + second.pod_ips())
    ping = sh("ip", "netns", "exec", first_ns, "busybox", "ping", "-c", "1", "-W", "3",
              second.pod_ips()[0], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    lab.delete(second)
    lab.delete(first)


def test_del_releases_lease_and_removes_veth_and_is_idempotent(lab: Lab) -> None:
    netns = lab.new_netns()
    attachment = lab.add(lab.network(), lab.runtime(netns))
    veth = host_veth(attachment, lab.bridge)
    assert lab.leases() == attachment.pod_ips()
    assert any(attachment.runtime.container_id in line for line in firewall_lines())
    lab.delete(attachment)
    assert lab.leases() == []
    assert not link_exists(veth)
    assert not link_exists("eth0", netns)
    assert lab.our_lines(firewall_lines()) == set()  # bridge's ipMasq rules are gone
    lab.delete(attachment)  # a second DEL is fine
    lab.delete(Attachment.from_json(attachment.to_json()))  # and so is one after a "restart"


def test_del_after_netns_was_deleted(lab: Lab) -> None:
    netns = lab.new_netns()
    attachment = lab.add(lab.network(), lab.runtime(netns))
    veth = host_veth(attachment, lab.bridge)
    sh("ip", "netns", "del", netns)
    lab.delete(attachment)
    lab.delete(attachment)
    assert lab.leases() == []
    deadline = time.monotonic() + 5  # the kernel drops the veth pair with the netns
    while link_exists(veth) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not link_exists(veth)


@pytest.mark.xfail(strict=True, reason="bridge 1.1.1 tears down ipMasq rules only via the "
                   "netns interface (containernetworking/plugins#810): DEL must precede "
                   "netns removal")
def test_del_after_netns_was_deleted_removes_masquerade_rules(lab: Lab) -> None:
    netns = lab.new_netns()
    attachment = lab.add(lab.network(), lab.runtime(netns))
    sh("ip", "netns", "del", netns)
    lab.delete(attachment)
    assert lab.our_lines(firewall_lines()) == set()


def test_check_passes_after_add_and_fails_when_broken(lab: Lab) -> None:
    netns = lab.new_netns()
    attachment = lab.add(lab.network(), lab.runtime(netns))
    start = time.monotonic()
    assert lab.client.check(attachment, CallContext.with_timeout(30)) is True
    timed("CHECK bridge+portmap", start)
    sh("ip", "-n", netns, "link", "del", "eth0")
    with pytest.raises(PeapodError) as info:
        lab.client.check(attachment, CallContext.with_timeout(30))
    assert "CNI plugin 'bridge' (plugin 1 of 2" in info.value.message
    assert "CHECK failed" in info.value.message
    lab.delete(attachment)


@pytest.mark.xfail(strict=True, reason="portmap 1.1.1 CHECK looks for ip6tables rules of an "
                   "IPv4-only pod (containernetworking/plugins#819)")
def test_check_with_port_mappings(lab: Lab) -> None:
    netns = lab.new_netns()
    maps = port_mappings([PortMapping(free_port(), 8080)])
    attachment = lab.add(lab.network(), lab.runtime(netns, portMappings=maps))
    try:
        lab.client.check(attachment, CallContext.with_timeout(30))
    finally:
        lab.delete(attachment)


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0"])
def test_spec_versions_round_trip(lab: Lab, version: str) -> None:
    network = lab.network(version)
    netns = lab.new_netns()
    attachment = lab.add(network, lab.runtime(netns))
    assert attachment.result.cni_version == version
    assert netns_addresses(netns, "eth0") == [f"{attachment.pod_ips()[0]}/24"]
    assert lab.client.check(attachment, CallContext.with_timeout(30)) is (version != "0.3.1")
    lab.delete(attachment)
    assert lab.leases() == []


def test_host_port_reaches_pod_and_del_removes_rules(lab: Lab) -> None:
    netns = lab.new_netns()
    host_port = free_port()
    maps = port_mappings([PortMapping(host_port, 8080, "tcp")])
    runtime = lab.runtime(netns, portMappings=maps)
    before = firewall_lines()
    attachment = lab.add(lab.network(), runtime)
    pod_ip = attachment.pod_ips()[0]
    during = firewall_lines()
    port_re = re.compile(rf"--dports? {host_port}\b")
    ours = {line for line in during - before
            if runtime.container_id in line or pod_ip in line or port_re.search(line)}
    assert any("DNAT" in line and f"{pod_ip}:8080" in line for line in ours), ours
    pod_chains = {m for line in ours for m in re.findall(r"-j (CNI-(?!HOSTPORT-)\S+)", line)}
    assert pod_chains  # the portmap DNAT chain and the bridge masquerade chain

    webroot = tempfile.mkdtemp(prefix="peapod-cni-web-")
    lab.temp_dirs.append(webroot)
    Path(webroot, "hello.txt").write_text(f"hello from {runtime.container_id}")
    lab.processes.append(subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, "-m", "http.server", "8080",
         "--bind", "0.0.0.0", "--directory", webroot],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    expected = f"hello from {runtime.container_id}"
    deadline = time.monotonic() + 15
    while True:
        try:
            assert http_get(pod_ip, 8080, timeout=1) == expected
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert http_get("127.0.0.1", host_port) == expected
    host_ip = host_ipv4()
    if host_ip is not None:
        assert http_get(host_ip, host_port) == expected

    lab.delete(attachment)
    after = firewall_lines()
    leftover = {line for line in after
                if runtime.container_id in line or pod_ip in line or port_re.search(line)
                or any(chain in line for chain in pod_chains)}
    assert leftover == set()
    # Only portmap's shared chains (and their jumps) may remain from this test.
    remaining = {line for line in after - before if "CNI-HOSTPORT-" not in line}
    assert not lab.our_lines(remaining), remaining
    with pytest.raises(OSError):
        http_get("127.0.0.1", host_port, timeout=1)


def test_failing_plugin_error_and_rollback(lab: Lab) -> None:
    plugin_dir = tempfile.mkdtemp(prefix="peapod-cni-plugins-")
    lab.temp_dirs.append(plugin_dir)
    failer = Path(plugin_dir) / f"peapod-fail-{lab.tag}"
    failer.write_text("""#!/bin/sh
cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  echo "refusing on purpose" >&2
  echo '{"cniVersion":"1.0.0","code":104,"msg":"forced failure",'\\
'"details":"test plugin refuses ADD"}'
  exit 1
fi
exit 0
""")
    failer.chmod(0o755)
    lab.client = CNIClient([plugin_dir, PLUGIN_DIR])
    network = lab.network(extra_plugins=({"type": failer.name},))
    assert network.plugin_types() == ["bridge", failer.name, "portmap"]
    netns = lab.new_netns()
    runtime = lab.runtime(netns)
    with pytest.raises(PeapodError) as info:
        lab.add(network, runtime)
    message = info.value.message
    assert f"CNI plugin '{failer.name}' (plugin 2 of 3 in network '{lab.name}'" in message
    assert "CNI error code 104: forced failure; details: test plugin refuses ADD" in message
    assert "plugin stderr: refusing on purpose" in message
    assert "rolled back with DEL of the 2 plugin(s) run" in message
    assert info.value.reason == failer.name
    assert not link_exists("eth0", netns)
    assert ip_json("link", "show", "master", lab.bridge) == []  # no veth left on the bridge
    assert lab.leases() == []
    assert not any(runtime.container_id in line for line in firewall_lines())


def test_loopback_network_brings_lo_up(lab: Lab) -> None:
    netns = lab.new_netns()
    assert "UP" not in ip_json("-n", netns, "link", "show", "dev", "lo")[0]["flags"]
    attachment = lab.add(loopback_network(), lab.runtime(netns, ifname="lo"))
    assert "UP" in ip_json("-n", netns, "link", "show", "dev", "lo")[0]["flags"]
    assert "127.0.0.1/8" in netns_addresses(netns, "lo")
    lab.delete(attachment)


def test_version_and_status_with_real_plugins(lab: Lab) -> None:
    info = lab.client.version("bridge", CallContext.with_timeout(10))
    assert "1.0.0" in info.supported_versions
    lab.client.status(lab.network("1.0.0"), CallContext.with_timeout(10))
    if "1.1.0" not in info.supported_versions:
        # These plugins predate STATUS: a 1.1.0 config is reported as not ready.
        with pytest.raises(Unavailable, match=r"CNI plugin 'bridge' .*STATUS failed"):
            lab.client.status(lab.network("1.1.0"), CallContext.with_timeout(10))
