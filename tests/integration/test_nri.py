"""NRI plugins against a real peapod with runc: the test plugin (tests/support/nri_plugin.py)
connects to the daemon's NRI socket or is started from its plugin directory.

Each effect a plugin asks for is checked inside the container; each fault (a hook
that fails, sleeps past the timeout, or crashes mid-call; bad frames; conflicting
plugins) is checked in the daemon's answers, its log and what is left on the host.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.daemon import metric_value
from support.images import StandardImages
from support.nri_env import REQUEST_TIMEOUT, NRIEnv
from support.nri_go import build_noop
from support.registry import Registry

from api import api_pb2 as pb
from api import nri_pb2, ttrpc_pb2

pytestmark = pytest.mark.integration

SLEEP = ["sleep", "1000"]


@pytest.fixture(scope="module")
def env(registry: Registry, test_images: StandardImages) -> Iterator[NRIEnv]:
    if os.geteuid() != 0:
        pytest.fail("NRI tests need root (mounts, cgroups, namespaces)")
    e = NRIEnv(registry.host)
    try:
        e.peapod.start()
        e.peapod.images.PullImage(pb.PullImageRequest(
            image=pb.ImageSpec(image=test_images.busybox.ref)), timeout=60)
        yield e
    finally:
        e.sweep()


@pytest.fixture(autouse=True)
def clean(env: NRIEnv) -> Iterator[None]:
    """Each test ends with its plugins stopped, every pod removed and nothing left."""
    yield
    env.stop_plugins()
    if env.peapod.proc is None:
        env.peapod.start()
    env.remove_all()
    assert env.containers() == []
    assert env.leftovers() == {}
    assert env.nri_socket.exists()


@pytest.fixture
def busybox(test_images: StandardImages) -> str:
    return test_images.busybox.ref


def wait_for(what: str, predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def log_has(env: NRIEnv, *words: str) -> bool:
    text = env.peapod.log_path.read_text(errors="replace")
    return any(all(w in line for w in words) for line in text.splitlines())


# ---- effects inside the container ---------------------------------------------------


def test_env_mount_and_cpuset_reach_the_container(env: NRIEnv, busybox: str,
                                                  tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello").write_text("from the plugin\n")
    env.plugin(env={"NRI_INJECTED": "yes"}, cpuset="1",
               mounts=[{"destination": "/nri", "source": str(shared), "type": "bind",
                        "options": ["rbind", "ro"]}])
    pod = env.pod()
    ctr = env.create(pod, busybox, SLEEP)
    env.start(ctr)
    assert env.sh(ctr, "echo $NRI_INJECTED") == "yes\n"
    assert env.sh(ctr, "cat /nri/hello") == "from the plugin\n"
    got = env.rt.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["touch", "/nri/x"]),
                          timeout=30)
    assert got.exit_code != 0  # read-only as asked
    allowed = env.sh(ctr, "grep Cpus_allowed_list /proc/self/status").split()[-1]
    assert allowed == "1"


def test_events_arrive_in_order_once_each(env: NRIEnv, busybox: str) -> None:
    def create_calls() -> float:
        return metric_value(env.peapod.metrics_text(), "peapod_nri_plugin_duration_seconds_count",
                            {"plugin": "10-test", "method": "CreateContainer"})

    calls_before = create_calls()
    plugin = env.plugin()
    cfg = env.pod_config()
    pod = env.pod(cfg)
    ctr = env.create(pod, busybox, SLEEP, pod_cfg=cfg)
    env.start(ctr)
    env.rt.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=0), timeout=30)
    env.rt.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=0), timeout=30)
    env.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr), timeout=30)
    quick = env.create(pod, busybox, ["sh", "-c", "exit 3"], name="quick", pod_cfg=cfg)
    env.start(quick)
    # A container that ends on its own gets its StopContainer without any CRI stop.
    wait_for("StopContainer of the container that exited",
             lambda: "StopContainer" in plugin.events(container_id=quick))
    env.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=quick), timeout=30)
    env.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    env.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    env.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=30)
    lifecycle = ["CreateContainer", "PostCreateContainer", "StartContainer",
                 "PostStartContainer", "StopContainer", "RemoveContainer"]
    wait_for("RemovePodSandbox", lambda: "RemovePodSandbox" in plugin.events(pod_id=pod))
    assert plugin.events(container_id=ctr) == lifecycle
    assert plugin.events(container_id=quick) == lifecycle
    pod_only = [e for e in plugin.entries() if e.get("pod_id") == pod and "container_id" not in e]
    assert [e["event"] for e in pod_only] == ["RunPodSandbox", "StopPodSandbox",
                                              "RemovePodSandbox"]
    created = next(e for e in plugin.entries() if e["event"] == "CreateContainer")
    assert created["container_name"] == "c" and created["pod_name"] == cfg.metadata.name
    assert create_calls() == calls_before + 2


def test_update_container_resources_reaches_plugins(env: NRIEnv, busybox: str) -> None:
    plugin = env.plugin()
    pod = env.pod()
    ctr = env.create(pod, busybox, SLEEP)
    env.start(ctr)
    env.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=ctr, linux=pb.LinuxContainerResources(cpuset_cpus="0")), timeout=30)
    wait_for("PostUpdateContainer", lambda: "PostUpdateContainer" in plugin.events(
        container_id=ctr))
    update = next(e for e in plugin.entries() if e["event"] == "UpdateContainer")
    assert update["cpus"] == "0"
    assert env.sh(ctr, "grep Cpus_allowed_list /proc/self/status").split()[-1] == "0"


def test_plugin_updates_and_evicts_other_containers(env: NRIEnv, busybox: str) -> None:
    pod = env.pod()
    first = env.create(pod, busybox, SLEEP, name="first")
    env.start(first)
    second = env.create(pod, busybox, SLEEP, name="second")
    env.start(second)
    env.plugin(update_on_create=first, update_cpuset="1", evict_on_create=second)
    third = env.create(pod, busybox, SLEEP, name="third")
    env.start(third)
    assert env.sh(first, "grep Cpus_allowed_list /proc/self/status").split()[-1] == "1"
    states = {c.id: c.state for c in env.containers()}
    assert states[second] == pb.CONTAINER_EXITED
    assert states[first] == states[third] == pb.CONTAINER_RUNNING
    assert log_has(env, "NRI plugin evicts a container", second)


def test_plugin_updates_and_evicts_unasked(env: NRIEnv, busybox: str) -> None:
    pod = env.pod()
    first = env.create(pod, busybox, SLEEP, name="first")
    env.start(first)
    second = env.create(pod, busybox, SLEEP, name="second")
    env.start(second)
    plugin = env.plugin(update_after_sync=first, update_cpuset="0", evict_after_sync=second)
    wait_for("the UpdateContainers answer",
             lambda: "UpdateContainers-answered" in plugin.events())
    answer = next(e for e in plugin.entries() if e["event"] == "UpdateContainers-answered")
    assert answer["code"] == 0 and answer["failed"] == []
    assert env.sh(first, "grep Cpus_allowed_list /proc/self/status").split()[-1] == "0"
    states = {c.id: c.state for c in env.containers()}
    assert states == {first: pb.CONTAINER_RUNNING, second: pb.CONTAINER_EXITED}
    # The evicted container's StopContainer reached the plugin too.
    wait_for("StopContainer of the evicted container",
             lambda: "StopContainer" in plugin.events(container_id=second))


# ---- refusals roll back -----------------------------------------------------------------


def test_failing_run_pod_sandbox_hook_fails_the_call_and_leaves_nothing(env: NRIEnv) -> None:
    plugin = env.plugin()
    plugin.marker("fail", "RunPodSandbox", "no pods today")
    cfg = env.pod_config()
    with pytest.raises(grpc.RpcError) as info:
        env.pod(cfg)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "10-test" in info.value.details() and "no pods today" in info.value.details()
    assert env.pods() == []
    assert not list((env.peapod.runroot / "pods").glob("*"))
    attempted = plugin.entries()[-1]["pod_id"]
    wait_for("RemovePodSandbox of the pod rolled back",
             lambda: "RemovePodSandbox" in plugin.events(pod_id=attempted))
    plugin.unmark("fail", "RunPodSandbox")
    pod = env.pod(cfg)  # the same name again: nothing of the failed one is in the way
    assert env.pods()[0].id == pod and env.pods()[0].state == pb.SANDBOX_READY


def test_failing_create_container_hook_fails_the_call_and_leaves_nothing(
        env: NRIEnv, busybox: str) -> None:
    plugin = env.plugin()
    pod = env.pod()
    plugin.marker("fail", "CreateContainer", "not this one")
    with pytest.raises(grpc.RpcError) as info:
        env.create(pod, busybox, SLEEP)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "10-test" in info.value.details() and "not this one" in info.value.details()
    assert env.containers() == [] and env.container_dirs() == []
    assert env.mounts() == [] or all("/pods/" in m for m in env.mounts())
    plugin.unmark("fail", "CreateContainer")
    ctr = env.create(pod, busybox, SLEEP)
    env.start(ctr)
    assert [c.id for c in env.containers()] == [ctr]


def test_failing_start_container_hook_fails_the_start(env: NRIEnv, busybox: str) -> None:
    plugin = env.plugin()
    pod = env.pod()
    ctr = env.create(pod, busybox, SLEEP)
    plugin.marker("fail", "StartContainer", "wait")
    with pytest.raises(grpc.RpcError) as info:
        env.start(ctr)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert env.containers()[0].state == pb.CONTAINER_CREATED
    plugin.unmark("fail", "StartContainer")
    env.start(ctr)
    assert env.containers()[0].state == pb.CONTAINER_RUNNING


def test_objects_are_hidden_while_their_hook_runs(env: NRIEnv, busybox: str) -> None:
    plugin = env.plugin()
    plugin.marker("sleep", "RunPodSandbox", str(REQUEST_TIMEOUT * 0.7))
    result: list[str] = []
    runner = threading.Thread(target=lambda: result.append(env.pod()))
    runner.start()
    wait_for("RunPodSandbox hook", lambda: "RunPodSandbox" in plugin.events())
    assert env.pods() == []
    runner.join(30)
    assert [p.id for p in env.pods()] == result
    plugin.unmark("sleep", "RunPodSandbox")
    plugin.marker("sleep", "CreateContainer", str(REQUEST_TIMEOUT * 0.7))
    made: list[str] = []
    creator = threading.Thread(target=lambda: made.append(env.create(result[0], busybox, SLEEP)))
    creator.start()
    wait_for("CreateContainer hook", lambda: "CreateContainer" in plugin.events())
    assert env.containers() == []
    creator.join(30)
    assert [c.id for c in env.containers()] == made


# ---- plugins that misbehave -------------------------------------------------------------


def test_conflicting_plugins_fail_the_create_naming_both(env: NRIEnv, busybox: str) -> None:
    env.plugin("first", "10", env={"SHARED": "one"})
    env.plugin("second", "20", env={"SHARED": "two"})
    pod = env.pod()
    with pytest.raises(grpc.RpcError) as info:
        env.create(pod, busybox, SLEEP)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "10-first" in info.value.details() and "20-second" in info.value.details()
    assert "Env 'SHARED'" in info.value.details()
    assert env.containers() == [] and env.container_dirs() == []


def test_adjustment_peapod_cannot_honour_drops_the_plugin(env: NRIEnv, busybox: str) -> None:
    env.plugin("cdi", "10", adjust={"CDIDevices": [{"name": "vendor.com/gpu=0"}]})
    pod = env.pod()
    with pytest.raises(grpc.RpcError) as info:
        env.create(pod, busybox, SLEEP)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "10-cdi" in info.value.details() and "CDI" in info.value.details()
    env.wait_plugin("10-cdi", present=False)
    assert log_has(env, "NRI plugin dropped", "plugin=10-cdi", "cannot honour")
    ctr = env.create(pod, busybox, SLEEP)  # the plugin is gone; the retry works
    assert [c.id for c in env.containers()] == [ctr]


def test_plugin_sleeping_past_the_timeout_is_disconnected_and_the_call_proceeds(
        env: NRIEnv, busybox: str) -> None:
    def dropped() -> float:
        return metric_value(env.peapod.metrics_text(), "peapod_nri_plugins_dropped_total")

    dropped_before = dropped()
    plugin = env.plugin(env={"FROM_SLOW": "1"})
    pod = env.pod()
    plugin.marker("sleep", "CreateContainer", "30")
    started = time.monotonic()
    ctr = env.create(pod, busybox, SLEEP)
    took = time.monotonic() - started
    assert REQUEST_TIMEOUT * 0.9 < took < REQUEST_TIMEOUT + 5
    env.wait_plugin("10-test", present=False)
    assert log_has(env, "NRI plugin dropped", "plugin=10-test",
                   f"did not answer CreateContainer within {REQUEST_TIMEOUT:g} s")
    assert dropped() == dropped_before + 1
    env.start(ctr)
    assert env.sh(ctr, "echo ${FROM_SLOW:-unset}") == "unset\n"


def test_timeout_fails_the_call_when_configured(env: NRIEnv, busybox: str) -> None:
    env.restart(on_timeout="fail")
    try:
        plugin = env.plugin()
        pod = env.pod()
        plugin.marker("sleep", "CreateContainer", "30")
        with pytest.raises(grpc.RpcError) as info:
            env.create(pod, busybox, SLEEP)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "10-test" in info.value.details()
        assert env.containers() == [] and env.container_dirs() == []
        env.wait_plugin("10-test", present=False)
        ctr = env.create(pod, busybox, SLEEP)
        assert [c.id for c in env.containers()] == [ctr]
    finally:
        env.remove_all()
        env.restart()


def test_plugin_crashing_mid_call_is_dropped_and_cri_keeps_serving(env: NRIEnv,
                                                                  busybox: str) -> None:
    plugin = env.plugin()
    pod = env.pod()
    plugin.marker("crash", "CreateContainer")
    started = time.monotonic()
    ctr = env.create(pod, busybox, SLEEP)
    assert time.monotonic() - started < REQUEST_TIMEOUT + 5
    assert plugin.proc.wait(10) == 3
    env.wait_plugin("10-test", present=False)
    assert log_has(env, "NRI plugin dropped", "plugin=10-test", "closed by the plugin")
    env.start(ctr)
    assert env.containers()[0].state == pb.CONTAINER_RUNNING


def test_megabyte_messages_reach_plugins_on_containerd_nris_own_stub(env: NRIEnv,
                                                                   busybox: str) -> None:
    """CreateContainer calls of 1.9 MB and an 11.4 MB Synchronize (three parts) to the Go
    stub critest is built on: its reader takes a message's start only in a 4 KiB frame
    and queues at most 256 frames per connection, so the frames must be few and shaped."""
    binary = build_noop()
    plugins = [subprocess.Popen([str(binary), "-socket", str(env.nri_socket), "-name", "go",
                                 "-idx", "20"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)]
    try:
        env.wait_plugin("20-go")
        pod = env.pod()
        big = [pb.KeyValue(key=f"BIG{i}", value=b"x" * 100_000) for i in range(19)]
        for n in range(6):  # just within ARG_MAX each
            cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=f"big{n}"),
                                     image=pb.ImageSpec(image=busybox), command=SLEEP, envs=big)
            env.rt.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=pod, config=cfg, sandbox_config=env.pod_config()), timeout=60)
        plugins.append(subprocess.Popen([str(binary), "-socket", str(env.nri_socket), "-name",
                                         "go2", "-idx", "21"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        env.wait_plugin("21-go2")  # its Synchronize held the six containers
        assert {"20-go", "21-go2"} <= set(env.ready_plugins())
        assert not log_has(env, "NRI plugin dropped", "plugin=2")
        assert len(env.containers()) == 6
    finally:
        for proc in plugins:
            proc.kill()
            proc.wait(10)


# ---- bad input on the socket ----------------------------------------------------------------


def raw(env: NRIEnv) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(env.nri_socket))
    s.settimeout(10)
    return s


def frame(conn: int, data: bytes) -> bytes:
    return struct.pack(">II", conn, len(data)) + data


def ttrpc_request(stream: int, service: str, method: str, payload: bytes) -> bytes:
    data = ttrpc_pb2.Request(service=service, method=method, payload=payload).SerializeToString()
    return struct.pack(">IIBB", len(data), stream, 1, 0) + data


def register(s: socket.socket, name: str) -> None:
    msg = nri_pb2.RegisterPluginRequest(plugin_name=name, plugin_idx="90").SerializeToString()
    s.sendall(frame(2, ttrpc_request(1, "nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", msg)))


def closed_by_peer(s: socket.socket) -> bool:
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, TimeoutError):
        return False


@pytest.mark.parametrize(("case", "words"), [
    ("malformed frame", "malformed frame"),
    ("oversized message", "oversized message"),
    ("unknown method", "called unknown method nri.pkg.api.v1alpha1.Runtime/Bogus"),
    ("invalid name", "invalid name"),
    ("never registers", "did not register within"),
])
def test_bad_input_drops_the_connection_with_a_log_line(env: NRIEnv, case: str,
                                                        words: str) -> None:
    name = f"bad{case.replace(' ', '')}"
    s = raw(env)
    if case == "malformed frame":
        s.sendall(struct.pack(">II", 2, (4 << 20) + 11))
    elif case == "oversized message":
        s.sendall(frame(2, struct.pack(">IIBB", (4 << 20) + 1, 1, 1, 0)))
    elif case == "unknown method":
        register(s, name)
        time.sleep(0.3)
        s.sendall(frame(2, ttrpc_request(3, "nri.pkg.api.v1alpha1.Runtime", "Bogus", b"")))
    elif case == "invalid name":
        register(s, "no/slashes")
    assert closed_by_peer(s), "peapod kept the connection"
    s.close()
    expected = ["NRI plugin dropped", words]
    if case == "unknown method":
        expected.append(f"plugin=90-{name}")  # the log line names the plugin
    wait_for(f"the log line for {case}", lambda: log_has(env, *expected))
    assert env.rt.Version(pb.VersionRequest(), timeout=5).runtime_name == "peapod"
    assert env.nri_status()["plugins"] == []


# ---- started plugins, and a restart ------------------------------------------------------------


def test_started_plugin_is_synchronized_again_after_a_restart(env: NRIEnv, busybox: str) -> None:
    log = env.install("launched", "05", {})
    env.restart()
    try:
        env.wait_plugin("05-launched")
        pod = env.pod()
        ctr = env.create(pod, busybox, SLEEP)
        env.start(ctr)
        wait_for("PostStartContainer", lambda: "PostStartContainer" in log.read_text())
        started = [p["pid"] for p in env.nri_status()["plugins"] if p["name"] == "05-launched"]
        env.restart()
        assert not Path(f"/proc/{started[0]}").exists(), "the started plugin outlived peapod"
        env.wait_plugin("05-launched")
        syncs = [line for line in log.read_text().splitlines() if '"Synchronize"' in line]
        assert len(syncs) == 2
        assert pod in syncs[-1] and ctr in syncs[-1]
        assert env.containers()[0].state == pb.CONTAINER_RUNNING
    finally:
        (env.plugin_dir / "05-launched").unlink()
        env.remove_all()
        env.restart()
    env.wait_plugin("05-launched", present=False)
