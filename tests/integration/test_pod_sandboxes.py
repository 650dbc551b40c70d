"""Pod sandboxes through the real socket: namespaces, files, shm, cgroups, CNI, recovery.

Each daemon is a ``support.pods.PodEnv``: its own CNI config dir naming a unique bridge,
a unique /24 from 10.230.0.0/16 and a host-local data dir in its temp dir, plus its own
cgroup parent. Everything is swept afterwards even on failure: pods, mounts, processes,
cgroups, iptables rules, the bridge, ip_forward and portmap's shared chains.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.daemon import metric_value
from support.pods import PLUGIN_DIR, HostState, PodEnv, pod_env, sh

from api import api_pb2 as pb
from api import api_pb2_grpc
from sandbox import procs
from sandbox.cgroup_layout import detect_layout
from sandbox.cgroups import hierarchy_roots
from sandbox.mounts import umount_all


@pytest.fixture(scope="module", autouse=True)
def host_state() -> Iterator[None]:
    """Fail (not skip) without the tools; restore ip_forward and portmap's shared chains."""
    if os.geteuid() != 0:
        pytest.fail("pod sandbox tests need root (namespaces, mounts, cgroups, iptables)")
    for tool in ("bridge", "host-local", "portmap", "loopback"):
        if not os.access(f"{PLUGIN_DIR}/{tool}", os.X_OK):
            pytest.fail(f"CNI plugin {PLUGIN_DIR}/{tool} missing: apt-get install "
                        "containernetworking-plugins")
    for tool in ("ip", "iptables-save", "nsenter", "unshare", "catatonit", "busybox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing; run deploy/setup.sh test")
    state = HostState()
    yield
    state.restore()


@pytest.fixture(scope="module")
def shared() -> Iterator[PodEnv]:
    with pod_env() as env:
        yield env


@pytest.fixture
def env(shared: PodEnv) -> Iterator[PodEnv]:
    """The shared daemon; every pod a test leaves is removed (and must go) afterwards."""
    yield shared
    shared.remove_all_pods()
    assert shared.list() == []


@pytest.fixture(scope="module")
def flaky() -> Iterator[PodEnv]:
    """A daemon whose network has a test plugin that fails ADD/DEL or is slow on demand."""
    with pod_env(flaky=True) as env:
        yield env


# -- helpers ----------------------------------------------------------------------------


class EventLog:
    """GetContainerEvents read on a thread, over a channel of its own, from when it is made."""

    def __init__(self, env: PodEnv) -> None:
        self.channel = grpc.insecure_channel(f"unix:{env.peapod.socket}")
        stub = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.call = stub.GetContainerEvents(pb.GetEventsRequest())
        self.events: list[tuple[str, int, int]] = []  # (id, event type, pod state)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        text = "peapod_container_events_subscribers"
        assert procs.wait_until(lambda: metric_value(env.peapod.metrics_text(), text) >= 1, 10,
                                interval=0.05)

    def _read(self) -> None:
        try:
            for ev in self.call:
                self.events.append((ev.container_id, ev.container_event_type,
                                    ev.pod_sandbox_status.state))  # fmt: skip
        except grpc.RpcError:
            pass  # cancelled by close()

    def of(self, pod_id: str) -> list[tuple[int, int]]:
        return [(kind, state) for ctr, kind, state in self.events if ctr == pod_id]

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(5)
        self.channel.close()



def nsenter(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("nsenter", *args, check=check)


def code_of(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value  # type: ignore[return-value]


def http_get(host: str, port: int, timeout: float = 3.0) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/hello.txt")
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read().decode()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def host_veths(info: dict[str, Any], bridge: str) -> list[str]:
    names = []
    for att in info["cni"]:
        for iface in (att["result"] or {}).get("interfaces", []):
            if not iface.get("sandbox") and iface["name"] not in (bridge, "lo"):
                names.append(iface["name"])
    return names


# -- tests ------------------------------------------------------------------------------


def test_two_pods_get_distinct_ips_and_reach_each_other_and_the_host(env: PodEnv) -> None:
    a, b = env.run(), env.run()
    ip_a, ip_b = env.status(a).status.network.ip, env.status(b).status.network.ip
    assert ip_a != ip_b
    assert ipaddress.ip_address(ip_a) in env.subnet and ipaddress.ip_address(ip_b) in env.subnet
    assert env.leases() == sorted([ip_a, ip_b])
    netns_a = env.info(a)["netns"]
    gateway = str(env.subnet.network_address + 1)
    for target in (ip_b, gateway):
        ping = nsenter(f"--net={netns_a}", "busybox", "ping", "-c", "1", "-W", "3", target,
                       check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    ping = sh("busybox", "ping", "-c", "1", "-W", "3", ip_b, check=False)  # host -> pod
    assert ping.returncode == 0, ping.stdout + ping.stderr
    addrs = nsenter(f"--net={netns_a}", "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert f"{ip_a}/24" in addrs
    # lo is up with its address, though no loopback plugin ran: the namespace came that way
    assert "UP" in nsenter(f"--net={netns_a}", "ip", "link", "show", "lo").stdout
    lo_addrs = nsenter(f"--net={netns_a}", "ip", "-4", "-o", "addr", "show", "dev", "lo").stdout
    assert "127.0.0.1/8" in lo_addrs
    assert [c["network"] for c in env.info(a)["cni"]] == [env.netname]


def test_host_port_reaches_a_server_in_the_pod(env: PodEnv, tmp_path: Path) -> None:
    host_port = free_port()
    pod = env.run(env.config("web", port_mappings=[
        pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=host_port)]))
    info = env.info(pod)
    pod_ip = info["ips"][0]
    assert info["portMappings"] == [{"hostPort": host_port, "containerPort": 8080,
                                     "protocol": "tcp", "hostIP": ""}]
    (tmp_path / "hello.txt").write_text(f"hello from {pod}")
    server = subprocess.Popen(
        ["nsenter", f"--net={info['netns']}", sys.executable, "-m", "http.server", "8080",
         "--bind", "0.0.0.0", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert http_get(pod_ip, 8080, timeout=1) == f"hello from {pod}"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert http_get("127.0.0.1", host_port) == f"hello from {pod}"
        route = json.loads(sh("ip", "-j", "route", "get", "1.1.1.1", check=False).stdout or "[]")
        if route and route[0].get("prefsrc"):
            assert http_get(route[0]["prefsrc"], host_port) == f"hello from {pod}"
        assert any(f"{pod_ip}:8080" in line for line in env.firewall_lines())
    finally:
        server.kill()
        server.wait()
    env.remove(pod)
    assert env.firewall_lines() == []  # DNAT and masquerade rules are gone
    with pytest.raises(OSError):
        http_get("127.0.0.1", host_port, timeout=1)


def test_dns_hostname_sysctls_shm_and_files(env: PodEnv) -> None:
    dns = pb.DNSConfig(servers=["10.96.0.10", "10.96.0.11"], searches=["svc.test", "test"],
                       options=["ndots:5", "edns0"])
    host_values = [Path(f"/proc/sys/{p}").read_text() for p in
                   ("net/ipv4/ip_unprivileged_port_start", "kernel/shm_rmid_forced")]
    pod = env.run(env.config("files", hostname="files-host", dns=dns, sysctls={
        "net.ipv4.ip_unprivileged_port_start": "81", "kernel.shm_rmid_forced": "1"}))
    info = env.info(pod)
    ns = info["namespaces"]
    assert set(ns) == {"net", "ipc", "uts"}
    assert nsenter(f"--uts={ns['uts']}", "hostname").stdout.strip() == "files-host"
    assert nsenter(f"--net={ns['net']}", "cat",
                   "/proc/sys/net/ipv4/ip_unprivileged_port_start").stdout.strip() == "81"
    assert nsenter(f"--ipc={ns['ipc']}", "cat",
                   "/proc/sys/kernel/shm_rmid_forced").stdout.strip() == "1"
    assert [Path(f"/proc/sys/{p}").read_text() for p in
            ("net/ipv4/ip_unprivileged_port_start", "kernel/shm_rmid_forced")] == host_values
    assert Path(info["resolvConf"]).read_text() == (
        "nameserver 10.96.0.10\nnameserver 10.96.0.11\nsearch svc.test test\n"
        "options ndots:5 edns0\n")
    assert Path(info["podDir"], "hostname").read_text() == "files-host\n"
    hosts = Path(info["hosts"]).read_text()
    assert f"{info['ips'][0]}\tfiles-host" in hosts and "127.0.0.1\tlocalhost" in hosts
    shm = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()
           if line.split()[4] == info["shm"]]
    assert len(shm) == 1 and shm[0][-3] == "tmpfs" and "size=65536k" in shm[0][-1]
    assert env.cgroup_dirs(f"pod{pod}")  # the pod cgroup exists in every hierarchy
    assert len(env.cgroup_dirs(f"pod{pod}")) == len(hierarchy_roots(detect_layout()))
    assert info["cgroupParent"] == f"/{env.cgroup_parent}/pod{pod}"


def test_default_resolv_conf_and_hostname(env: PodEnv) -> None:
    pod = env.run(env.config("plain"))
    info = env.info(pod)
    assert Path(info["resolvConf"]).read_text() == Path("/etc/resolv.conf").read_text()
    assert info["hostname"] == pod[:12]
    assert nsenter(f"--uts={info['namespaces']['uts']}", "hostname").stdout.strip() == pod[:12]


def test_stop_releases_the_ip_and_stop_remove_are_idempotent(env: PodEnv) -> None:
    pod = env.run(env.config("stopper", pid=pb.CONTAINER))
    ip = env.status(pod).status.network.ip
    assert env.leases() == [ip]
    veths = host_veths(env.info(pod), env.bridge)
    assert veths and all(Path(f"/sys/class/net/{v}").exists() for v in veths)
    env.stop(pod)
    st = env.status(pod).status
    assert st.state == pb.SANDBOX_NOTREADY and st.network.ip == ""
    assert env.leases() == []
    assert not any(Path(f"/sys/class/net/{v}").exists() for v in veths)
    assert env.firewall_lines() == []
    info = env.info(pod)
    assert Path(info["netns"]).exists()  # namespaces stay pinned until Remove
    env.stop(pod)  # already stopped
    env.stop(secrets.token_hex(32))  # unknown
    env.remove(secrets.token_hex(32))  # unknown
    env.remove(pod)
    env.remove(pod)  # already removed
    env.stop(pod)
    err = code_of(lambda: env.status(pod))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_remove_leaves_nothing_behind(env: PodEnv) -> None:
    pod = env.run(env.config("gone", labels={"x": "y"}))
    info = env.info(pod)
    veths = host_veths(info, env.bridge)
    infra = info["infraPid"]
    assert infra and procs.comm(infra) == "catatonit"
    pod_dir = Path(info["podDir"])
    assert any(m.startswith(str(pod_dir)) for m in env.mounts())
    assert (pod, "ready") in env.db_rows()
    env.remove(pod)  # stops first
    assert not pod_dir.exists()
    assert not any(m.startswith(str(pod_dir)) for m in env.mounts())
    assert not any(Path(f"/sys/class/net/{v}").exists() for v in veths)
    assert env.cgroup_dirs(f"pod{pod}") == []
    assert all(r[0] != pod for r in env.db_rows())
    assert env.leases() == [] and env.firewall_lines() == []
    assert procs.comm(infra) != "catatonit"
    assert env.list() == []


def test_infra_process_for_pid_pod_only(env: PodEnv) -> None:
    shared_pid = env.run(env.config("sharedpid"))  # pid mode POD is the proto default
    own_pid = env.run(env.config("ownpid", pid=pb.CONTAINER))
    info = env.info(shared_pid)
    pid = info["infraPid"]
    assert procs.comm(pid) == "catatonit"
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(info["netns"]).st_ino
    assert os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
    nspid = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
             if ln.startswith("NSpid:")).split()
    assert nspid[-1] == "1"  # PID 1 of the pod's PID namespace
    cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    assert f"/{env.cgroup_parent}/pod{shared_pid}" in cgroups
    st = env.status(shared_pid).status.linux.namespaces.options
    assert st.pid == pb.POD
    assert env.info(own_pid)["infraPid"] is None
    assert env.status(own_pid).status.linux.namespaces.options.pid == pb.CONTAINER
    env.stop(shared_pid)
    assert procs.wait_until(lambda: procs.comm(pid) != "catatonit", 5)
    assert env.info(shared_pid)["infraPid"] is None


def zombie_children(pid: int) -> list[int]:
    return [k for k in procs.children(pid) if procs.state(k) == "Z"]


def test_stopping_a_pid_pod_leaves_no_zombie_under_the_daemon(env: PodEnv) -> None:
    assert env.peapod.proc is not None
    daemon = env.peapod.proc.pid
    pods = [env.run(env.config("reaped", host_network=host)) for host in (True, False)]
    parents = [env.info(p)["infra"]["parent_pid"] for p in pods]
    assert all(procs.comm(p) == "unshare" for p in parents)
    for pod in pods:
        env.stop(pod)
    # The unshare parents exit with catatonit; the daemon reaps them at once, not at its
    # next subprocess (after the last Stop here it starts none).
    assert procs.wait_until(lambda: zombie_children(daemon) == [], 1.0, interval=0.02), \
        zombie_children(daemon)
    assert all(procs.state(p) is None for p in parents)
    env.remove(pods[0])
    assert zombie_children(daemon) == []


def test_name_conflict_is_already_exists(env: PodEnv) -> None:
    config = env.config("twin")
    first = env.run(config)
    err = code_of(lambda: env.run(config))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first in err.details()
    config.metadata.attempt = 1
    second = env.run(config)  # a new attempt is a new pod
    assert second != first and len(env.list()) == 2
    env.remove(first)
    config.metadata.attempt = 0
    assert env.run(config) not in (first, second)  # the name is free again


def test_invalid_requests_create_nothing(env: PodEnv) -> None:
    before = sorted(p.name for p in (env.peapod.runroot / "pods").glob("*"))
    for sysctls in ({"kernel.hostname": "x"}, {"net.ipv4.not_a_sysctl": "1"}):
        err = code_of(lambda s=sysctls: env.run(env.config("bad", sysctls=s)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert next(iter(sysctls)) in err.details()
    err = code_of(lambda: env.rt.RunPodSandbox(pb.RunPodSandboxRequest(
        config=env.config("bad"), runtime_handler="no-such-handler"), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "no-such-handler" in err.details()
    config = env.config("bad")
    config.metadata.uid = ""
    err = code_of(lambda: env.run(config))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata.uid" in err.details()
    for call in (env.stop, env.remove, env.status):
        err = code_of(lambda c=call: c(""))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(p.name for p in (env.peapod.runroot / "pods").glob("*")) == before
    assert env.list() == [] and env.db_rows() == [] and env.leases() == []


def test_status_verbose_list_filters_and_metrics(env: PodEnv) -> None:
    a = env.run(env.config("lst", labels={"app": "web", "tier": "fe"},
                           annotations={"note": "a"}))
    b = env.run(env.config("lst", labels={"app": "web"}))
    env.stop(b)
    resp = env.status(a, verbose=True)
    st = resp.status
    assert st.id == a and st.state == pb.SANDBOX_READY and st.metadata.namespace == "test"
    assert dict(st.labels) == {"app": "web", "tier": "fe"}
    assert dict(st.annotations) == {"note": "a"}
    assert st.created_at > 0 and resp.timestamp >= st.created_at
    info = json.loads(resp.info["info"])
    assert info["netns"].endswith(f"{a}/ns/net") and info["infraPid"]
    assert [c["network"] for c in info["cni"]] == [env.netname]
    assert info["cni"][0]["result"]["ips"][0]["address"].startswith(st.network.ip + "/")
    ids = lambda **f: sorted(p.id for p in env.list(pb.PodSandboxFilter(**f)))  # noqa: E731
    assert ids() == sorted([a, b])
    assert ids(id=a[:10]) == [a]
    assert ids(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY)) == [b]
    assert ids(label_selector={"tier": "fe"}) == [a]
    assert ids(label_selector={"app": "web"}, state=pb.PodSandboxStateValue(
        state=pb.SANDBOX_READY)) == [a]
    assert env.status(a[:12]).status.id == a  # a unique prefix works too
    text = env.peapod.metrics_text()
    assert metric_value(text, "peapod_network_setup_seconds_count") >= 2
    assert metric_value(text, "peapod_network_teardown_seconds_count") >= 1
    assert "# TYPE peapod_cni_errors_total counter" in text


def test_twenty_pods_in_parallel(env: PodEnv) -> None:
    configs = [env.config(f"par{i}") for i in range(20)]
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(env.run, configs))
    elapsed = time.monotonic() - started
    assert len(set(ids)) == 20
    ips = [env.status(i).status.network.ip for i in ids]
    assert len(set(ips)) == 20 and all(ipaddress.ip_address(ip) in env.subnet for ip in ips)
    assert env.leases() == sorted(ips)
    print(f"\n20 parallel RunPodSandbox: {elapsed:.2f}s")
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(env.remove, ids))
    assert env.leases() == [] and env.list() == []


def test_restart_recovers_pods_and_releases_ips_afterwards(env: PodEnv) -> None:
    alive = env.run(env.config("alive"))
    vanished = env.run(env.config("vanished", pid=pb.CONTAINER))
    orphan = env.run(env.config("orphan"))
    ips = {p: env.status(p).status.network.ip for p in (alive, vanished, orphan)}
    vanished_netns = env.info(vanished)["netns"]
    orphan_infra = env.info(orphan)["infraPid"]
    alive_infra = env.info(alive)["infraPid"]
    assert env.peapod.stop(signal.SIGKILL) == -signal.SIGKILL
    # While the daemon is down: one pod loses its namespaces (as after a reboot),
    # another its infra process.
    umount_all(Path(vanished_netns))
    os.unlink(vanished_netns)
    os.kill(orphan_infra, signal.SIGKILL)
    procs.wait_until(lambda: procs.comm(orphan_infra) != "catatonit", 5)
    env.peapod.start()
    st = env.status(alive).status
    assert st.state == pb.SANDBOX_READY and st.network.ip == ips[alive]
    assert env.info(alive)["infraPid"] == alive_infra
    assert env.status(vanished).status.state == pb.SANDBOX_NOTREADY
    assert env.status(orphan).status.state == pb.SANDBOX_NOTREADY
    # The vanished pod's DEL runs in the background and frees its IP.
    assert procs.wait_until(lambda: ips[vanished] not in env.leases(), 10)
    assert ips[orphan] in env.leases() and ips[alive] in env.leases()
    env.stop(alive)  # DEL from the persisted attachment
    assert ips[alive] not in env.leases()
    assert procs.wait_until(lambda: procs.comm(alive_infra) != "catatonit", 5)
    config = env.config("after")
    assert env.run(config)  # the daemon works as before
    env.remove_all_pods()
    assert env.leases() == []
    # bridge 1.1.1 cannot drop the masquerade rule of a pod whose netns vanished before DEL
    # (the caveat in the README); everything else is gone.
    leftovers = [ln for ln in env.firewall_lines() if vanished not in ln]
    assert leftovers == []
    env._sweep_rules()


def test_failing_plugin_is_named_and_rolled_back(flaky: PodEnv) -> None:
    flaky.marker("fail-add")
    before_err = metric_value(flaky.peapod.metrics_text(), "peapod_cni_errors_total",
                              {"plugin": flaky.flaky})
    err = code_of(lambda: flaky.run(flaky.config("failing")))
    assert err.code() == grpc.StatusCode.INTERNAL
    details = err.details()
    assert f"CNI plugin '{flaky.flaky}' (plugin 2 of 3 in network '{flaky.netname}'" in details
    assert "CNI error code 104: forced failure" in details
    assert "plugin stderr: refusing on purpose" in details
    assert flaky.list() == [] and flaky.db_rows() == []
    assert list((flaky.peapod.runroot / "pods").iterdir()) == []
    assert flaky.mounts() == []
    assert flaky.leases() == []
    assert json.loads(sh("ip", "-j", "link", "show", "master", flaky.bridge,
                         check=False).stdout or "[]") == []
    assert flaky.firewall_lines() == []
    assert not any(list(d.glob("pod*")) for d in flaky.cgroup_dirs())
    after_err = metric_value(flaky.peapod.metrics_text(), "peapod_cni_errors_total",
                             {"plugin": flaky.flaky})
    assert after_err == before_err + 1
    flaky.unmark("fail-add")
    pod = flaky.run(flaky.config("works"))  # the same name may be used again
    assert flaky.status(pod).status.state == pb.SANDBOX_READY
    flaky.remove(pod)


def test_failed_add_whose_rollback_del_fails_keeps_the_pod_until_del_works(
    flaky: PodEnv,
) -> None:
    flaky.marker("fail-add")
    flaky.marker("fail-del")
    config = flaky.config("unrolled")
    events = EventLog(flaky)
    err = code_of(lambda: flaky.run(config))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "forced failure" in err.details() and "kept NOTREADY" in err.details()
    # The network namespace stays pinned with the attachment recorded, so DEL can still run.
    (kept,) = [p for p in flaky.list() if p.metadata.name == config.metadata.name]
    assert kept.state == pb.SANDBOX_NOTREADY
    info = flaky.info(kept.id)
    assert info["pendingNetworkTeardown"] is True and Path(info["netns"]).exists()
    assert [a["ifname"] for a in info["cni"]] == ["eth0"]
    flaky.unmark("fail-add")
    flaky.unmark("fail-del")
    assert procs.wait_until(lambda: not flaky.info(kept.id)["pendingNetworkTeardown"], 15)
    flaky.remove(kept.id)
    assert flaky.leases() == [] and flaky.mounts() == [] and flaky.firewall_lines() == []
    assert flaky.db_rows() == []
    # The kubelet saw the kept pod created and stopped (never started) before its removal.
    notready = pb.SANDBOX_NOTREADY
    try:
        assert procs.wait_until(lambda: len(events.of(kept.id)) >= 3, 10, 0.05), events.events
        assert events.of(kept.id) == [(pb.CONTAINER_CREATED_EVENT, notready),
                                      (pb.CONTAINER_STOPPED_EVENT, notready),
                                      (pb.CONTAINER_DELETED_EVENT, notready)]  # fmt: skip
    finally:
        events.close()


def test_failed_del_is_retried_in_the_background(flaky: PodEnv) -> None:
    pod = flaky.run(flaky.config("sticky", pid=pb.CONTAINER))
    ip = flaky.status(pod).status.network.ip
    netns = flaky.info(pod)["netns"]
    flaky.marker("fail-del")
    err = code_of(lambda: flaky.stop(pod))
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert flaky.flaky in err.details() and "retried in the background" in err.details()
    assert flaky.status(pod).status.state == pb.SANDBOX_NOTREADY
    assert flaky.info(pod)["pendingNetworkTeardown"] is True
    assert flaky.leases() == [ip]  # DEL stopped at the test plugin, before bridge's
    err = code_of(lambda: flaky.remove(pod))  # refuses to unpin the netns before DEL works
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert Path(netns).exists()
    flaky.unmark("fail-del")
    assert procs.wait_until(lambda: not flaky.info(pod)["pendingNetworkTeardown"], 15)
    assert flaky.leases() == [] and flaky.firewall_lines() == []
    flaky.remove(pod)
    assert not Path(netns).exists()


def test_retry_of_a_call_in_progress_gets_the_same_pod(flaky: PodEnv) -> None:
    other = flaky.run(flaky.config("bystander"))
    config = flaky.config("slow")
    flaky.marker("slow-add", "2")
    err = code_of(lambda: flaky.run(config, timeout=0.5))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # While that pod is still being built, calls about other pods answer at once.
    started = time.monotonic()
    for _ in range(20):
        flaky.status(other)
        flaky.list()
    assert time.monotonic() - started < 1.0
    retried = flaky.run(config, timeout=20)  # waits for the first call's pod
    flaky.unmark("slow-add")
    assert flaky.status(retried).status.state == pb.SANDBOX_READY
    assert [p.id for p in flaky.list() if p.metadata.name == config.metadata.name] == [retried]
    err = code_of(lambda: flaky.run(config))  # handed over once; now it simply exists
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and retried in err.details()
    flaky.remove_all_pods()


def _as_if_still_creating(env: PodEnv, pod_ids: list[str]) -> None:
    """Rewrite the rows of a stopped daemon as if it died after ADD, before READY."""
    conn = sqlite3.connect(env.peapod.root / "peapod.db")
    try:
        with conn:
            for pod_id in pod_ids:
                (text,) = conn.execute("SELECT record FROM sandboxes WHERE id = ?",
                                       (pod_id,)).fetchone()
                record = json.loads(text)
                record.update(state="creating", ips=[])
                conn.execute("UPDATE sandboxes SET state = 'creating', record = ? WHERE id = ?",
                             (json.dumps(record), pod_id))
    finally:
        conn.close()


def test_restart_serves_at_once_while_a_half_built_pods_del_hangs(flaky: PodEnv) -> None:
    configs = [flaky.config("half"), flaky.config("halfremoved")]
    pods = [flaky.run(c) for c in configs]
    ips = [flaky.status(p).status.network.ip for p in pods]
    infos = [flaky.info(p) for p in pods]
    assert flaky.peapod.stop(signal.SIGKILL) == -signal.SIGKILL
    _as_if_still_creating(flaky, pods)
    flaky.marker("slow-del", "30")  # every DEL hangs until the marker goes
    started = time.monotonic()
    flaky.peapod.start()  # returns once Version answers
    assert time.monotonic() - started < 3.0
    for pod in pods:  # visible, NOTREADY, DEL pending, netns still pinned
        assert flaky.status(pod).status.state == pb.SANDBOX_NOTREADY
        assert flaky.info(pod)["pendingNetworkTeardown"] is True
    assert all(Path(i["netns"]).exists() for i in infos)
    err = code_of(lambda: flaky.run(configs[0]))  # the name stays reserved
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and pods[0] in err.details()
    with ThreadPoolExecutor(1) as pool:
        removal = pool.submit(flaky.remove, pods[1])  # waits for / runs the DEL itself
        time.sleep(0.5)
        assert not removal.done()
        flaky.unmark("slow-del")
        removal.result(timeout=20)
    # The other one is taken apart in the background once its DEL works.
    assert procs.wait_until(lambda: not {p.id for p in flaky.list()} & set(pods), 15)
    assert not {r[0] for r in flaky.db_rows()} & set(pods)
    assert not set(ips) & set(flaky.leases())
    for pod, info in zip(pods, infos, strict=True):
        assert not Path(info["podDir"]).exists() and not Path(info["netns"]).exists()
        assert not [m for m in flaky.mounts() if pod in m]
        assert not [ln for ln in flaky.firewall_lines() if pod in ln]
        assert not any(list(d.glob(f"*{pod}*")) for d in flaky.cgroup_dirs())
        assert procs.wait_until(lambda: procs.comm(info["infraPid"]) != "catatonit", 5)  # noqa: B023
    pod = flaky.run(configs[0])  # the name is free again
    flaky.remove(pod)


def test_network_ready_follows_the_config_dir_and_host_network_needs_none() -> None:
    with pod_env(network=False, wait_for_config=1.0) as env:
        conds = {c.type: c for c in env.rt.Status(pb.StatusRequest()).status.conditions}
        assert conds["RuntimeReady"].status is True
        assert conds["NetworkReady"].status is False
        assert conds["NetworkReady"].reason == "NetworkPluginNotReady"
        assert "no valid network config" in conds["NetworkReady"].message
        started = time.monotonic()
        err = code_of(lambda: env.run(env.config("waiting")))
        assert time.monotonic() - started >= 1.0
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "pod network is not ready after waiting 1s" in err.details()
        assert env.list() == [] and env.db_rows() == []

        host = env.run(env.config("hostnet", host_network=True))
        info = env.info(host)
        assert info["netns"] == "" and set(info["namespaces"]) == {"ipc"}
        assert info["cni"] == [] and env.status(host).status.network.ip == ""
        assert Path(info["podDir"], "hostname").read_text().strip() == socket.gethostname()
        assert env.status(host).status.linux.namespaces.options.network == pb.NODE

        env.write_conflist()
        assert procs.wait_until(lambda: {
            c.type: c.status for c in env.rt.Status(pb.StatusRequest()).status.conditions
        }["NetworkReady"], 3, interval=0.1)
        pod = env.run(env.config("nowready"))
        assert ipaddress.ip_address(env.status(pod).status.network.ip) in env.subnet
        env.remove_all_pods()
        assert env.leases() == [] and env.mounts() == []
