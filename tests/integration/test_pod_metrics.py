"""CRI metrics through the real socket: ListMetricDescriptors, ListPodSandboxMetrics and
StreamPodSandboxMetrics for a pod on a real CNI bridge with a runc container limited as
critest limits it (CFS period 100000, quota 20000, shares 1024, memory and memory+swap
64 MiB).

The container burns CPU for a few seconds (so whole CPU seconds and CFS throttling show),
writes files through the overlay (``sync``, plus direct I/O that the block cgroup charges
to it even on cgroup v1) and talks to its gateway, before the metrics are read. The
daemon is a ``support.pods.PodEnv``; everything is swept afterwards, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support.daemon import metric_value, registries_conf_text
from support.images import StandardImages
from support.pods import PLUGIN_DIR, HostState, PodEnv, pod_env

from api import api_pb2 as pb
from oci.stats.metric_catalog import CATALOG
from sandbox.cgroup_layout import V2, detect_layout

MiB = 1 << 20
BURN_SECONDS = 7  # at 0.2 of a core: more than one whole CPU second
NAMES = {s.name for s in CATALOG}
KEYS = {s.name: tuple(s.label_keys) for s in CATALOG}


@pytest.fixture(scope="module", autouse=True)
def host_state() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("metrics tests need root (namespaces, mounts, cgroups)")
    for tool in ("bridge", "host-local", "loopback"):
        if not os.access(f"{PLUGIN_DIR}/{tool}", os.X_OK):
            pytest.fail(f"CNI plugin {PLUGIN_DIR}/{tool} missing: apt-get install "
                        "containernetworking-plugins")
    for tool in ("runc", "conmon", "catatonit"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing; run deploy/setup.sh test")
    state = HostState()
    yield
    state.restore()


@dataclass
class Running:
    env: PodEnv
    pod: str
    ctr: str
    name: str
    pod_name: str
    image: str
    gateway: str
    started: float  # monotonic


@pytest.fixture(scope="module")
def running(test_images: StandardImages) -> Iterator[Running]:
    with pod_env() as env:
        env.peapod.registries_conf.write_text(registries_conf_text([test_images.host]))
        image = test_images.busybox.ref
        env.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)),
                                    timeout=60)  # fmt: skip
        cfg = env.config("metrics")
        pod = env.run(cfg)
        name = "metrics-ctr"
        ccfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=image),
            command=["sh", "-c", f"timeout {BURN_SECONDS} sh -c 'while :; do :; done'; "
                                 "exec sleep 3600"],
        )  # fmt: skip
        res = ccfg.linux.resources
        res.cpu_period, res.cpu_quota, res.cpu_shares = 100000, 20000, 1024
        res.memory_limit_in_bytes = res.memory_swap_limit_in_bytes = 64 * MiB
        ctr = env.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg), timeout=60).container_id
        env.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)
        gateway = str(next(env.subnet.hosts()))
        yield Running(env, pod, ctr, name, cfg.metadata.name, image, gateway, time.monotonic())


def exec_sh(r: Running, script: str) -> pb.ExecSyncResponse:
    return r.env.rt.ExecSync(
        pb.ExecSyncRequest(container_id=r.ctr, cmd=["sh", "-c", script], timeout=60), timeout=90)


def pod_metrics(r: Running) -> pb.PodSandboxMetrics:
    got = r.env.rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=10)
    mine = [p for p in got.pod_metrics if p.pod_sandbox_id == r.pod]
    assert len(mine) == 1, [p.pod_sandbox_id for p in got.pod_metrics]
    return mine[0]


def by_name(metrics: Any) -> dict[str, list[pb.Metric]]:
    out: dict[str, list[pb.Metric]] = {}
    for m in metrics:
        out.setdefault(m.name, []).append(m)
    return out


def one(found: dict[str, list[pb.Metric]], name: str, **extra: str) -> int:
    """The value of ``name`` whose extra labels are ``extra``."""
    keys = KEYS[name]
    hits = [m for m in found.get(name, [])
            if all(m.label_values[keys.index(k)] == v for k, v in extra.items())]  # fmt: skip
    assert len(hits) == 1, f"{name} {extra}: {len(hits)} samples"
    return int(hits[0].value.value)


def v2_controllers() -> set[str]:
    layout = detect_layout()
    if layout.version != V2 or layout.unified is None:
        return set()
    return set((layout.unified / "cgroup.controllers").read_text().split())


def expected_on_this_host() -> set[str]:
    """Every name but hugetlb without a hugetlb controller, and diskIO where the kernel
    does not count block I/O per cgroup (see ``block_io_counted``)."""
    hugetlb = "hugetlb" in detect_layout().v1 or "hugetlb" in v2_controllers()
    return {n for n in NAMES
            if (hugetlb or "hugetlb" not in n) and (n not in DISK_IO or block_io_counted())}


def block_io_counted() -> bool:
    """v2: the io controller. v1 and hybrid: blk-throttle keeps per-cgroup counts only
    once some throttle limit was ever set on the device since boot (the root cgroup then
    lists devices); the CRI cannot set one, so this depends on the host's past."""
    if detect_layout().version == V2:
        return "io" in v2_controllers()
    root = detect_layout().v1.get("blkio")
    if root is None:
        return False
    text = (root / "blkio.throttle.io_service_bytes_recursive").read_text()
    return any(line.split()[0] != "Total" for line in text.splitlines() if line.strip())


DISK_IO = {s.name for s in CATALOG if s.family == "diskIO"}


def test_descriptors_are_the_whole_catalog(running: Running) -> None:
    descs = running.env.rt.ListMetricDescriptors(pb.ListMetricDescriptorsRequest(),
                                                 timeout=10).descriptors  # fmt: skip
    assert {d.name for d in descs} == NAMES
    for d in descs:
        assert d.help, d.name
        assert tuple(d.label_keys) == KEYS[d.name]
        assert list(d.label_keys[:5]) == ["container", "id", "image", "namespace", "pod"]


def test_pod_and_container_metrics_after_work(running: Running) -> None:
    r = running
    time.sleep(max(0.0, r.started + BURN_SECONDS + 0.5 - time.monotonic()))
    wrote = exec_sh(r, "mkdir -p /var/lib/mydisktest && for i in $(seq 1 10); do "
                       "echo hi >> /var/lib/mydisktest/inode_test_file_$i; done; "
                       "dd if=/dev/zero of=/var/lib/mydisktest/direct bs=4096 count=64 "
                       "oflag=direct 2>/dev/null; dd if=/var/lib/mydisktest/direct of=/dev/null "
                       "bs=4096 iflag=direct 2>/dev/null; sync; "
                       f"wget -q -T 1 -O /dev/null http://{r.gateway}:9/ ; true")  # fmt: skip
    assert wrote.exit_code == 0, wrote.stderr
    started = time.time()
    pm = pod_metrics(r)
    assert [c.container_id for c in pm.container_metrics] == [r.ctr]
    pod, ctr = by_name(pm.metrics), by_name(pm.container_metrics[0].metrics)

    missing = expected_on_this_host() - set(pod) - set(ctr)
    assert not missing, f"not sent: {sorted(missing)}"
    for m in [*pm.metrics, *pm.container_metrics[0].metrics]:
        assert len(m.label_values) == len(KEYS[m.name]), m.name
    assert set(pod) == {"container_last_seen"} | {n for n in NAMES if "_network_" in n}
    for m in pm.metrics:
        assert list(m.label_values[:5]) == ["POD", r.pod, "", "test", r.pod_name]
    for m in pm.container_metrics[0].metrics:
        assert list(m.label_values[:5]) == [r.name, r.ctr, r.image, "test", r.pod_name]

    # the pod's network: eth0 of its namespace moved (to the gateway and back), no loopback
    interfaces = {m.label_values[5] for m in pod["container_network_transmit_packets_total"]}
    assert interfaces == {"eth0"}
    assert one(pod, "container_network_transmit_packets_total", interface="eth0") > 0
    assert one(pod, "container_network_receive_packets_total", interface="eth0") > 0
    assert one(pod, "container_network_transmit_bytes_total", interface="eth0") > 0

    # spec: the limits critest set, as the cgroup holds them
    assert one(ctr, "container_spec_cpu_period") == 100000
    assert one(ctr, "container_spec_cpu_quota") == 20000
    assert one(ctr, "container_spec_cpu_shares") in (1024, 998)  # 998: v2 weight round trip
    assert one(ctr, "container_spec_memory_limit_bytes") == 64 * MiB
    assert one(ctr, "container_spec_memory_swap_limit_bytes") == 64 * MiB
    assert abs(one(ctr, "container_start_time_seconds") - started) < 120

    # cpu: the burner used over a whole CPU second under its quota, and was throttled
    assert one(ctr, "container_cpu_usage_seconds_total", cpu="total") >= 1
    assert one(ctr, "container_cpu_cfs_periods_total") > 0
    assert one(ctr, "container_cpu_cfs_throttled_periods_total") > 0

    # memory, processes, disk
    usage = one(ctr, "container_memory_usage_bytes")
    assert 0 < one(ctr, "container_memory_working_set_bytes") <= usage <= 64 * MiB
    assert one(ctr, "container_processes") >= 1
    assert one(ctr, "container_threads") >= 1
    assert one(ctr, "container_file_descriptors") >= 1
    assert one(ctr, "container_ulimits_soft", ulimit="max_open_files") > 0
    (dev,) = {m.label_values[5] for m in ctr["container_fs_usage_bytes"]}
    assert one(ctr, "container_fs_usage_bytes", device=dev) >= 10 * len("hi\n")
    assert one(ctr, "container_fs_limit_bytes", device=dev) > one(ctr, "container_fs_usage_bytes",
                                                                  device=dev)  # fmt: skip
    assert one(ctr, "container_fs_inodes_total", device=dev) >= one(
        ctr, "container_fs_inodes_free", device=dev)
    if block_io_counted():  # direct I/O is charged to the container: 64 x 4 KiB each way
        assert sum(int(m.value.value) for m in ctr["container_fs_writes_bytes_total"]) >= 256 << 10
        assert sum(int(m.value.value) for m in ctr["container_fs_reads_bytes_total"]) >= 256 << 10
    else:  # no figures rather than made-up zeros
        assert DISK_IO.isdisjoint(ctr), sorted(DISK_IO & set(ctr))
    assert abs(one(ctr, "container_last_seen") - started) < 30


def test_stream_sends_what_the_list_sends(running: Running) -> None:
    stream = running.env.rt.StreamPodSandboxMetrics(pb.StreamPodSandboxMetricsRequest(),
                                                    timeout=10)  # fmt: skip
    pods = [p for msg in stream for p in msg.pod_sandbox_metrics]
    assert [p.pod_sandbox_id for p in pods] == [running.pod]
    assert [c.container_id for c in pods[0].container_metrics] == [running.ctr]


def test_exited_container_and_stopped_pod_drop_out(running: Running) -> None:
    r = running
    extra = r.env.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=r.pod, config=(
        pb.ContainerConfig(metadata=pb.ContainerMetadata(name="short"),
                           image=pb.ImageSpec(image=r.image), command=["true"]))),
        timeout=60).container_id  # fmt: skip
    assert {c.container_id for c in pod_metrics(r).container_metrics} == {r.ctr, extra}
    r.env.rt.StartContainer(pb.StartContainerRequest(container_id=extra), timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = r.env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=extra), timeout=10)
        if st.status.state == pb.CONTAINER_EXITED:
            break
        time.sleep(0.1)
    assert [c.container_id for c in pod_metrics(r).container_metrics] == [r.ctr]
    text = r.env.peapod.metrics_text()
    assert metric_value(text, "peapod_operations_errors_total",
                        {"operation": "ListPodSandboxMetrics"}) == 0  # fmt: skip


def test_memory_cgroup_removed_under_a_running_container(running: Running) -> None:
    """A second container's memory cgroup goes (its processes moved to the parent's, the
    directory removed): its memory figures stop, its CPU, spec and process figures and
    the first container's still come, and the rpc never fails."""
    r = running
    ctr = r.env.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=r.pod, config=(
        pb.ContainerConfig(metadata=pb.ContainerMetadata(name="doomed"),
                           image=pb.ImageSpec(image=r.image), command=["sleep", "100000"]))),
        timeout=60).container_id  # fmt: skip
    r.env.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)
    info = r.env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True),
                                    timeout=10).info["info"]  # fmt: skip
    cgroups_path = json.loads(info)["runtimeSpec"]["linux"]["cgroupsPath"]
    memory_root = detect_layout().v1.get("memory") or detect_layout().unified
    assert memory_root is not None
    d = memory_root / cgroups_path.strip("/")
    pids = (d / "cgroup.procs").read_text().split()
    assert pids, f"nothing runs in {d}"
    try:
        for pid in pids:
            (d.parent / "cgroup.procs").write_text(pid)
        d.rmdir()
        pm = pod_metrics(r)
        got = {c.container_id: by_name(c.metrics) for c in pm.container_metrics}
        assert set(got) == {r.ctr, ctr}
        assert not [n for n in got[ctr] if n.startswith("container_memory_")]
        assert "container_oom_events_total" not in got[ctr]
        assert one(got[ctr], "container_spec_cpu_period") > 0
        assert one(got[ctr], "container_processes") >= 1
        assert "container_cpu_usage_seconds_total" in got[ctr]
        assert one(got[r.ctr], "container_memory_usage_bytes") > 0
    finally:  # the runtime cannot stop a container whose cgroup is gone: end it here
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st = r.env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr), timeout=10)
            if st.status.state == pb.CONTAINER_EXITED:
                break
            time.sleep(0.1)
        r.env.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr), timeout=30)


def test_only_last_seen_with_no_families(running: Running, tmp_path: Any) -> None:
    """``included_pod_metrics: []`` (a drop-in, daemon restarted): only container_last_seen
    is described and sent, for the pod and its container."""
    r = running
    dropin = r.env.peapod.config_dir / "50-metrics.yaml"
    dropin.write_text("stats:\n  included_pod_metrics: []\n")
    try:
        r.env.peapod.stop()
        r.env.peapod.start()
        descs = r.env.rt.ListMetricDescriptors(pb.ListMetricDescriptorsRequest(), timeout=10)
        assert [d.name for d in descs.descriptors] == ["container_last_seen"]
        pm = pod_metrics(r)
        assert [m.name for m in pm.metrics] == ["container_last_seen"]
        assert [m.name for c in pm.container_metrics for m in c.metrics] == ["container_last_seen"]
    finally:
        dropin.unlink()
        r.env.peapod.stop()
        r.env.peapod.start()
