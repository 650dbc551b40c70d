"""Container and pod stats through the real socket: real runc containers under load.

One daemon serves the module: a ``support.pods.PodEnv`` (its own bridge, /24 and cgroup
parent) with runc, the test registry's busybox and ``stats.collection_period`` of
``PERIOD`` seconds. After every test all pods are removed and nothing of them may be
left; the module's teardown sweeps whatever a failing test left behind (pods, mounts,
processes, cgroups, the bridge and its firewall rules).

This host is hybrid: the figures come from the v1 controllers, PSI from the cgroup2
tree, where runc places the container too; ``test_cgroup_v2_on_the_unified_tree``
proves the v2 readers on that tree.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from support.daemon import registries_conf_text
from support.images import StandardImages
from support.pods import PLUGIN_DIR, HostState, PodEnv
from support.registry import Registry

from api import api_pb2 as pb
from oci.stats.cgroups import CgroupDirs, parse_pressure, read_cpu, read_pressure
from sandbox.cgroup_layout import HYBRID, V2, detect_layout

PERIOD = 1.0  # the daemon's stats.collection_period in these tests (10 s by default)
RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin") or "/usr/sbin/runc"
MIB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def host_state() -> Iterator[None]:
    """Fail (not skip) without the tools; restore ip_forward and portmap's chains."""
    if os.geteuid() != 0:
        pytest.fail("stats tests need root (namespaces, mounts, cgroups, iptables)")
    for tool in ("bridge", "host-local", "portmap", "loopback"):
        if not os.access(f"{PLUGIN_DIR}/{tool}", os.X_OK):
            pytest.fail(f"CNI plugin {PLUGIN_DIR}/{tool} missing; run deploy/setup.sh test")
    if not os.access(RUNC, os.X_OK):
        pytest.fail(f"{RUNC} is missing; run deploy/setup.sh test")
    state = HostState()
    yield
    state.restore()


class StatsEnv(PodEnv):
    """A bridge-network daemon that also runs containers from the test registry."""

    def __init__(self, registry: Registry) -> None:
        super().__init__()
        cfg = yaml.safe_load(self.peapod.config_file.read_text())
        cfg["runtime"] = {"runtimes": {"runc": {"runtime_path": RUNC}}}
        cfg["stats"] = {"collection_period": PERIOD}
        self.peapod.config_file.write_text(yaml.safe_dump(cfg))
        self.peapod.registries_conf.write_text(registries_conf_text([registry.host]))

    def pod(self, host_network: bool = False, **labels: str) -> str:
        return self.run(self.config(host_network=host_network, labels=labels))

    def container(self, pod: str, image: str, command: list[str], name: str = "c",
                  start: bool = True, **config: Any) -> str:  # fmt: skip
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name), image=pb.ImageSpec(image=image),
            command=command, **config,
        )  # fmt: skip
        req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg)
        ctr = str(self.rt.CreateContainer(req, timeout=60).container_id)
        if start:
            self.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)
        return ctr

    def status_of(self, ctr: str) -> int:
        req = pb.ContainerStatusRequest(container_id=ctr)
        return int(self.rt.ContainerStatus(req, timeout=10).status.state)

    def exec(self, ctr: str, script: str, timeout: int = 60) -> str:
        req = pb.ExecSyncRequest(container_id=ctr, cmd=["sh", "-c", script], timeout=timeout)
        got = self.rt.ExecSync(req, timeout=timeout + 30)
        assert got.exit_code == 0, got.stderr.decode()
        return got.stdout.decode()

    def ctr_stats(self, ctr: str) -> pb.ContainerStats:
        return self.rt.ContainerStats(pb.ContainerStatsRequest(container_id=ctr), timeout=10).stats

    def pod_stats(self, pod: str) -> pb.PodSandboxStats:
        req = pb.PodSandboxStatsRequest(pod_sandbox_id=pod)
        return self.rt.PodSandboxStats(req, timeout=10).stats

    def list_ctr_stats(self, **flt: Any) -> list[pb.ContainerStats]:
        req = pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(**flt))
        return list(self.rt.ListContainerStats(req, timeout=10).stats)

    def list_pod_stats(self, **flt: Any) -> list[pb.PodSandboxStats]:
        req = pb.ListPodSandboxStatsRequest(filter=pb.PodSandboxStatsFilter(**flt))
        return list(self.rt.ListPodSandboxStats(req, timeout=10).stats)

    def cgroup_path(self, ctr: str) -> str:
        """The container's cgroup path, as the runtime was given it."""
        req = pb.ContainerStatusRequest(container_id=ctr, verbose=True)
        info = yaml.safe_load(self.rt.ContainerStatus(req, timeout=10).info["info"])
        return str(info["runtimeSpec"]["linux"]["cgroupsPath"])


@pytest.fixture(scope="module")
def env(registry: Registry, test_images: StandardImages) -> Iterator[StatsEnv]:
    e = StatsEnv(registry)
    try:
        e.peapod.start()
        e.peapod.images.PullImage(
            pb.PullImageRequest(image=pb.ImageSpec(image=test_images.busybox.ref)), timeout=60
        )
        yield e
    finally:
        e.sweep()


@pytest.fixture(autouse=True)
def clean(env: StatsEnv) -> Iterator[None]:
    """Each test ends with every pod removed and nothing of them left on the host."""
    yield
    env.remove_all_pods()
    assert env.list() == []
    assert env.mounts() == []
    assert [d for d in env.cgroup_dirs() if any(p.is_dir() for p in d.iterdir())] == []


@pytest.fixture
def busybox(test_images: StandardImages) -> str:
    return test_images.busybox.ref


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def u64(msg: Any, field: str) -> int | None:
    """A UInt64Value field's value, None when unset."""
    return int(getattr(msg, field).value) if msg.HasField(field) else None


# ---- cpu ------------------------------------------------------------------------------


def host_idle_cores(sample: tuple[int, int], later: tuple[int, int]) -> float:
    """Idle cores over the window between two ``cpu_times()`` samples."""
    return (later[0] - sample[0]) / (later[1] - sample[1]) * (os.cpu_count() or 1)


def cpu_times() -> tuple[int, int]:
    """(idle + iowait, total) jiffies of the host, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def test_cpu_burner_uses_about_one_core(env: StatsEnv, busybox: str) -> None:
    """A busy loop shows about 10^9 nano-cores, in the container and its pod.

    The box has 2 cores shared with other work, so the loop may not get a whole core:
    the figure must be at most 1.1 cores, at least 0.5 unless the host had under 0.2
    idle cores meanwhile (then the scheduler decides the loop's share), and agree within
    30 % with the rate of the cumulative counter the test computes over its own 3 s (the
    daemon's window is its last sample a second or more before: under other load the
    loop's share moves between the two windows).
    """
    pod = env.pod()
    ctr = env.container(pod, busybox, ["sh", "-c", "while :; do :; done"])
    time.sleep(2 * PERIOD)
    first, host_before = env.ctr_stats(ctr).cpu, cpu_times()
    time.sleep(3.0)
    second, host_after = env.ctr_stats(ctr).cpu, cpu_times()
    rate = u64(second, "usage_nano_cores")
    assert rate is not None, "no usage_nano_cores on a container sampled for seconds"
    idle = host_idle_cores(host_before, host_after)
    print(f"busy loop at {rate / 1e9:.2f} cores; the host had {idle:.2f} idle cores")
    assert rate <= 1.1e9, f"one busy loop at {rate / 1e9:.2f} cores"
    assert rate >= 0.5e9 or idle < 0.2, f"busy loop at {rate / 1e9:.2f} cores, {idle:.2f} idle"
    used = u64(second, "usage_core_nano_seconds") - u64(first, "usage_core_nano_seconds")
    own = used * 1e9 / (second.timestamp - first.timestamp)
    assert abs(rate - own) <= 0.3 * own, f"{rate / 1e9:.2f} cores, own {own / 1e9:.2f}"
    assert first.timestamp > 0 and second.timestamp > first.timestamp
    pod_cpu = env.pod_stats(pod).linux.cpu
    pod_rate = u64(pod_cpu, "usage_nano_cores") or 0
    assert 0.5 * rate <= pod_rate <= 1.2e9, f"pod {pod_rate / 1e9:.2f}, loop {rate / 1e9:.2f}"
    assert u64(pod_cpu, "usage_core_nano_seconds") >= u64(second, "usage_core_nano_seconds")


def test_a_new_container_is_read_at_once_and_has_a_rate_a_second_later(
    env: StatsEnv, busybox: str
) -> None:
    """Lists serve the figures of the last collection round; a container that round has
    not seen is read during the call, and read again once its CPU figure can have a rate."""
    pod = env.pod()
    ctr = env.container(pod, busybox, ["sleep", "100000"])
    first = env.list_ctr_stats(id=ctr)
    assert len(first) == 1 and first[0].cpu.timestamp > 0 and first[0].memory.timestamp > 0
    time.sleep(1.05)
    again = env.list_ctr_stats(id=ctr)[0].cpu
    assert again.HasField("usage_nano_cores") and again.timestamp > first[0].cpu.timestamp


# ---- memory ---------------------------------------------------------------------------


def test_memory_hog_working_set_matches_its_allocation(env: StatsEnv, busybox: str) -> None:
    """dd holds a 100 MiB buffer it filled (its write to a pipe nobody reads blocks):
    the working set is 100 MiB within 10 %, and it is anonymous memory (RSS)."""
    pod = env.pod()
    ctr = env.container(pod, busybox, ["sh", "-c",
                                       "dd if=/dev/zero bs=100M count=1 | sleep 100000"])

    def settled() -> pb.MemoryUsage | None:
        mem = env.ctr_stats(ctr).memory
        return mem if (u64(mem, "working_set_bytes") or 0) > 90 * MIB else None

    mem = wait_for(settled, 20, "the hog's memory")
    time.sleep(0.5)
    mem = env.ctr_stats(ctr).memory
    ws = u64(mem, "working_set_bytes")
    assert ws is not None and abs(ws - 100 * MIB) <= 10 * MIB, ws / MIB
    assert u64(mem, "rss_bytes") >= 95 * MIB
    assert u64(mem, "usage_bytes") >= ws
    assert u64(mem, "page_faults") > 0 and u64(mem, "major_page_faults") is not None
    assert u64(mem, "available_bytes") == 0  # no limit: containerd's rule
    pod_mem = env.pod_stats(pod).linux.memory
    assert u64(pod_mem, "working_set_bytes") >= ws


def test_memory_limit_gives_available_bytes(env: StatsEnv, busybox: str) -> None:
    pod = env.pod()
    limits = pb.LinuxContainerConfig(
        resources=pb.LinuxContainerResources(memory_limit_in_bytes=64 * MIB)
    )
    ctr = env.container(pod, busybox, ["sleep", "100000"], linux=limits)
    mem = env.ctr_stats(ctr).memory
    ws = u64(mem, "working_set_bytes")
    assert ws is not None and u64(mem, "available_bytes") == 64 * MIB - ws


def test_no_swap_on_a_host_without_swap(env: StatsEnv, busybox: str) -> None:
    """This host has no swap: no swap figures rather than zeros that look like a limit."""
    with open("/proc/meminfo") as f:
        has_swap = any(ln.split()[1] != "0" for ln in f if ln.startswith("SwapTotal:"))
    pod = env.pod()
    ctr = env.container(pod, busybox, ["sleep", "100000"])
    assert env.ctr_stats(ctr).HasField("swap") == has_swap


# ---- writable layer -------------------------------------------------------------------


def test_writable_layer_shows_50_mib_within_one_interval(env: StatsEnv, busybox: str) -> None:
    pod = env.pod()
    ctr = env.container(pod, busybox, ["sleep", "100000"])
    layer = wait_for(lambda: env.ctr_stats(ctr).writable_layer.timestamp and
                     env.ctr_stats(ctr).writable_layer, 3 * PERIOD, "a first layer figure")
    before = u64(layer, "used_bytes")
    inodes = u64(layer, "inodes_used")
    assert before is not None and before < MIB and inodes is not None and inodes >= 1
    assert layer.fs_id.mountpoint == str(env.peapod.root / "containers")
    env.exec(ctr, "mkdir /data && dd if=/dev/zero of=/data/blob bs=1M count=50 && "
                  "ln /data/blob /data/again && sync")  # fmt: skip
    written = time.monotonic()
    grown = wait_for(lambda: (u64(env.ctr_stats(ctr).writable_layer, "used_bytes") or 0)
                     >= before + 50 * MIB and env.ctr_stats(ctr).writable_layer,
                     PERIOD + 0.5, "50 MiB in the writable layer")  # fmt: skip
    took = time.monotonic() - written
    used = u64(grown, "used_bytes")
    assert used < before + 51 * MIB, "a hard link was counted twice"
    assert u64(grown, "inodes_used") >= inodes + 2  # /data and the blob (its link once)
    print(f"50 MiB seen in the writable layer {took:.2f} s after the write")


# ---- network --------------------------------------------------------------------------


def test_ping_between_pods_moves_the_network_counters(env: StatsEnv, busybox: str) -> None:
    raw = pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=["NET_RAW"])))  # fmt: skip
    a, b = env.pod(), env.pod()
    ctr_a = env.container(a, busybox, ["sleep", "100000"], linux=raw)
    env.container(b, busybox, ["sleep", "100000"])
    ip_b = env.status(b).status.network.ip
    before_a, before_b = env.pod_stats(a).linux.network, env.pod_stats(b).linux.network
    for net in (before_a, before_b):
        assert net.timestamp > 0 and net.default_interface.name == "eth0"
        assert all(i.name not in ("lo", "eth0") for i in net.interfaces)
    env.exec(ctr_a, f"ping -c 20 -i 0.05 -s 1000 {ip_b}")
    after_a, after_b = env.pod_stats(a).linux.network, env.pod_stats(b).linux.network
    sent = 20 * 1000
    da, db = before_a.default_interface, before_b.default_interface
    na, nb = after_a.default_interface, after_b.default_interface
    assert u64(na, "tx_bytes") - u64(da, "tx_bytes") >= sent
    assert u64(na, "rx_bytes") - u64(da, "rx_bytes") >= sent  # the replies
    assert u64(nb, "rx_bytes") - u64(db, "rx_bytes") >= sent
    assert u64(nb, "tx_bytes") - u64(db, "tx_bytes") >= sent
    assert u64(na, "rx_errors") == 0 and u64(na, "tx_errors") == 0
    assert after_a.timestamp > before_a.timestamp


def test_host_network_pod_has_no_network_of_its_own(env: StatsEnv, busybox: str) -> None:
    pod = env.pod(host_network=True)
    env.container(pod, busybox, ["sleep", "100000"])
    stats = env.pod_stats(pod)
    assert not stats.linux.HasField("network")
    assert stats.linux.HasField("cpu") and stats.linux.HasField("memory")


# ---- pods -----------------------------------------------------------------------------


def test_pod_stats_carry_processes_and_containers(env: StatsEnv, busybox: str) -> None:
    pod = env.pod(app="web")
    running = env.container(pod, busybox, ["sleep", "100000"], name="run")
    created = env.container(pod, busybox, ["sleep", "100000"], name="made", start=False)
    gone = env.container(pod, busybox, ["true"], name="gone")
    wait_for(lambda: env.status_of(gone) == pb.CONTAINER_EXITED, 10, "the exit")
    stats = env.pod_stats(pod)
    attrs = stats.attributes
    assert attrs.id == pod and dict(attrs.labels) == {"app": "web"}
    assert attrs.metadata.namespace == "test" and attrs.metadata.uid
    assert {c.attributes.id for c in stats.linux.containers} == {running, created}
    count = u64(stats.linux.process, "process_count")
    assert count is not None and count >= 2  # sleep, and runc init of the created one
    assert stats.linux.process.timestamp > 0
    assert [s.attributes.id for s in env.list_pod_stats(label_selector={"app": "web"})] == [pod]
    assert env.list_pod_stats(label_selector={"app": "db"}) == []
    assert [s.attributes.id for s in env.list_pod_stats(id=pod)] == [pod]
    env.stop(pod)  # not ready: left out of the list, still answered by id
    assert env.list_pod_stats(id=pod) == []
    assert env.pod_stats(pod).attributes.id == pod


# ---- lists, filters, streams ----------------------------------------------------------


def test_list_container_stats_filters_and_states(env: StatsEnv, busybox: str) -> None:
    """Created and running containers are listed, exited ones not (as CRI-O)."""
    p1, p2 = env.pod(), env.pod()
    run1 = env.container(p1, busybox, ["sleep", "100000"], labels={"tier": "a"})
    made = env.container(p1, busybox, ["sleep", "100000"], name="m", start=False)
    run2 = env.container(p2, busybox, ["sleep", "100000"], labels={"tier": "b"})
    gone = env.container(p2, busybox, ["true"], name="g")
    wait_for(lambda: env.status_of(gone) == pb.CONTAINER_EXITED, 10, "the exit")
    ids = lambda items: {s.attributes.id for s in items}  # noqa: E731
    assert ids(env.list_ctr_stats()) == {run1, made, run2}
    listed = env.rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=10).stats
    assert ids(listed) == {run1, made, run2}  # no filter at all
    assert ids(env.list_ctr_stats(id=run1)) == {run1}
    assert ids(env.list_ctr_stats(pod_sandbox_id=p2)) == {run2}
    assert ids(env.list_ctr_stats(label_selector={"tier": "b"})) == {run2}
    assert env.list_ctr_stats(label_selector={"tier": "c"}) == []
    assert env.list_ctr_stats(id="f" * 64) == []
    assert env.list_ctr_stats(id=run1, pod_sandbox_id=p2) == []
    exited = env.ctr_stats(gone)  # asked by id, an exited container still answers
    assert exited.attributes.id == gone and not exited.HasField("cpu")
    made_stats = env.ctr_stats(made)  # created: runc init is in its cgroup already
    assert made_stats.cpu.timestamp > 0 and made_stats.memory.timestamp > 0
    one = env.ctr_stats(run1)
    assert one.attributes.metadata.name == "c" and dict(one.attributes.labels) == {"tier": "a"}


def test_streams_answer_what_the_lists_do(env: StatsEnv, busybox: str) -> None:
    pods = [env.pod() for _ in range(2)]
    ctrs = {env.container(p, busybox, ["sleep", "100000"]) for p in pods}
    msgs = list(env.rt.StreamContainerStats(pb.StreamContainerStatsRequest(), timeout=10))
    assert msgs and all(m.container_stats for m in msgs)
    assert [s.attributes.id for m in msgs for s in m.container_stats].__len__() == len(ctrs)
    assert {s.attributes.id for m in msgs for s in m.container_stats} == ctrs
    msgs = list(env.rt.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest(), timeout=10))
    assert {s.attributes.id for m in msgs for s in m.pod_sandbox_stats} == set(pods)
    none = pb.StreamContainerStatsRequest(filter=pb.ContainerStatsFilter(id="0" * 64))
    assert list(env.rt.StreamContainerStats(none, timeout=10)) == []


def test_bad_ids(env: StatsEnv) -> None:
    cases = [
        (lambda: env.ctr_stats(""), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: env.ctr_stats("0" * 64), grpc.StatusCode.NOT_FOUND),
        (lambda: env.ctr_stats("x" * 300), grpc.StatusCode.NOT_FOUND),
        (lambda: env.pod_stats(""), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: env.pod_stats("0" * 64), grpc.StatusCode.NOT_FOUND),
    ]
    for call, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == code, err.value.details()
        assert err.value.details()
    assert env.list_pod_stats(id="0" * 64) == []


# ---- a cgroup that vanished, and cgroup v2 ---------------------------------------------


def test_cgroup_removed_under_a_running_container(env: StatsEnv, busybox: str) -> None:
    """Its processes are moved to the pod's cgroup and its cgroup directories removed:
    the container still answers (attributes and writable layer), never INTERNAL."""
    pod = env.pod()
    ctr = env.container(pod, busybox, ["sleep", "100000"])
    wait_for(lambda: env.ctr_stats(ctr).HasField("writable_layer"), 3 * PERIOD, "a layer")
    path = env.cgroup_path(ctr).strip("/")
    layout = detect_layout()
    roots = {*layout.v1.values(), *([layout.unified] if layout.unified else [])}
    dirs = [Path(r) / path for r in roots if (Path(r) / path).is_dir()]
    assert dirs, "the container's cgroup is nowhere"
    pids: set[str] = set()
    for d in dirs:
        pids |= set((d / "cgroup.procs").read_text().split())
        for pid in (d / "cgroup.procs").read_text().split():
            (d.parent / "cgroup.procs").write_text(pid)
        d.rmdir()
    try:
        stats = env.ctr_stats(ctr)
        assert stats.attributes.id == ctr and stats.HasField("writable_layer")
        assert not stats.HasField("cpu") and not stats.HasField("memory")
        assert ctr in {s.attributes.id for s in env.list_ctr_stats()}
        assert ctr in {c.attributes.id for c in env.pod_stats(pod).linux.containers}
    finally:  # runc cannot signal a container without its cgroup: end it here
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: env.status_of(ctr) == pb.CONTAINER_EXITED, 10, "the exit")


def test_cgroup_v2_on_the_unified_tree(env: StatsEnv, busybox: str) -> None:
    """On this hybrid host runc puts the container in the cgroup2 tree too: its
    ``cpu.stat`` read by the v2 reader agrees with the v1 figure the CRI reports, and
    the CRI's PSI figures are that tree's ``*.pressure`` files."""
    layout = detect_layout()
    if layout.version not in (HYBRID, V2) or layout.unified is None:
        pytest.fail(f"this test needs a cgroup2 tree; the host is {layout.version}")
    pod = env.pod()
    ctr = env.container(pod, busybox, ["sh", "-c", "while :; do :; done"])
    unified = layout.unified / env.cgroup_path(ctr).strip("/")
    assert (unified / "cpu.stat").is_file(), f"runc did not place the container in {unified}"
    v2 = CgroupDirs(path="", version=V2, unified=str(unified))
    time.sleep(1.0)
    before = read_cpu(v2)
    stats = env.ctr_stats(ctr)
    after = read_cpu(v2)
    assert before is not None and after is not None
    reported = u64(stats.cpu, "usage_core_nano_seconds")
    # v1 counts ns, v2 µs, read at slightly different times: 5 ms of slack each side
    assert before.usage_ns - 5e6 <= reported <= after.usage_ns + 5e6, (before, reported, after)
    for resource, part in (("cpu", stats.cpu), ("memory", stats.memory), ("io", stats.io)):
        assert part.HasField("psi"), f"no {resource} PSI"
        now = read_pressure(v2, resource)
        assert now is not None and now.full is not None
        assert 0 <= part.psi.Some.Total <= now.some.total_ns
        assert part.psi.HasField("Full")
    text = (unified / "cpu.pressure").read_text()
    assert parse_pressure(text) is not None
    if layout.version == V2:
        assert stats.memory.HasField("working_set_bytes")
