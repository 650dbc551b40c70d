"""Kubelet retries over the real socket: work that outlives the caller's deadline.

RunPodSandbox is slowed by the test CNI plugin (``slow-add`` marker: it sleeps before
answering ADD); CreateContainer by a runtime handler "slow" whose runtime is a script
that sleeps before exec'ing the real runc for ``create``. The caller gives up after
0.5 s; the work goes on, is hidden from List calls, and the retry with the same
metadata receives the same pod or container. One daemon keeps late results for the
default time, another for 2 s only, to see an unclaimed result taken apart.

A third handler, "hung", stands for a stuck runtime: its ``create`` sleeps for a minute
(recording its pid). Stopping or removing the pod must cancel such a creation at once
and leave nothing of it; a RunPodSandbox stuck in CNI ADD must not hold up other pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from support.daemon import metric_value, registries_conf_text
from support.images import StandardImages
from support.pods import PLUGIN_DIR, HostState, PodEnv, sh
from support.registry import Registry

from api import api_pb2 as pb
from sandbox import procs

RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin") or "/usr/sbin/runc"
CREATE_DELAY = 2  # seconds the "slow" runtime sleeps before `runc create`
ADD_DELAY = "2"  # seconds the test CNI plugin sleeps in ADD
GIVE_UP = 0.5  # the caller's deadline: shorter than either
SHORT_KEEP = 2.0  # kept_for_retry of the forgetful daemon
SLOW_RUNTIME = '#!/bin/sh\ncase " $* " in *" create "*) sleep {delay};; esac\nexec {runc} "$@"\n'
HANG = 60  # seconds the "hung" runtime's create sleeps
HUNG_RUNTIME = ('#!/bin/sh\ncase " $* " in *" create "*) echo $$ >> {pids}; exec sleep {hang};; '
                'esac\nexec {runc} "$@"\n')
PROMPT = 3.0  # seconds a StopPodSandbox/RemovePodSandbox may take with a create in flight


@pytest.fixture(scope="module", autouse=True)
def host_state() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("kubelet retry tests need root (namespaces, mounts, cgroups, iptables)")
    for path in (RUNC, "/usr/bin/conmon", f"{PLUGIN_DIR}/bridge", f"{PLUGIN_DIR}/host-local"):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing; run deploy/setup.sh test")
    state = HostState()
    yield
    state.restore()


@contextlib.contextmanager
def retry_env(registry: Registry, image: str, keep: float | None) -> Iterator[PodEnv]:
    """A PodEnv with the slow CNI plugin in its chain and a "slow" runtime handler."""
    env = PodEnv(flaky=True)
    slow = env.peapod.base / "slow-runc"
    slow.write_text(SLOW_RUNTIME.format(delay=CREATE_DELAY, runc=RUNC))
    slow.chmod(0o755)
    hung = env.peapod.base / "hung-runc"
    hung.write_text(HUNG_RUNTIME.format(pids=hung_pids_file(env), hang=HANG, runc=RUNC))
    hung.chmod(0o755)
    extra: dict[str, Any] = {"runtime": {"runtimes": {
        "runc": {"runtime_path": RUNC}, "slow": {"runtime_path": str(slow)},
        "hung": {"runtime_path": str(hung)}}}}
    if keep is not None:
        extra["kept_for_retry"] = keep
    (env.peapod.config_dir / "50-retries.yaml").write_text(yaml.safe_dump(extra))
    env.peapod.registries_conf.write_text(registries_conf_text([registry.host]))
    try:
        env.peapod.start()
        env.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)),
                                    timeout=60)
        yield env
    finally:
        env.sweep()


@pytest.fixture(scope="module")
def patient(registry: Registry, test_images: StandardImages) -> Iterator[PodEnv]:
    with retry_env(registry, test_images.busybox.ref, keep=None) as env:
        yield env


@pytest.fixture(scope="module")
def forgetful(registry: Registry, test_images: StandardImages) -> Iterator[PodEnv]:
    with retry_env(registry, test_images.busybox.ref, keep=SHORT_KEEP) as env:
        yield env


def _clean(env: PodEnv) -> None:
    if env.peapod.proc is None:
        env.peapod.start()
    env.remove_all_pods()
    assert env.list() == [] and env.db_rows() == [] and container_rows(env) == []
    assert env.mounts() == [] and env.leases() == [] and bridge_ports(env) == []
    assert not any(list(d.glob("pod*")) for d in env.cgroup_dirs())


@pytest.fixture
def env(patient: PodEnv) -> Iterator[PodEnv]:
    yield patient
    _clean(patient)


@pytest.fixture
def short(forgetful: PodEnv) -> Iterator[PodEnv]:
    yield forgetful
    _clean(forgetful)


@pytest.fixture
def busybox(test_images: StandardImages) -> str:
    return test_images.busybox.ref


# -- helpers ----------------------------------------------------------------------------


def hung_pids_file(env: PodEnv) -> Path:
    """Where the "hung" runtime writes the pid of each ``create`` it hangs in."""
    return env.peapod.base / "hung-creates"


def hung_creates(env: PodEnv) -> list[int]:
    path = hung_pids_file(env)
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def naming(text: str) -> list[int]:
    """Pids of the live processes with ``text`` in their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return [p for p in found if p != os.getpid() and procs.state(p) not in (None, "Z")]


def code_of(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value  # type: ignore[return-value]


def rows(env: PodEnv, table: str) -> list[dict[str, Any]]:
    """The records of ``table`` as the daemon stored them (read-only, no RPC)."""
    conn = sqlite3.connect(f"file:{env.peapod.root / 'peapod.db'}?mode=ro", uri=True)
    try:
        return [json.loads(r[0]) for r in conn.execute(f"SELECT record FROM {table}")]
    finally:
        conn.close()


def container_rows(env: PodEnv) -> list[dict[str, Any]]:
    return rows(env, "containers")


def wait_row(env: PodEnv, table: str, state: str, timeout: float = 20) -> dict[str, Any]:
    """The one record of ``table`` once it reaches ``state``."""
    deadline = time.monotonic() + timeout
    while True:
        found = rows(env, table)
        if len(found) == 1 and found[0]["state"] == state:
            return found[0]
        assert time.monotonic() < deadline, f"no {state} row in {table}: {found}"
        time.sleep(0.02)


def first_row(env: PodEnv, table: str, timeout: float = 5) -> dict[str, Any]:
    """The one record of ``table``, whatever its state (the first call's own)."""
    deadline = time.monotonic() + timeout
    while not (found := rows(env, table)):
        assert time.monotonic() < deadline, f"no row in {table}"
        time.sleep(0.02)
    assert len(found) == 1, found
    return found[0]


def bridge_ports(env: PodEnv) -> list[str]:
    out = sh("ip", "-j", "link", "show", "master", env.bridge, check=False).stdout
    return [link["ifname"] for link in json.loads(out or "[]")]


def pod_config(env: PodEnv, name: str, host_network: bool = False) -> pb.PodSandboxConfig:
    return env.config(name, host_network=host_network)


def run_pod(env: PodEnv, config: pb.PodSandboxConfig, timeout: float, handler: str = "") -> str:
    req = pb.RunPodSandboxRequest(config=config, runtime_handler=handler)
    return str(env.rt.RunPodSandbox(req, timeout=timeout).pod_sandbox_id)


def create_request(pod: str, image: str, name: str = "c") -> pb.CreateContainerRequest:
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name, attempt=0),
                             image=pb.ImageSpec(image=image), command=["sleep", "1000"])
    return pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg)


def create(env: PodEnv, req: pb.CreateContainerRequest, timeout: float) -> str:
    return str(env.rt.CreateContainer(req, timeout=timeout).container_id)


def containers(env: PodEnv) -> list[pb.Container]:
    return list(env.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers)


def slow_pod(env: PodEnv) -> str:
    """A host-network pod whose containers use the slow runtime."""
    return run_pod(env, pod_config(env, "slowrt", host_network=True), 30, handler="slow")


def late_pod(env: PodEnv, config: pb.PodSandboxConfig) -> None:
    """RunPodSandbox that gives up while the CNI ADD still sleeps."""
    env.marker("slow-add", ADD_DELAY)
    err = code_of(lambda: run_pod(env, config, GIVE_UP))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def late_events(env: PodEnv, resource: str) -> dict[str, float]:
    """peapod_resources_late_total of ``resource`` by event, from the daemon's scrape."""
    text = env.peapod.metrics_text()
    return {event: metric_value(text, "peapod_resources_late_total",
                                {"resource": resource, "event": event})
            for event in ("outlived", "handed", "discarded")}  # fmt: skip


def late_container(env: PodEnv, req: pb.CreateContainerRequest) -> None:
    err = code_of(lambda: create(env, req, GIVE_UP))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# -- RunPodSandbox ----------------------------------------------------------------------


def test_a_pod_finished_after_the_deadline_is_handed_to_the_retry(env: PodEnv) -> None:
    config = pod_config(env, "late")
    before = late_events(env, "pod")
    late_pod(env, config)
    built = wait_row(env, "sandboxes", "ready")  # the build went on after the caller left
    assert env.list() == []  # kept for the retry, not shown to anyone else
    env.unmark("slow-add")
    retried = run_pod(env, config, 10)
    assert retried == built["id"]
    status = env.status(retried).status
    assert status.state == pb.SANDBOX_READY
    assert status.metadata.attempt == config.metadata.attempt
    assert [p.id for p in env.list()] == [retried]
    assert env.leases() == [status.network.ip]  # one ADD: no second pod was built
    assert len(env.db_rows()) == 1
    err = code_of(lambda: run_pod(env, config, 10))  # handed over once; now it simply exists
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and retried in err.details()
    after = late_events(env, "pod")
    assert {k: after[k] - before[k] for k in after} == {
        "outlived": 1, "handed": 1, "discarded": 0}


def test_a_retry_while_the_pod_is_built_waits_for_it(env: PodEnv) -> None:
    config = pod_config(env, "inflight")
    late_pod(env, config)
    first = first_row(env, "sandboxes")
    assert first["state"] == "creating"
    started = time.monotonic()
    retried = run_pod(env, config, 20)
    assert time.monotonic() - started >= 1.0  # it waited for the first call's ADD
    assert retried == first["id"]
    env.unmark("slow-add")
    assert env.status(retried).status.state == pb.SANDBOX_READY
    assert [p.id for p in env.list()] == [retried] and len(env.db_rows()) == 1
    assert len(env.leases()) == 1


def test_a_retry_waiting_on_a_build_that_fails_builds_afresh(env: PodEnv) -> None:
    config = pod_config(env, "failing")
    env.marker("fail-add")
    env.marker("slow-add", "4")
    err = code_of(lambda: run_pod(env, config, GIVE_UP))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    first = first_row(env, "sandboxes")
    with ThreadPoolExecutor(1) as pool:
        retry = pool.submit(run_pod, env, config, 60)
        # The first build fails and rolls back; the waiting retry then builds its own pod.
        assert procs.wait_until(
            lambda: first["id"] not in [r["id"] for r in rows(env, "sandboxes")], 20,
            interval=0.02)
        env.unmark("fail-add")  # before the retry's own ADD wakes up
        pod = retry.result(timeout=60)
    assert pod != first["id"] and env.status(pod).status.state == pb.SANDBOX_READY
    assert [p.id for p in env.list()] == [pod] and len(env.db_rows()) == 1
    assert len(env.leases()) == 1
    assert not Path(first["pod_dir"]).exists()
    assert not [m for m in env.mounts() if first["id"] in m]


def test_an_unclaimed_pod_is_taken_apart_after_its_time(short: PodEnv) -> None:
    env = short
    config = pod_config(env, "abandoned")
    before = late_events(env, "pod")
    late_pod(env, config)
    built = wait_row(env, "sandboxes", "ready")
    netns = Path(built["ns_paths"]["net"])
    veths = [i["name"] for a in built["attachments"]
             for i in (a["result"] or {}).get("interfaces", [])
             if not i.get("sandbox") and i["name"] not in (env.bridge, "lo")]
    infra_pid = built["infra"]["pid"]
    assert netns.exists() and veths and env.leases()
    # Nobody comes back: after kept_for_retry the pod is removed like RemovePodSandbox.
    assert procs.wait_until(lambda: env.db_rows() == [], SHORT_KEEP + 15, interval=0.05)
    assert not netns.exists() and not Path(built["pod_dir"]).exists()
    assert env.leases() == [] and env.mounts() == [] and env.firewall_lines() == []
    assert bridge_ports(env) == []
    assert not [v for v in veths if Path(f"/sys/class/net/{v}").exists()]
    assert not [d for d in built["cgroup"]["created"] if Path(d).exists()]
    assert procs.wait_until(lambda: procs.comm(infra_pid) != "catatonit", 5)
    assert env.list() == []
    after = late_events(env, "pod")
    assert {k: after[k] - before[k] for k in after} == {
        "outlived": 1, "handed": 0, "discarded": 1}
    env.unmark("slow-add")
    fresh = run_pod(env, config, 20)  # the name is free: a late retry builds a new pod
    assert fresh != built["id"] and env.status(fresh).status.state == pb.SANDBOX_READY


def test_shutdown_stops_a_build_whose_caller_left_and_leaves_nothing(env: PodEnv) -> None:
    config = pod_config(env, "shutdown")
    env.marker("slow-add", "60")
    err = code_of(lambda: run_pod(env, config, GIVE_UP))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_row(env, "sandboxes", "creating")
    started = time.monotonic()
    assert env.peapod.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 20  # the sleeping ADD was killed, not waited for
    assert env.db_rows() == [] and env.mounts() == [] and env.leases() == []
    assert not any(list(d.glob("pod*")) for d in env.cgroup_dirs())
    env.unmark("slow-add")


# -- CreateContainer ----------------------------------------------------------------------


def test_a_container_created_after_the_deadline_is_handed_to_the_retry(
    env: PodEnv, busybox: str
) -> None:
    pod = slow_pod(env)
    req = create_request(pod, busybox)
    late_container(env, req)
    made = wait_row(env, "containers", "created")
    assert containers(env) == []  # kept for the retry
    started = time.monotonic()
    ctr = create(env, req, 10)
    assert ctr == made["id"] and time.monotonic() - started < CREATE_DELAY  # no second create
    assert [c.id for c in containers(env)] == [ctr] and len(container_rows(env)) == 1
    env.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)
    st = env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr), timeout=10).status
    assert st.state == pb.CONTAINER_RUNNING and st.metadata.name == "c"
    err = code_of(lambda: create(env, req, 10))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and ctr in err.details()


def test_a_retry_while_the_container_is_created_waits_for_it(
    env: PodEnv, busybox: str
) -> None:
    pod = slow_pod(env)
    req = create_request(pod, busybox)
    late_container(env, req)
    first = first_row(env, "containers")
    assert first["state"] == "creating"
    started = time.monotonic()
    ctr = create(env, req, 20)
    assert time.monotonic() - started >= 1.0  # it waited for the first call's runc create
    assert ctr == first["id"]  # the first call's container, not one of its own
    assert [c.id for c in containers(env)] == [ctr] and len(container_rows(env)) == 1
    st = env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr), timeout=10).status
    assert st.state == pb.CONTAINER_CREATED


def test_an_unclaimed_container_is_removed_after_its_time(short: PodEnv, busybox: str) -> None:
    env = short
    pod = slow_pod(env)
    req = create_request(pod, busybox)
    late_container(env, req)
    made = wait_row(env, "containers", "created")
    pids = [made["pid"], made["monitor_pid"]]
    assert all(procs.comm(p) for p in pids)
    assert procs.wait_until(lambda: container_rows(env) == [], SHORT_KEEP + 15, interval=0.05)
    assert procs.wait_until(lambda: not any(procs.comm(p) for p in pids), 5)
    assert not Path(made["bundle"]).exists() and not Path(made["storage_dir"]).exists()
    assert not [m for m in env.mounts() if made["id"] in m]
    state = env.peapod.runroot / "runtimes" / "slow" / made["id"]
    assert not state.exists()
    assert not [d for d in env.cgroup_dirs() for _ in d.rglob(made["id"])]
    assert containers(env) == [] and env.status(pod).status.state == pb.SANDBOX_READY
    fresh = create(env, req, 30)  # the name is free again
    assert fresh != made["id"] and len(container_rows(env)) == 1


# -- a pod stopped or removed while its container creation hangs ----------------------------


def hung_pod(env: PodEnv) -> str:
    """A host-network pod whose containers use the "hung" runtime."""
    return run_pod(env, pod_config(env, "hungrt", host_network=True), 30, handler="hung")


def end_pod(env: PodEnv, how: str, pod: str, timeout: float) -> None:
    if how == "stop":
        env.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=timeout)
    else:
        env.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=timeout)


@pytest.mark.parametrize("how", ["stop", "remove"])
def test_ending_a_pod_cancels_its_hung_container_creation(
    env: PodEnv, busybox: str, how: str
) -> None:
    pod = hung_pod(env)
    req = create_request(pod, busybox)
    before = len(hung_creates(env))  # earlier tests' hung creates are listed too
    with ThreadPoolExecutor(2) as pool:
        creating = pool.submit(create, env, req, 200)  # a deadline far beyond the stop
        assert procs.wait_until(lambda: len(hung_creates(env)) > before, 30, interval=0.02)
        made = first_row(env, "containers")
        assert made["state"] == "creating" and naming(made["id"])  # conmon waits on runc
        retry = pool.submit(create, env, req, 200)  # the kubelet's retry joins the first call
        time.sleep(0.3)
        started = time.monotonic()
        end_pod(env, how, pod, 60)
        took = time.monotonic() - started
        first = code_of(lambda: creating.result(timeout=10))
        again = code_of(lambda: retry.result(timeout=10))
    assert took < PROMPT, f"{how} took {took:.1f}s with a container creation hanging"
    assert first.code() == grpc.StatusCode.CANCELLED, first.details()
    assert pod in first.details()
    # Nothing is kept for a retry. The waiting one starts afresh: refused while the pod
    # is being stopped or removed, or finding it stopped (or gone) once that is done.
    gone = grpc.StatusCode.FAILED_PRECONDITION if how == "stop" else grpc.StatusCode.NOT_FOUND
    assert again.code() in (grpc.StatusCode.FAILED_PRECONDITION, gone), again.details()
    assert code_of(lambda: create(env, req, 10)).code() == gone
    assert container_rows(env) == [] and containers(env) == []
    assert procs.wait_until(lambda: not naming(made["id"]), 5)  # conmon, runc
    assert not [p for p in hung_creates(env) if procs.state(p) not in (None, "Z")]
    assert not [m for m in env.mounts() if made["id"] in m]
    assert not Path(made["bundle"]).exists() and not Path(made["storage_dir"]).exists()
    assert not (env.peapod.runroot / "runtimes" / "hung" / made["id"]).exists()
    assert not [d for d in env.cgroup_dirs() for _ in d.rglob(made["id"])]
    if how == "stop":
        assert env.status(pod).status.state == pb.SANDBOX_NOTREADY


def test_a_hung_pod_build_holds_up_no_other_pod(env: PodEnv) -> None:
    other = run_pod(env, pod_config(env, "bystander"), 30)
    config = pod_config(env, "stuck")
    env.marker("slow-add", "15")

    def in_add() -> dict[str, Any] | None:
        """The stuck pod's row once its attachments are planned (CNI ADD runs)."""
        return next((r for r in rows(env, "sandboxes")
                     if r["id"] != other and r["attachments"]), None)

    with ThreadPoolExecutor(1) as pool:
        building = pool.submit(run_pod, env, config, 60)
        assert procs.wait_until(in_add, 20, interval=0.02)
        stuck = in_add()
        assert stuck is not None and stuck["state"] == "creating"
        for how in ("stop", "remove"):
            started = time.monotonic()
            end_pod(env, how, other, 30)
            assert time.monotonic() - started < PROMPT
        # The stuck pod's id was never handed out: it cannot be stopped or removed yet.
        for how in ("stop", "remove"):
            started = time.monotonic()
            err = code_of(lambda how=how: end_pod(env, how, stuck["id"], 30))
            assert time.monotonic() - started < PROMPT
            assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
            assert "being created" in err.details()
        assert [r["id"] for r in rows(env, "sandboxes")] == [stuck["id"]]
        pod = building.result(timeout=60)  # its own caller still receives it
    assert pod == stuck["id"] and env.status(pod).status.state == pb.SANDBOX_READY
