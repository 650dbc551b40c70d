"""Containers through peapod's socket: conmon over runc, real images from the test registry.

One daemon serves the module. Pods use the host network unless a test is about
namespaces; those get a loopback-only CNI network (no bridge, no firewall rules).
After every test all pods are removed and the test fails if any mount, conmon,
container process, runtime state, container cgroup or container directory is left.
The module's teardown sweeps whatever a failing test left behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from support.daemon import Peapod, metric_value, registries_conf_text
from support.daemon_leftovers import DaemonLeftovers
from support.images import StandardImages, build_image, busybox_rootfs_layer, marker_layer, push
from support.registry import Registry

from api import api_pb2 as pb
from conmon import crilog, procs
from cri.liveness import INTERVAL_ENV
from sandbox.cgroup_layout import V2, detect_layout
from sandbox.cgroups import hierarchy_roots

PROBE = 0.3  # the daemon's liveness probe interval in these tests (10 s in production)
RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin") or "/usr/sbin/runc"
CONMON = "/usr/bin/conmon"
CRUN = shutil.which("crun", path="/usr/sbin:/usr/bin") or "/usr/bin/crun"
PLUGIN_DIR = "/usr/lib/cni"


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("container tests need root (mounts, cgroups, namespaces)")
    for path in (RUNC, CONMON, f"{PLUGIN_DIR}/loopback"):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing; run deploy/setup.sh test")


class Env(DaemonLeftovers):
    """The module's daemon, its directories and cgroup parent, and the checks on them."""

    def __init__(self, registry: Registry) -> None:
        self.tag = secrets.token_hex(3)
        self.base = Path(tempfile.mkdtemp(prefix="peapod-ctr-"))
        self.cgroup_parent = f"peapod-ctr-{self.tag}"
        self.logs = self.base / "logs"
        self.flags = self.base / "flags"
        net = self.base / "net.d"
        for d in (self.logs, self.flags, net):
            d.mkdir()
        (net / "10-lo.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": f"pp-lo-{self.tag}",
            "plugins": [{"type": "loopback"}],
        }))  # fmt: skip
        self.roots = {
            "runc": self.base / "run" / "runtimes" / "runc",
            "runc-b": self.base / "runc-b",
        }
        self.peapod = Peapod(
            self.base,
            registries_conf=registries_conf_text([registry.host]),
            env={INTERVAL_ENV: str(PROBE)},
            config={
                "network": {"network_dir": str(net), "plugin_dirs": [PLUGIN_DIR]},
                "sandbox": {"default_cgroup_parent": self.cgroup_parent},
                "runtime": {
                    "runtimes": {
                        "runc": {"runtime_path": RUNC},
                        "runc-b": {"runtime_path": RUNC, "runtime_root": str(self.roots["runc-b"])},
                        "crun": {"runtime_path": CRUN},
                        "broken": {"runtime_path": "/bin/false"},
                        "hang": {"runtime_path": str(self.hang_runtime())},
                    }
                },
            },
        )

    def hang_runtime(self) -> Path:
        """A "runtime" whose create never finishes (everything else succeeds)."""
        script = self.base / "hang-runtime"
        script.write_text('#!/bin/sh\ncase " $* " in *" create "*) exec sleep 600;; esac\n')
        script.chmod(0o755)
        return script

    @property
    def rt(self) -> Any:
        return self.peapod.runtime

    # ---- pods and containers -------------------------------------------
    def pod(self, handler: str = "", host_network: bool = True, pid: int = pb.POD,
            ipc: int = pb.POD, hostname: str = "") -> str:  # fmt: skip
        uid = secrets.token_hex(6)
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"p{uid}", uid=uid, namespace="test"),
            log_directory=str(self.logs / uid),
            hostname=hostname,
        )
        ns = cfg.linux.security_context.namespace_options
        ns.network = pb.NODE if host_network else pb.POD
        ns.pid, ns.ipc = pid, ipc
        req = pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler)
        return str(self.rt.RunPodSandbox(req, timeout=60).pod_sandbox_id)

    def create(self, pod: str, image: str, command: list[str], *, name: str = "c",
               **config: Any) -> str:  # fmt: skip
        linux = config.pop("linux", None)
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

    def status(self, ctr: str, verbose: bool = False) -> pb.ContainerStatusResponse:
        req = pb.ContainerStatusRequest(container_id=ctr, verbose=verbose)
        return self.rt.ContainerStatus(req, timeout=10)

    def info(self, ctr: str) -> dict[str, Any]:
        return dict(json.loads(self.status(ctr, verbose=True).info["info"]))

    def wait_exit(self, ctr: str, timeout: float = 10) -> pb.ContainerStatus:
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(ctr).status
            if st.state == pb.CONTAINER_EXITED or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def exec(self, ctr: str, cmd: list[str], timeout: int = 0) -> pb.ExecSyncResponse:
        req = pb.ExecSyncRequest(container_id=ctr, cmd=cmd, timeout=timeout)
        return self.rt.ExecSync(req, timeout=60)

    def sh(self, ctr: str, script: str) -> str:
        got = self.exec(ctr, ["sh", "-c", script])
        assert got.exit_code == 0, got.stderr
        return got.stdout.decode()

    def stop(self, ctr: str, timeout: int = 0) -> None:
        self.rt.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=timeout),
                              timeout=timeout + 30)  # fmt: skip

    def remove(self, ctr: str) -> None:
        self.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr), timeout=30)

    def containers(self, flt: pb.ContainerFilter | None = None) -> list[pb.Container]:
        req = pb.ListContainersRequest() if flt is None else pb.ListContainersRequest(filter=flt)
        return list(self.rt.ListContainers(req, timeout=10).containers)

    def remove_all(self) -> None:
        items = self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items
        for item in items:
            self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=item.id),
                                     timeout=60)  # fmt: skip

    # ---- what is left on the host --------------------------------------
    def container_cgroups(self) -> list[Path]:
        """Container cgroups (pod/<64 hex>) under our parent in any hierarchy."""
        out = []
        for root in hierarchy_roots(detect_layout()):
            top = root / self.cgroup_parent
            if top.is_dir():
                out += [p for p in top.glob("*/*") if p.is_dir() and len(p.name) == 64]
        return out

    def runtime_state(self) -> list[str]:
        return [f"{name}/{p.name}" for name, root in self.roots.items() if root.is_dir()
                for p in root.iterdir()]  # fmt: skip

    def runtime_roots(self) -> list[Path]:
        return list(self.roots.values())

    def leftovers(self) -> dict[str, list[Any]]:
        found = {
            "mounts": self.mounts(),
            "processes": self.our_processes(),
            "cgroups": self.container_cgroups(),
            "runtime state": self.runtime_state(),
            "container dirs": self.container_dirs(),
        }
        return {k: v for k, v in found.items() if v}

@pytest.fixture(scope="module")
def env(registry: Registry, test_images: StandardImages) -> Iterator[Env]:
    e = Env(registry)
    try:
        e.peapod.start()
        for ref in (test_images.busybox.ref, test_images.busybox_user.ref):
            e.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)),
                                      timeout=60)  # fmt: skip
        yield e
    finally:
        e.sweep()


@pytest.fixture(autouse=True)
def clean(env: Env) -> Iterator[None]:
    """Each test ends with every pod removed and nothing of its containers left."""
    yield
    if env.peapod.proc is None:
        env.peapod.start()
    env.remove_all()
    assert env.containers() == []
    assert env.leftovers() == {}


@pytest.fixture
def busybox(test_images: StandardImages) -> str:
    return test_images.busybox.ref


def log_lines(env: Env, ctr: str) -> list[crilog.LogLine]:
    return crilog.read_log(env.status(ctr).status.log_path, strict=True)


def wait_for(predicate: Any, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---- lifecycle ------------------------------------------------------------------


def test_lifecycle_status_list_and_cri_log(env: Env, busybox: str) -> None:
    pod = env.pod()
    ctr = env.create(pod, busybox, ["sh", "-c", "echo out; echo err >&2; exec sleep 1000"],
                     labels={"app": "web"}, annotations={"note": "x"})  # fmt: skip
    st = env.status(ctr).status
    assert st.state == pb.CONTAINER_CREATED and st.created_at > 0 and st.started_at == 0
    assert st.image.image == busybox and st.image_id.startswith("sha256:")
    assert st.image_ref.startswith(busybox.rsplit(":", 1)[0] + "@sha256:")
    image = env.peapod.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=busybox)))
    assert st.image_id == image.image.id
    assert st.log_path.startswith(str(env.logs)) and st.log_path.endswith("/c/0.log")
    assert dict(st.labels) == {"app": "web"} and dict(st.annotations) == {"note": "x"}
    assert st.stop_signal == pb.SIGNAL_SIGTERM

    env.start(ctr)
    st = env.status(ctr).status
    assert st.state == pb.CONTAINER_RUNNING and st.started_at >= st.created_at
    wait_for(lambda: len(log_lines(env, ctr)) == 2, what="two log lines")
    lines = sorted(log_lines(env, ctr), key=lambda line: line.stream)
    assert [(ln.stream, ln.partial, ln.content) for ln in lines] == [
        ("stderr", False, b"err"), ("stdout", False, b"out"),
    ]  # fmt: skip
    assert all(abs(ln.timestamp_ns - time.time_ns()) < 60e9 for ln in lines)

    info = env.info(ctr)
    assert info["pid"] > 0 and procs.is_alive(info["pid"])
    assert info["runtimeSpec"]["process"]["args"] == ["sh", "-c",
                                                       "echo out; echo err >&2; exec sleep 1000"]
    listed = env.containers()
    assert [c.id for c in listed] == [ctr] and listed[0].state == pb.CONTAINER_RUNNING
    assert listed[0].image_id == st.image_id and listed[0].pod_sandbox_id == pod
    by = env.containers
    assert [c.id for c in by(pb.ContainerFilter(id=ctr[:12]))] == [ctr]
    assert [c.id for c in by(pb.ContainerFilter(pod_sandbox_id=pod))] == [ctr]
    assert [c.id for c in by(pb.ContainerFilter(label_selector={"app": "web"}))] == [ctr]
    assert by(pb.ContainerFilter(label_selector={"app": "db"})) == []
    exited = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_EXITED))
    assert by(exited) == []
    assert env.status(ctr[:10]).status.id == ctr  # a unique prefix works
    metrics = env.peapod.metrics_text()
    assert metric_value(metrics, "peapod_containers", {"state": "running"}) == 1
    assert metric_value(metrics, "peapod_operations_latency_seconds_count",
                        {"operation": "CreateContainer"}) >= 1  # fmt: skip

    env.stop(ctr, timeout=5)
    st = env.status(ctr).status
    assert st.state == pb.CONTAINER_EXITED and st.exit_code == 143 and st.reason == "Error"
    assert st.finished_at >= st.started_at
    assert not procs.is_alive(info["pid"])
    env.stop(ctr, timeout=5)  # stopping again is fine
    assert [c.id for c in by(exited)] == [ctr]
    env.remove(ctr)
    env.remove(ctr)  # and so is removing again
    with pytest.raises(grpc.RpcError) as err:
        env.status(ctr)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    env.stop(ctr)  # unknown containers: stop and remove succeed (critest idempotence)
    env.remove("0" * 64)


def test_exit_codes_reasons_and_oom(env: Env, busybox: str) -> None:
    pod = env.pod()
    ok = env.run(pod, busybox, ["true"], name="ok")
    fail = env.run(pod, busybox, ["sh", "-c", "exit 3"], name="fail")
    limits = pb.LinuxContainerConfig(
        resources=pb.LinuxContainerResources(memory_limit_in_bytes=32 << 20)
    )
    hog = env.run(pod, busybox, ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' x)"],
                  name="hog", linux=limits)  # fmt: skip
    got = {name: env.wait_exit(c) for name, c in (("ok", ok), ("fail", fail), ("hog", hog))}
    assert (got["ok"].exit_code, got["ok"].reason) == (0, "Completed")
    assert (got["fail"].exit_code, got["fail"].reason) == (3, "Error")
    assert (got["hog"].exit_code, got["hog"].reason) == (137, "OOMKilled")
    assert all(st.state == pb.CONTAINER_EXITED and st.finished_at > 0 for st in got.values())
    metrics = env.peapod.metrics_text()
    total = metric_value(metrics, "peapod_containers_oom_total")
    assert total >= 1  # every pod of this module is in namespace "test":
    assert metric_value(metrics, "peapod_containers_oom_by_namespace_total",
                        {"namespace": "test"}) == total  # fmt: skip


def test_exec_sync_output_exit_codes_and_timeout(env: Env, busybox: str) -> None:
    pod = env.pod()
    ctr = env.run(pod, busybox, ["sleep", "1000"])
    got = env.exec(ctr, ["sh", "-c", "echo hello; echo oops >&2; exit 4"])
    assert (got.stdout, got.stderr, got.exit_code) == (b"hello\n", b"oops\n", 4)
    big = env.exec(ctr, ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a"])
    assert big.stdout == b"a" * 300000 and big.exit_code == 0
    start = time.monotonic()
    slow = env.exec(ctr, ["sh", "-c", "sleep 30 & sleep 30"], timeout=1)
    took = time.monotonic() - start
    assert (slow.exit_code, slow.stderr) == (-1, b"command timed out")
    assert 0.9 < took < 5
    leftover = env.sh(ctr, "ps -o args | grep -c '^sleep 30' || true")
    assert leftover.strip() == "0"
    with pytest.raises(grpc.RpcError) as err:
        env.exec(ctr, ["/no/such/binary"])
    assert "no/such/binary" in (err.value.details() or "")
    stopped = env.run(pod, busybox, ["true"], name="done")
    env.wait_exit(stopped)
    with pytest.raises(grpc.RpcError) as err:
        env.exec(stopped, ["true"])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_stop_honours_grace_then_kills(env: Env, busybox: str) -> None:
    pod = env.pod()
    stubborn = env.run(pod, busybox, ["sh", "-c",
                                      "trap 'echo got-term' TERM; while true; do sleep 0.1; done"],
                       name="stubborn")  # fmt: skip
    polite = env.run(pod, busybox, ["sleep", "1000"], name="polite")
    wait_for(lambda: "sleep" in env.sh(stubborn, "ps -o args"), what="the loop to run")
    start = time.monotonic()
    env.stop(stubborn, timeout=2)
    took = time.monotonic() - start
    st = env.status(stubborn).status
    assert 2 <= took < 6, took
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 137)
    assert any(ln.content == b"got-term" for ln in log_lines(env, stubborn))
    start = time.monotonic()
    env.stop(polite, timeout=30)
    assert time.monotonic() - start < 2
    assert env.status(polite).status.exit_code == 143


def test_image_stop_signal(env: Env, registry: Registry) -> None:
    image = build_image([busybox_rootfs_layer()], {"StopSignal": "SIGINT"})
    pushed = push(registry.host, "busybox", "stopsignal", image)
    env.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=pushed.ref)),
                                timeout=60)  # fmt: skip
    try:
        pod = env.pod()
        script = "trap 'exit 42' INT; while true; do sleep 0.1; done"
        ctr = env.run(pod, pushed.ref, ["sh", "-c", script])
        assert env.status(ctr).status.stop_signal == pb.SIGNAL_SIGINT
        wait_for(lambda: "sleep" in env.sh(ctr, "ps -o args"), what="the loop to run")
        env.stop(ctr, timeout=10)
        assert env.status(ctr).status.exit_code == 42
        # The request's stop signal beats the image's.
        term = env.run(pod, pushed.ref, ["sleep", "1000"], name="term",
                       stop_signal=pb.SIGNAL_SIGTERM)  # fmt: skip
        assert env.status(term).status.stop_signal == pb.SIGNAL_SIGTERM
    finally:
        env.remove_all()
        env.peapod.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=pushed.ref)))


def test_start_rules_and_stop_of_created_container(env: Env, busybox: str) -> None:
    pod = env.pod()
    ctr = env.create(pod, busybox, ["sleep", "1000"])
    env.stop(ctr, timeout=10)  # never started: killed at once
    st = env.status(ctr).status
    assert st.state == pb.CONTAINER_EXITED and st.started_at == 0
    with pytest.raises(grpc.RpcError) as err:
        env.start(ctr)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        env.rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ctr), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# ---- what the container sees ---------------------------------------------------


def test_user_groups_readonly_rootfs_and_capabilities(
    env: Env, busybox: str, test_images: StandardImages
) -> None:
    pod = env.pod()
    image_user = env.run(pod, test_images.busybox_user.ref, ["sleep", "1000"], name="img")
    assert env.sh(image_user, "id").strip() == (
        "uid=1000(peapod) gid=1000(peapod) groups=1000(peapod),2000(extra)"
    )
    st = env.status(image_user).status
    assert (st.user.linux.uid, st.user.linux.gid) == (1000, 1000)
    assert 2000 in st.user.linux.supplemental_groups
    sc = pb.LinuxContainerSecurityContext(
        run_as_user=pb.Int64Value(value=1000), run_as_group=pb.Int64Value(value=3000),
        supplemental_groups=[4000], readonly_rootfs=True,
        capabilities=pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["KILL"]),
    )  # fmt: skip
    custom = env.run(pod, busybox, ["sleep", "1000"], name="custom",
                     linux=pb.LinuxContainerConfig(security_context=sc))  # fmt: skip
    # uid 1000 is "peapod" in the image, a member of group 2000: merged with the request's.
    assert env.sh(custom, "id -u; id -g; id -G").split() == ["1000", "3000", "3000", "2000", "4000"]
    assert "Read-only file system" in env.exec(custom, ["touch", "/x"]).stderr.decode()
    assert env.sh(custom, "touch /tmp/x 2>/dev/null || echo ro").strip() == "ro"
    caps = env.sh(custom, "grep CapBnd /proc/self/status").split()[1]
    # CRI-O's nine defaults, minus KILL (bit 5), plus NET_ADMIN (bit 12).
    default_bits = [0, 1, 3, 4, 5, 6, 7, 8, 10]  # CHOWN..NET_BIND_SERVICE
    expected = sum(1 << b for b in default_bits if b != 5) | (1 << 12)
    assert int(caps, 16) == expected
    plain = env.run(pod, busybox, ["sleep", "1000"], name="plain")
    eff = env.sh(plain, "grep CapEff /proc/self/status").split()[1]
    assert int(eff, 16) == sum(1 << b for b in default_bits)
    assert env.sh(plain, "id -u").strip() == "0"


def test_seccomp_runtime_default_and_unconfined(env: Env, busybox: str) -> None:
    pod = env.pod()

    def container(name: str, profile: pb.SecurityProfile | None) -> str:
        sc = pb.LinuxContainerSecurityContext()
        if profile is not None:
            sc.seccomp.CopyFrom(profile)
        return env.run(pod, busybox, ["sleep", "1000"], name=name,
                       linux=pb.LinuxContainerConfig(security_context=sc))  # fmt: skip

    runtime_default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    default = container("default", runtime_default)
    unset = container("unset", None)
    # A user namespace needs no capability: only the filter can refuse it.
    blocked = env.exec(default, ["unshare", "-U", "true"])
    assert blocked.exit_code != 0 and b"Operation not permitted" in blocked.stderr
    assert env.sh(default, "grep Seccomp: /proc/self/status").split()[1] == "2"
    assert env.exec(unset, ["unshare", "-U", "true"]).exit_code == 0
    assert env.sh(unset, "grep Seccomp: /proc/self/status").split()[1] == "0"


def test_pod_namespaces_as_requested(env: Env, busybox: str) -> None:
    own = env.pod(host_network=False, hostname="inside")
    shared = env.run(own, busybox, ["sleep", "1000"], name="a")
    other = env.run(own, busybox, ["sleep", "1000"], name="b")

    def ns(ctr: str, kind: str) -> str:
        return env.sh(ctr, f"readlink /proc/self/ns/{kind}").strip()

    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in ("net", "ipc", "uts", "pid")}
    for kind in ("net", "ipc", "uts", "pid"):
        assert ns(shared, kind) == ns(other, kind) != host[kind], kind
    assert env.sh(shared, "hostname").strip() == "inside"
    assert env.sh(shared, "ip -o link | cut -d: -f2").split() == ["lo"]
    # Pod PID namespace: each container sees the other's process.
    assert env.sh(shared, "ps -o args").count("sleep 1000") == 2

    private = pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
        namespace_options=pb.NamespaceOption(pid=pb.CONTAINER)))  # fmt: skip
    alone = env.run(own, busybox, ["sleep", "1000"], name="alone", linux=private)
    assert ns(alone, "pid") != ns(shared, "pid") and ns(alone, "net") == ns(shared, "net")
    assert env.sh(alone, "ps -o pid,args | grep -v ps").split()[:3] == ["PID", "COMMAND", "1"]

    hostpod = env.pod(host_network=True, pid=pb.NODE, ipc=pb.NODE)
    on_host = env.run(hostpod, busybox, ["sleep", "1000"], name="h")
    for kind in ("net", "ipc", "uts", "pid"):
        assert ns(on_host, kind) == host[kind], kind


def test_three_containers_talk_over_localhost(env: Env, busybox: str) -> None:
    pod = env.pod(host_network=False)
    www = env.base / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("hello from httpd\n")
    mount = pb.Mount(container_path="/www", host_path=str(www), readonly=True)
    server = env.run(pod, busybox, ["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
                     name="server", mounts=[mount])  # fmt: skip
    listener = env.run(pod, busybox, ["sh", "-c", "nc -l -p 9090 > /tmp/got"], name="listener")
    client = env.run(pod, busybox, ["sleep", "1000"], name="client")
    wait_for(lambda: env.exec(client, ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"])
             .exit_code == 0, what="httpd")  # fmt: skip
    page = env.sh(client, "wget -q -O - http://127.0.0.1:8080/")
    assert page == "hello from httpd\n"
    env.sh(client, "echo ping | nc 127.0.0.1 9090")
    wait_for(lambda: env.status(listener).status.state == pb.CONTAINER_EXITED, what="nc exit")
    assert env.status(server).status.state == pb.CONTAINER_RUNNING


# ---- images and handlers ---------------------------------------------------------


def test_sixty_layer_image_mounts(env: Env, registry: Registry) -> None:
    layers = [busybox_rootfs_layer()] + [
        marker_layer(f"/layers/{i:02d}", f"{i}\n") for i in range(59)
    ]
    pushed = push(registry.host, "sixty", "latest", build_image(layers))
    env.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=pushed.ref)),
                                timeout=120)  # fmt: skip
    try:
        pod = env.pod()
        ctr = env.run(pod, pushed.ref, ["sleep", "1000"])
        assert env.sh(ctr, "ls /layers | wc -l").strip() == "59"
        assert env.sh(ctr, "cat /layers/00 /layers/58").split() == ["0", "58"]
    finally:
        env.remove_all()
        env.peapod.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=pushed.ref)))


def test_image_in_use_cannot_be_removed(env: Env, busybox: str) -> None:
    pod = env.pod()
    ctr = env.create(pod, busybox, ["true"])
    with pytest.raises(grpc.RpcError) as err:
        env.peapod.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=busybox)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ctr in (err.value.details() or "")
    listed = env.peapod.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=busybox)))
    assert listed.image.id
    env.start(ctr)
    assert env.wait_exit(ctr).exit_code == 0


def test_runtime_handler_selection(env: Env, busybox: str) -> None:
    a = env.run(env.pod(), busybox, ["sleep", "1000"], name="a")
    b = env.run(env.pod(handler="runc-b"), busybox, ["sleep", "1000"], name="b")
    assert env.info(a)["runtimeHandler"] == "runc" and env.info(b)["runtimeHandler"] == "runc-b"
    assert sorted(env.runtime_state()) == sorted([f"runc/{a}", f"runc-b/{b}"])
    assert env.sh(b, "echo via-b").strip() == "via-b"
    env.stop(b)
    assert env.status(b).status.state == pb.CONTAINER_EXITED

    with pytest.raises(grpc.RpcError) as err:
        env.pod(handler="no-such-handler")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    handlers = env.rt.Status(pb.StatusRequest(), timeout=10).runtime_handlers
    assert [h.name for h in handlers] == ["", "runc", "broken", "crun", "hang", "runc-b"]
    assert handlers[0].features.recursive_read_only_mounts  # runc 1.1 knows "rro"
    assert not handlers[2].features.recursive_read_only_mounts  # /bin/false knows nothing


def test_crun_handler(env: Env, busybox: str) -> None:
    layout = detect_layout()
    if layout.version != V2:
        pytest.skip(f"crun refuses this host's {layout.version} cgroup layout (it needs "
                    "cgroup v2 mounted at /sys/fs/cgroup); handlers are tested with runc-b")
    ctr = env.run(env.pod(handler="crun"), busybox, ["sleep", "1000"])
    assert env.sh(ctr, "echo via-crun").strip() == "via-crun"


# ---- failures roll back ----------------------------------------------------------


def test_failures_leave_nothing_behind(env: Env, busybox: str, registry: Registry) -> None:
    pod = env.pod()
    missing = f"{registry.host}/busybox:not-pulled"
    with pytest.raises(grpc.RpcError) as err:
        env.create(pod, missing, ["true"])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and missing in (err.value.details() or "")

    # A device that does not exist fails spec generation.
    with pytest.raises(grpc.RpcError) as err:
        env.create(pod, busybox, ["true"], name="dev",
                   devices=[pb.Device(container_path="/dev/x", host_path="/dev/no-such-dev")])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()

    with pytest.raises(grpc.RpcError) as err:
        env.run(pod, busybox, ["/no/such/command"], name="badcmd")
    assert "/no/such/command" in (err.value.details() or "")

    broken = env.pod(handler="broken")
    with pytest.raises(grpc.RpcError) as err:
        env.create(broken, busybox, ["true"], name="rt")
    assert err.value.code() == grpc.StatusCode.INTERNAL

    names = {c.metadata.name for c in env.containers()}
    assert names <= {"badcmd"}  # a command that fails at start leaves an exited container
    env.remove_all()
    assert env.leftovers() == {}


# ---- restarts ---------------------------------------------------------------------


def test_daemon_kill_and_restart_keeps_containers(env: Env, busybox: str) -> None:
    pod = env.pod()
    flags = pb.Mount(container_path="/flags", host_path=str(env.flags))
    wait_file = "while [ ! -f /flags/{0} ]; do sleep 0.05; done; exit {1}"
    steady = env.run(pod, busybox, ["sleep", "1000"], name="steady")
    while_down = env.run(pod, busybox, ["sh", "-c", wait_file.format("down", 5)], name="down",
                         mounts=[flags])  # fmt: skip
    after = env.run(pod, busybox, ["sh", "-c", wait_file.format("after", 7)], name="after",
                    mounts=[flags])  # fmt: skip
    monitors = {c: env.info(c)["monitorPid"] for c in (steady, while_down, after)}
    pids = {c: env.info(c)["pid"] for c in (steady, while_down, after)}

    # conmon runs in the pod's cgroup, not the daemon's: a service manager stopping
    # the daemon's cgroup leaves it alone.
    for line in Path(f"/proc/{monitors[steady]}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in ("memory", "pids", "name=systemd", ""):
            assert path.startswith(f"/{env.cgroup_parent}/pod"), line
    env.peapod.stop(signal.SIGKILL)
    assert all(procs.is_alive(p) for p in [*monitors.values(), *pids.values()])
    (env.flags / "down").touch()
    wait_for(lambda: not procs.is_alive(pids[while_down]), what="exit while down")
    # conmon records the exit just after reaping; on a busy host that can trail the
    # process's end, and the daemon must find it at start-up, not later.
    persisted = env.peapod.root / "containers" / while_down / "userdata" / "exit"
    wait_for(persisted.exists, what="conmon to record the exit")
    env.peapod.start()

    st = env.status(while_down).status
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 5, "Error")
    assert env.status(steady).status.state == pb.CONTAINER_RUNNING
    assert env.sh(steady, "echo alive").strip() == "alive"
    (env.flags / "after").touch()
    st = env.wait_exit(after, timeout=5)
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 7)
    env.stop(steady)
    assert env.status(steady).status.exit_code == 137


def test_restart_cleans_up_a_half_created_container(env: Env, busybox: str) -> None:
    pod = env.pod(handler="hang")
    failed: list[BaseException] = []

    def create() -> None:
        try:
            env.create(pod, busybox, ["true"])
        except grpc.RpcError as exc:
            failed.append(exc)

    caller = threading.Thread(target=create)
    caller.start()
    pidfiles = env.peapod.runroot / "containers"
    wait_for(lambda: any(pidfiles.glob("*/conmon-pidfile")), what="conmon to start")
    monitor = int(next(pidfiles.glob("*/conmon-pidfile")).read_text())
    env.peapod.stop(signal.SIGKILL)
    caller.join(10)
    assert failed and procs.is_alive(monitor)  # conmon outlives the daemon
    assert env.mounts() != []
    env.peapod.start()
    assert not procs.is_alive(monitor)
    assert env.containers() == []
    assert env.container_dirs() == [] and env.runtime_state() == []
    assert not [m for m in env.mounts() if "/containers/" in m]


def test_restart_kills_interrupted_exec_syncs_and_empties_the_exec_dir(
    env: Env, busybox: str
) -> None:
    pod = env.pod()
    ctr = env.run(pod, busybox, ["sleep", "1000"])
    exec_dir = env.peapod.runroot / "exec"
    ended: list[grpc.RpcError] = []

    def call(cmd: list[str]) -> None:
        try:
            env.exec(ctr, cmd, timeout=60)
        except grpc.RpcError as exc:
            ended.append(exc)

    # One exec with a descendant in its own session; one whose conmon dies while the
    # daemon is down (as when its -T backstop fires: conmon 2.1.6 then kills only the
    # process group), leaving the command an orphan named only by the exec's pidfile.
    callers = [threading.Thread(target=call, args=(cmd,))
               for cmd in (["sh", "-c", "setsid sleep 31 & sleep 30; true"], ["sleep", "30"])]
    for caller in callers:
        caller.start()
    wait_for(lambda: len(list(exec_dir.glob("*/pid"))) == 2, what="both execs to start")
    scratch = {d: int((d / "pid").read_text()) for d in exec_dir.iterdir()}
    env.peapod.stop(signal.SIGKILL)
    for caller in callers:
        caller.join(10)
    assert len(ended) == 2
    monitors = {d: procs.with_argument_under(str(d)) for d in scratch}
    assert sorted(len(m) for m in monitors.values()) == [1, 1]
    left = [p for pid in scratch.values() for p in [pid, *procs.descendants(pid)]]
    comms = sorted(Path(f"/proc/{p}/comm").read_text().strip() for p in left)
    assert comms == ["sh", "sleep", "sleep", "sleep"]  # sh with both sleeps; the lone one
    started = {pid: procs.start_ticks(pid) for pid in left}
    orphaned = next(d for d, pid in scratch.items()
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep")
    os.kill(monitors[orphaned][0], signal.SIGKILL)
    wait_for(lambda: not procs.is_alive(monitors[orphaned][0]), what="conmon to die")
    assert procs.is_alive(scratch[orphaned])

    env.peapod.start()
    assert list(exec_dir.iterdir()) == []
    assert [p for d in scratch for p in procs.with_argument_under(str(d))] == []
    for pid, start in started.items():
        assert not procs.is_alive(pid) or procs.start_ticks(pid) != start, pid
    assert env.sh(ctr, "ps -o args | grep -c '^sleep 3' || true").strip() == "0"


# ---- updates and logs ---------------------------------------------------------------


def test_update_resources_and_reopen_log(env: Env, busybox: str) -> None:
    pod = env.pod()
    ctr = env.run(pod, busybox, ["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
    new = pb.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=64 << 20)
    env.rt.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(container_id=ctr, linux=new), timeout=10
    )
    st = env.status(ctr).status
    assert st.resources.linux.cpu_shares == 512
    assert st.resources.linux.memory_limit_in_bytes == 64 << 20
    layout = detect_layout()
    pod_cgroup = next(p for p in env.container_cgroups() if p.name == ctr)
    rel = pod_cgroup.relative_to(next(r for r in hierarchy_roots(layout)
                                      if pod_cgroup.is_relative_to(r)))  # fmt: skip
    if layout.version == V2:
        assert (layout.unified / rel / "memory.max").read_text().strip() == str(64 << 20)
    else:
        assert (layout.v1["memory"] / rel / "memory.limit_in_bytes").read_text().strip() == str(
            64 << 20
        )
        assert (layout.v1["cpu"] / rel / "cpu.shares").read_text().strip() == "512"

    log = Path(st.log_path)
    wait_for(lambda: log.exists() and log.stat().st_size > 0, what="log output")
    log.rename(log.with_suffix(".1"))
    env.rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ctr), timeout=10)
    wait_for(lambda: log.exists() and b"tick" in log.read_bytes(), what="output in new log")
    assert log.with_suffix(".1").stat().st_size > 0


# ---- handlers leaving the config, liveness ------------------------------------------


def test_containers_outlive_their_handler_leaving_the_config(env: Env, busybox: str) -> None:
    """runc-b is removed from the config (and the daemon restarted) while its containers
    exist: they are stopped and removed with the runtime recorded at create time."""
    pod = env.pod(handler="runc-b")
    ctr = env.run(pod, busybox, ["sleep", "1000"], name="a")
    other = env.run(pod, busybox, ["sleep", "1000"], name="b")
    assert sorted(env.runtime_state()) == sorted([f"runc-b/{ctr}", f"runc-b/{other}"])
    original = env.peapod.config_file.read_text()
    cfg = yaml.safe_load(original)
    del cfg["runtime"]["runtimes"]["runc-b"]
    env.peapod.stop()
    env.peapod.config_file.write_text(yaml.safe_dump(cfg))
    try:
        env.peapod.start()
        with pytest.raises(grpc.RpcError) as err:
            env.pod(handler="runc-b")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        env.stop(ctr)
        assert env.status(ctr).status.state == pb.CONTAINER_EXITED
        env.remove(ctr)
        assert env.runtime_state() == [f"runc-b/{other}"]
        env.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)
        assert env.runtime_state() == [] and env.containers() == []
    finally:
        env.peapod.stop()
        env.peapod.config_file.write_text(original)
        env.peapod.start()


def stopped_monitor_count(env: Env) -> float:
    return metric_value(env.peapod.metrics_text(), "peapod_containers_stopped_monitor_total")


def test_probe_reports_a_dead_conmon_and_a_vanished_container(env: Env, busybox: str) -> None:
    pod = env.pod()
    orphan = env.run(pod, busybox, ["sleep", "1000"], name="orphan")
    gone = env.run(pod, busybox, ["sleep", "1000"], name="gone")
    before = stopped_monitor_count(env)
    os.kill(env.info(orphan)["monitorPid"], signal.SIGKILL)
    wait_for(lambda: stopped_monitor_count(env) == before + 1, timeout=PROBE * 4 + 2,
             what="the stopped-monitor counter")  # fmt: skip
    assert env.status(orphan).status.state == pb.CONTAINER_RUNNING

    info = env.info(gone)
    os.kill(info["monitorPid"], signal.SIGKILL)
    os.kill(info["pid"], signal.SIGKILL)
    st = env.wait_exit(gone, timeout=PROBE * 4 + 2)
    assert (st.state, st.exit_code, st.reason, st.message) == (
        pb.CONTAINER_EXITED, 255, "Error", "container monitor and process disappeared")
    env.stop(orphan)  # the probe notices the end conmon cannot report
    assert env.status(orphan).status.exit_code == 255


def test_probe_marks_a_pod_whose_infra_died_notready(env: Env) -> None:
    pod = env.pod()
    req = pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)
    infra = json.loads(env.rt.PodSandboxStatus(req, timeout=10).info["info"])["infraPid"]
    assert infra and procs.is_alive(infra)
    os.kill(infra, signal.SIGKILL)

    def notready() -> bool:
        return bool(env.rt.PodSandboxStatus(req, timeout=10).status.state == pb.SANDBOX_NOTREADY)

    wait_for(notready, timeout=PROBE * 4 + 2, what="the pod to be NOTREADY")
