"""A real kubelet (standalone: static pods, no API server) runs pods on peapod.

One kubelet and one peapod serve the module. peapod has a CNI bridge on a test /24, so
pods get real IPs; the kubelet's configuration keeps every path in its temporary folder
(see ``support.kubelet``). The static pods, on an image this test pushes to the
loopback registry:

- ``probes``: exec probes: ``box`` passes both, ``unready`` fails readiness, ``sick``
  fails liveness after a few seconds and is restarted for it;
- ``crasher``: exits every 2 s under restartPolicy Always;
- ``web``: busybox httpd with an HTTP readiness probe and a hostPort;
- ``initpod``: an init container, then two containers sharing a PID namespace;
- ``pullfail``: an image the registry lacks; ``cmdfail``: a command that fails.

Checks read the kubelet's own endpoints (/pods, /healthz, /containerLogs, /run, /exec,
/stats/summary) and peapod through crictl; the last tests remove manifests and check
the host. Every CRI error the kubelet logs must be on ``tests/expected-failures.yaml``
(``kubelet:``), provoked here, or NotFound for a container the kubelet had removed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from support.census import Snapshot, cni_chain, describe, leaks
from support.images import push_busybox
from support.kubelet import crictl, static_pod
from support.kubelet_log import (
    AlreadyRemoved,
    Expected,
    Window,
    check,
    cri_errors,
    load_expected,
    removed_containers,
    tally,
)
from support.kubelet_node import KubeletNode
from support.ports import free_port
from support.registry import Registry

pytestmark = pytest.mark.integration
T = TypeVar("T")
NODE = "peapod-node"
STABLE = (("probes", "box"), ("probes", "unready"), ("web", "web"), ("initpod", "init"),
          ("initpod", "main"), ("initpod", "helper"))  # containers that never restart
GREETING = "hello from the init container"
WEB_PAGE = "served by busybox httpd in a peapod pod"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def manifests(image: str, missing_image: str, host_port: int) -> dict[str, dict[str, Any]]:
    """The module's static pods, by manifest name."""
    def box(name: str, script: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "image": image, "command": ["sh", "-c", script], **extra}

    def exec_probe(cmd: str, period: int = 1, threshold: int = 1) -> dict[str, Any]:
        return {"exec": {"command": ["sh", "-c", cmd]}, "periodSeconds": period,
                "failureThreshold": threshold, "timeoutSeconds": 5}

    sleep = "exec sleep 1000000"
    return {
        "probes": static_pod("probes", [
            box("box", f"sleep 2; touch /tmp/ready; {sleep}",
                readinessProbe=exec_probe("cat /tmp/ready"),
                livenessProbe=exec_probe("true", period=2, threshold=3)),
            box("unready", sleep, readinessProbe=exec_probe("cat /nonexistent")),
            box("sick", f"sleep 3; touch /tmp/sick; {sleep}",
                livenessProbe=exec_probe("test ! -e /tmp/sick")),
        ], terminationGracePeriodSeconds=1),
        "crasher": static_pod("crasher", [
            box("crasher", "echo crasher run $(cat /proc/uptime); sleep 2"),
        ], restartPolicy="Always"),
        "web": static_pod("web", [
            box("web", f"mkdir -p /www && echo '{WEB_PAGE}' > /www/index.html && "
                       "exec httpd -f -p 8080 -h /www",
                ports=[{"containerPort": 8080, "hostPort": host_port, "protocol": "TCP"}],
                readinessProbe={"httpGet": {"path": "/", "port": 8080},
                                "periodSeconds": 1, "failureThreshold": 1}),
        ]),
        "initpod": static_pod("initpod", [
            box("main", f"cat /work/greeting; {sleep}",
                volumeMounts=[{"name": "work", "mountPath": "/work"}]),
            box("helper", "exec sleep 999999"),
        ], shareProcessNamespace=True, volumes=[{"name": "work", "emptyDir": {}}],
            initContainers=[box("init", f"echo '{GREETING}' > /work/greeting",
                                volumeMounts=[{"name": "work", "mountPath": "/work"}])]),
        "pullfail": static_pod("pullfail", [
            {"name": "ghost", "image": missing_image, "command": ["true"]},
        ]),
        "cmdfail": static_pod("cmdfail", [box("fails", "echo failing on purpose >&2; exit 3")]),
    }


class Node(KubeletNode):
    """The module's node, with the images and host port its pods use."""

    def __init__(self, registry: Registry) -> None:
        self.image = push_busybox(registry.host, repo="kubelet/busybox").ref
        self.missing_image = f"{registry.host}/kubelet/missing:nope"
        self.host_port = free_port()
        # Two dead instances kept per container: with one, the kubelet's container deletor
        # removes the instance its own status still names as lastState until the next
        # sync, and kubectl logs --previous meets NotFound in between.
        super().__init__(registry.host, manifests(self.image, self.missing_image,
                                                  self.host_port), NODE, gc_flags=(
            "--minimum-container-ttl-duration=0s", "--maximum-dead-containers-per-container=2"))


def identity(node: Node) -> dict[str, str]:
    """Sandbox ids and IPs of the ready pods, container ids of the stable containers."""
    out: dict[str, str] = {}
    pods = node.runtime_pods()
    for name, pod in pods.items():
        out[f"{name} sandbox"] = pod["id"]
        out[f"{name} ip"] = node.pod_ip(pod["id"])
    by_pod = {p["id"]: name for name, p in pods.items()}
    for c in node.runtime_containers():
        key = (by_pod.get(c["podSandboxId"], "?"), c["metadata"]["name"])
        if key in STABLE:
            assert f"{key} container" not in out, f"two containers for {key}"
            out[f"{key} container"] = c["id"]
    return out


@pytest.fixture(scope="module")
def node(registry: Registry) -> Iterator[Node]:
    if os.geteuid() != 0:
        pytest.fail("the kubelet test needs root (cgroups, mounts, iptables)")
    n = Node(registry)
    try:
        n.start()
        yield n
    finally:
        left = n.teardown()
        assert not left, f"the kubelet test left behind: {left}"


def ready_pods(node: Node) -> dict[str, dict[str, Any]] | None:
    """The running containers' statuses once every pod that can run is as intended."""
    s = {name: node.statuses(name) for name in ("probes", "web", "initpod")}
    want = [s["probes"].get("box", {}).get("ready"), s["web"].get("web", {}).get("ready"),
            "running" in s["initpod"].get("main", {}).get("state", {}),
            "running" in s["initpod"].get("helper", {}).get("state", {}),
            "running" in s["probes"].get("unready", {}).get("state", {})]
    return s if all(want) else None


def test_pods_run_with_probes_and_real_ips(node: Node) -> None:
    s = wait_for("the probes, web and init pods to run", lambda: ready_pods(node), 120)
    assert node.kubelet.healthy()
    assert s["probes"]["unready"]["ready"] is False  # its readiness probe always fails
    pods = {n: node.kpod(n) for n in ("probes", "web", "initpod")}
    ips = {n: p["status"]["podIP"] for n, p in pods.items() if p}
    assert len(set(ips.values())) == 3, ips
    for name, ip in ips.items():
        assert ipaddress.ip_address(ip) in node.env.subnet, (name, ip)
        assert pods[name]["status"]["phase"] == "Running"
    runtime = node.runtime_pods()
    assert {n: node.pod_ip(runtime[n]["id"]) for n in ips} == ips
    # The HTTP probe passed, and the page answers on the pod IP and on the host port.
    for url in (f"http://{ips['web']}:8080/", f"http://127.0.0.1:{node.host_port}/"):
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read().decode().strip() == WEB_PAGE, url


def test_failed_liveness_probe_restarts_the_container(node: Node) -> None:
    def restarted() -> dict[str, Any] | None:
        cs = node.statuses("probes").get("sick", {})
        return cs if cs.get("restartCount", 0) >= 1 else None

    cs = wait_for("the kubelet to restart the container failing liveness", restarted, 60)
    last = cs["lastState"]["terminated"]
    assert last["exitCode"] == 137, last  # sleep as PID 1 ignores SIGTERM: killed
    box = node.statuses("probes")["box"]
    assert box["restartCount"] == 0 and box["ready"] is True


def test_init_container_and_shared_pid_namespace(node: Node) -> None:
    s = node.statuses("initpod")
    init = s["init"]["state"]["terminated"]
    assert (init["exitCode"], init["reason"]) == (0, "Completed")
    log = (node.log_dir("initpod") / "main" / "0.log").read_text()
    assert re.search(rf"^\S+ stdout F {GREETING}$", log, re.M), log
    main_id = s["main"]["containerID"].split("://")[1]
    ps = crictl(node.endpoint, "exec", "-s", main_id, "ps", "-o", "pid,args")
    table = dict(line.split(None, 1) for line in ps.splitlines()[1:] if line.strip())
    # PID 1 is peapod's infra process; the helper's sleep is visible from main.
    assert table.get("1", "").split()[0].endswith("/catatonit"), ps
    assert {"sleep 999999", "sleep 1000000"} <= {a.strip() for a in table.values()}, ps


def test_failures_show_the_kubelet_reasons(node: Node) -> None:
    wait_for("ErrImagePull and ImagePullBackOff",
             lambda: {"waiting:ErrImagePull", "waiting:ImagePullBackOff"}
             <= node.history.seen("pullfail", "ghost"), 90)
    wait_for("CrashLoopBackOff", lambda: "waiting:CrashLoopBackOff"
             in node.history.seen("cmdfail", "fails"), 60)
    cs = node.statuses("cmdfail")["fails"]
    last = cs["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error"), last
    ghost = node.statuses("pullfail")["ghost"]["state"]["waiting"]
    assert node.missing_image in ghost.get("message", ""), ghost
    logs = sorted((node.log_dir("cmdfail") / "fails").iterdir())
    assert logs, "no log"
    log = logs[-1].read_text()
    assert re.search(r"^\S+ stderr F failing on purpose$", log, re.M), (logs, log, cs)


def test_restart_count_climbs_and_logs_are_kept(node: Node) -> None:
    def climbed() -> dict[str, Any] | None:
        cs = node.statuses("crasher").get("crasher", {})
        return cs if cs.get("restartCount", 0) >= 3 else None

    cs = wait_for("three restarts of the crasher", climbed, 90)
    assert cs["lastState"]["terminated"]["reason"] == "Completed"
    count = cs["restartCount"]
    logs = node.log_dir("crasher") / "crasher"
    current = logs / f"{count}.log"
    wait_for(f"{current}", lambda: current.exists() and current.read_text(), 20)
    runs = re.findall(r"^\S+ stdout F crasher run ([\d.]+)", current.read_text(), re.M)
    assert len(runs) == 1, current.read_text()
    # The previous instance through the kubelet's log endpoint, as kubectl logs -p reads it.
    pod = f"crasher-{NODE}"
    status, body = node.kubelet.secure(f"/containerLogs/default/{pod}/crasher?previous=true")
    assert status == 200, body
    assert re.fullmatch(r"crasher run [\d.]+ [\d.]+\n", body.decode()), body
    attempts = sorted(c["metadata"]["attempt"] for c in node.runtime_containers()
                      if c["metadata"]["name"] == "crasher")
    assert attempts[-1] >= count - 1, attempts


def test_dead_containers_are_collected(node: Node) -> None:
    first = wait_for("the crasher's first two containers",
                     lambda: node.history.container_ids("crasher", "crasher")[:2], 60)
    logs = node.log_dir("crasher") / "crasher"

    def collected() -> bool:
        present = {c["id"] for c in node.runtime_containers()}
        return first[0] not in present and not (logs / "0.log").exists()

    wait_for("the kubelet to remove the crasher's first container and its log", collected, 90)
    assert node.runtime_pods()["crasher"]["id"]  # the pod itself lives on

    def trimmed() -> bool:  # maximum-dead-containers-per-container=2
        return len([c for c in node.runtime_containers() if c["metadata"]["name"]
                    == "crasher" and c["state"] == "CONTAINER_EXITED"]) <= 2

    wait_for("at most two dead crasher containers", trimmed, 30)


def settled(node: Node, since: float) -> dict[str, str]:
    """Identity once every pod is as intended and a sync period has passed since ``since``."""
    wait_for("the pods to be ready again", lambda: ready_pods(node), 120)
    time.sleep(max(0.0, since + 12 - time.monotonic()))  # syncFrequency is 10 s
    wait_for("the pods to be ready again", lambda: ready_pods(node), 60)
    return identity(node)


def kubelet_ips(node: Node) -> dict[str, str]:
    return {n: (node.kpod(n) or {}).get("status", {}).get("podIP", "")
            for n in ("probes", "web", "initpod")}


def test_kubelet_restart_recreates_nothing(node: Node) -> None:
    before, ips = settled(node, 0), kubelet_ips(node)
    assert len([k for k in before if k.endswith("container")]) == len(STABLE), before
    t0 = time.monotonic()
    assert node.kubelet.stop() == 0
    node.kubelet.start()
    assert settled(node, t0) == before
    assert kubelet_ips(node) == ips


# What the kubelet meets while peapod is down: its socket gone, or the connection cut.
TRANSPORT = (r"rpc error: code = Unavailable desc = (connection error|error reading from "
             r"server|.*transport)")


def test_peapod_restart_recreates_nothing(node: Node) -> None:
    before, ips = settled(node, 0), kubelet_ips(node)
    t0, start = time.monotonic(), datetime.now().astimezone()
    assert node.env.peapod.stop() == 0
    node.start_peapod()
    node.windows.append(Window(start, datetime.now().astimezone() + timedelta(seconds=30),
                               TRANSPORT, "peapod restarted by the test"))
    assert settled(node, t0) == before
    assert kubelet_ips(node) == ips


def test_exec_run_and_port_forward_through_the_kubelet(node: Node) -> None:
    """kubectl's paths: WebSockets to the kubelet, which asks peapod for an Exec or
    PortForward URL and relays the session (exec: v5.channel.k8s.io, translated to SPDY
    towards peapod; port-forward: v4.channel.k8s.io, proxied); /run is ExecSync."""
    pod = f"/default/probes-{NODE}/box"
    status, body = node.kubelet.secure(f"/run{pod}?cmd=cat+/etc/hostname", method="POST")
    assert (status, body) == (200, f"probes-{NODE}\n".encode()), (status, body)
    # No cluster DNS: the pod gets the kubelet's resolvConf, through peapod's pod files.
    status, body = node.kubelet.secure(f"/run{pod}?cmd=cat+/etc/resolv.conf", method="POST")
    assert status == 200 and body.decode().split("\n")[:2] == [
        "nameserver 192.0.2.53", "search peapod.test"], (status, body)
    script = "echo via-kubelet; echo oops >&2; exit 3"
    query = "&".join(f"command={quote(a)}" for a in ("sh", "-c", script))
    got = node.kubelet.websocket(f"/exec{pod}?{query}&output=1&error=1", "v5.channel.k8s.io")
    assert (got.get(1), got.get(2)) == (b"via-kubelet\n", b"oops\n"), got
    status_doc = json.loads(got[3])
    assert status_doc["reason"] == "NonZeroExitCode", status_doc
    assert status_doc["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    # Port 8080 of the web pod: data on channel 0, errors on 1, each opened with the port.
    page = WEB_PAGE.encode()
    got = node.kubelet.websocket(
        f"/portForward/default/web-{NODE}?port=8080", "v4.channel.k8s.io",
        send=((0, b"GET / HTTP/1.0\r\n\r\n"),), until=lambda ch: page in ch.get(0, b""))
    port = (8080).to_bytes(2, "little")
    assert got.get(0, b"").startswith(port + b"HTTP/1.") and page in got[0], got
    assert got.get(1, b"") in (port, b""), got  # no error for the port


def veths(info: dict[str, Any]) -> set[str]:
    """Host-side interfaces in a pod's CNI results (crictl inspectp's verbose info)."""
    out = set()
    for attachment in info.get("cni", []):
        for iface in (attachment.get("result") or {}).get("interfaces", []):
            if not iface.get("sandbox") and iface["name"].startswith("veth"):
                out.add(iface["name"])
    return out


def pod_marks(node: Node, name: str) -> list[re.Pattern[str]]:
    """What names one pod's things on the host: ids, cgroup, IP, veth, CNI chains."""
    pod = node.runtime_pods()[name]
    inspect = node.crictl_json("inspectp", pod["id"])
    info = inspect["info"]
    ip = inspect["status"]["network"]["ip"]
    ids = [pod["id"], *(c["id"] for c in node.runtime_containers()
                        if c["podSandboxId"] == pod["id"])]
    marks = [*ids, f"pod{pod['metadata']['uid']}", *veths(info),
             *(cni_chain(node.env.netname, pod["id"], p) for p in ("", "DN-", "SN-"))]
    return [re.compile(re.escape(m)) for m in marks] + [
        re.compile(rf"(?<![\d.]){re.escape(ip)}(?![\d])")]


def marked(snapshot: Snapshot, marks: list[re.Pattern[str]]) -> dict[str, list[str]]:
    found = {cat: sorted(i for i in items if any(m.search(i) for m in marks))
             for cat, items in snapshot.items()}
    return {cat: items for cat, items in found.items() if items}


def test_removed_manifest_stops_and_removes_its_pod(node: Node) -> None:
    marks = pod_marks(node, "web")
    present = marked(node.census.snapshot(), marks)
    for cat in ("netns", "veths", "ip reservations", "cgroups", "processes", "iptables"):
        assert cat in present, f"no {cat} of the web pod seen before removal: {present}"
    node.kubelet.remove_manifest("web")
    wait_for("the kubelet to drop the web pod", lambda: node.kpod("web") is None, 60)
    wait_for("peapod to have no web pod", lambda: "web" not in {
        p["metadata"]["name"].removesuffix(f"-{NODE}")
        for p in node.crictl_json("pods")["items"]}, 120)
    left = marked(node.census.snapshot(), marks)
    assert not left, describe(left)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{node.host_port}/", timeout=5)
    assert not list(node.kubelet.dirs["pod-logs"].glob("default_web-*"))
    assert ready_pods_without_web(node)


def ready_pods_without_web(node: Node) -> bool:
    s = {name: node.statuses(name) for name in ("probes", "initpod")}
    return bool(s["probes"].get("box", {}).get("ready")
                and "running" in s["initpod"].get("main", {}).get("state", {}))


def summary_containers(node: Node) -> dict[tuple[str, str], dict[str, Any]]:
    """The kubelet's /stats/summary (read-only port): each container by (pod, name)."""
    status, body = node.kubelet.read_only("/stats/summary")
    assert status == 200, (status, body[:2000])
    return {(p["podRef"]["name"].removesuffix(f"-{NODE}"), c["name"]): c
            for p in json.loads(body)["pods"] for c in p.get("containers", [])}


def running_containers(node: Node) -> dict[tuple[str, str], str]:
    """peapod's running containers: (pod manifest name, container name) -> id."""
    by_pod = {p["id"]: name for name, p in node.runtime_pods().items()}
    return {(by_pod[c["podSandboxId"]], c["metadata"]["name"]): c["id"]
            for c in node.runtime_containers()
            if c["state"] == "CONTAINER_RUNNING" and c["podSandboxId"] in by_pod}


def with_figures(c: dict[str, Any]) -> bool:
    cpu, mem, rootfs = c.get("cpu", {}), c.get("memory", {}), c.get("rootfs", {})
    return ("usageCoreNanoSeconds" in cpu and "usageNanoCores" in cpu
            and "workingSetBytes" in mem and "usedBytes" in rootfs and "inodesUsed" in rootfs)


def test_stats_summary_shows_peapods_figures(node: Node) -> None:
    """Every running container is in /stats/summary with CPU (cumulative and cores),
    memory working set and rootfs (writable layer) figures, and they are peapod's: the
    kubelet's reading of ListContainerStats equals peapod's answer of the same round
    (peapod's lists serve the figures of its last collection round, so a crictl stats
    right after the summary gets the same sample, or a later one; retried until same)."""
    def all_there() -> dict[tuple[str, str], dict[str, Any]] | None:
        summary, running = summary_containers(node), running_containers(node)
        missing = [k for k in running if k not in summary or not with_figures(summary[k])]
        return summary if running and not missing else None

    wait_for("every running container in /stats/summary with its figures", all_there, 90)
    stable = [k for k in STABLE if k in running_containers(node)]
    assert len(stable) >= 3, stable

    def same_round() -> dict[str, Any] | None:
        summary = summary_containers(node)
        ids = running_containers(node)
        ours = {s["attributes"]["id"]: s for s in node.crictl_json("stats")["stats"]}
        for key in stable:
            theirs, mine = summary[key], ours[ids[key]]
            second = int(datetime.fromisoformat(theirs["cpu"]["time"]).timestamp())
            if second != int(mine["cpu"]["timestamp"]) // 10**9:  # the summary keeps seconds
                return None  # a collection round came between the two reads
            assert theirs["cpu"]["usageCoreNanoSeconds"] == int(
                mine["cpu"]["usageCoreNanoSeconds"]["value"]), key
            assert theirs["cpu"]["usageNanoCores"] == int(
                mine["cpu"]["usageNanoCores"]["value"]), key
            assert theirs["memory"]["workingSetBytes"] == int(
                mine["memory"]["workingSetBytes"]["value"]), key
            assert theirs["rootfs"]["usedBytes"] == int(
                mine["writableLayer"]["usedBytes"]["value"]), key
            assert theirs["rootfs"]["inodesUsed"] == int(
                mine["writableLayer"]["inodesUsed"]["value"]), key
            assert theirs["memory"]["workingSetBytes"] > 0, key
        return summary

    summary = wait_for("a summary and a crictl stats of the same round", same_round, 60)
    for key in stable:
        c = summary[key]
        print(f"{key}: cpu {c['cpu']['usageNanoCores']} n-cores, working set "
              f"{c['memory']['workingSetBytes']} B, rootfs {c['rootfs']['usedBytes']} B / "
              f"{c['rootfs']['inodesUsed']} inodes")


def test_removing_every_manifest_gives_the_host_back(node: Node) -> None:
    for name in node.pods:
        node.kubelet.remove_manifest(name)
    wait_for("the kubelet to drop every pod", lambda: not node.kubelet.pods(), 60)
    wait_for("peapod to have no pods and no containers", lambda: not node.crictl_json(
        "pods")["items"] and not node.runtime_containers(), 120)
    after = node.census.snapshot()
    qos = {"kubepods", "kubepods/besteffort", "kubepods/burstable"}
    after["cgroups"] = frozenset(c for c in after["cgroups"]
                                 if c.split(f"/{node.cgroup_root}/", 1)[1] not in qos)
    run = node.env.peapod.runroot
    made = {str(run / "pods"), str(run / "runtimes"), str(run / "runtimes" / "runc")}
    after["files"] = frozenset(f for f in after["files"] if "/images/" not in f
                               and f not in made)  # images stay; so do these parent dirs
    after["db rows"] = frozenset(r for r in after["db rows"] if not r.startswith("image "))
    left = leaks(node.before, after)
    assert not left, describe(left)
    assert not list(node.kubelet.dirs["pod-logs"].iterdir())


def test_every_cri_error_the_kubelet_logged_is_expected(node: Node) -> None:
    errors = cri_errors(node.kubelet.log_text())
    provoked = [
        Expected(rf"code = NotFound desc = .*{re.escape(node.missing_image)}",
                 "pullfail pulls an image the registry lacks"),
    ]
    removed = AlreadyRemoved(removed_containers(node.env.peapod.log_path.read_text()))
    verdict = check(errors, load_expected(), provoked, [*node.windows, removed])
    for kind, count in tally(errors).items():  # the census, shown with -s or on failure
        print(f"{count:5d}  {kind}")
    assert not verdict.unexplained and not verdict.absent, verdict.report()
