"""Unit tests: CRI metric values derived from fake cgroup trees (v1/hybrid and v2).

The trees are plain directories holding the files the kernel would; the process
family reads this test's own process through the real /proc.
"""

from __future__ import annotations

import os
import resource
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from oci.stats import metric_disk
from oci.stats.cgroups import CgroupDirs
from oci.stats.layers import LayerUsage
from oci.stats.metric_catalog import BY_NAME, FAMILIES, POD_CONTAINER
from oci.stats.network import parse_net_dev
from oci.stats.pod_metrics import (
    ContainerTarget,
    MetricSample,
    PodMetricsCollector,
    PodMetricSet,
    PodTarget,
    network_readings,
)
from sandbox.cgroup_layout import HYBRID, V2

MiB = 1 << 20
V1_UNLIMITED = 9223372036854771712
PSI = ("some avg10=0.00 avg60=0.00 avg300=0.00 total={some}\n"
       "full avg10=0.00 avg60=0.00 avg300=0.00 total={full}\n")  # fmt: skip
POD = PodTarget(id="p" * 64, name="web", namespace="ns1", netns_path="")


def write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def hybrid_tree(root: Path) -> CgroupDirs:
    """A v1 container cgroup as runc leaves it for critest's metrics container, plus
    its directory in the controller-less cgroup2 tree."""
    ctl = {c: root / c / "pod" / "ctr" for c in ("cpu", "cpuacct", "memory", "pids", "blkio")}
    write(ctl["cpuacct"], {
        "cpuacct.usage": "3500000000\n", "cpuacct.usage_user": "2100000000\n",
        "cpuacct.usage_sys": "1400000000\n",
    })
    write(ctl["cpu"], {
        "cpu.stat": "nr_periods 40\nnr_throttled 7\nthrottled_time 2600000000\n",
        "cpu.cfs_period_us": "100000\n", "cpu.cfs_quota_us": "20000\n", "cpu.shares": "1024\n",
    })
    write(ctl["memory"], {
        "memory.usage_in_bytes": f"{10 * MiB}\n",
        "memory.stat": (f"cache {3 * MiB}\nrss {5 * MiB}\npgfault 90\npgmajfault 2\n"
                        f"total_cache {4 * MiB}\ntotal_rss {6 * MiB}\n"
                        f"total_mapped_file {MiB}\ntotal_inactive_file {2 * MiB}\n"
                        "total_pgfault 100\ntotal_pgmajfault 3\n"),
        "memory.max_usage_in_bytes": f"{12 * MiB}\n", "memory.failcnt": "4\n",
        "memory.kmem.usage_in_bytes": f"{MiB // 2}\n",
        "memory.memsw.usage_in_bytes": f"{11 * MiB}\n",
        "memory.limit_in_bytes": f"{64 * MiB}\n",
        "memory.soft_limit_in_bytes": f"{V1_UNLIMITED}\n",
        "memory.memsw.limit_in_bytes": f"{64 * MiB}\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    })  # fmt: skip
    write(ctl["pids"], {"cgroup.procs": f"{os.getpid()}\n", "pids.current": "5\n",
                        "pids.max": "max\n"})  # fmt: skip
    write(ctl["blkio"], {
        "blkio.throttle.io_service_bytes_recursive":
            "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\n254:0 Total 12288\nTotal 12288\n",
        "blkio.throttle.io_serviced_recursive":
            "254:0 Read 1\n254:0 Write 2\n254:0 Total 3\nTotal 3\n",
    })  # fmt: skip
    unified = root / "unified" / "pod" / "ctr"
    write(unified, {
        "cpu.pressure": PSI.format(some=2_500_000, full=1_000_000),
        "memory.pressure": PSI.format(some=0, full=0),
        "io.pressure": PSI.format(some=7_000_000, full=3_000_000),
    })
    return CgroupDirs("/pod/ctr", HYBRID, {k: str(v) for k, v in ctl.items()}, str(unified))


def v2_tree(root: Path) -> CgroupDirs:
    d = root / "pod" / "ctr"
    write(d, {
        "cpu.stat": ("usage_usec 3500000\nuser_usec 2100000\nsystem_usec 1400000\n"
                     "nr_periods 40\nnr_throttled 7\nthrottled_usec 2600000\n"),
        "cpu.max": "20000 100000\n", "cpu.weight": "39\n",
        "memory.current": f"{10 * MiB}\n",
        "memory.stat": (f"anon {6 * MiB}\nfile {4 * MiB}\nfile_mapped {MiB}\n"
                        f"inactive_file {2 * MiB}\nkernel {MiB // 2}\n"
                        "pgfault 100\npgmajfault 3\n"),
        "memory.peak": f"{12 * MiB}\n", "memory.swap.current": f"{MiB}\n",
        "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        "memory.max": f"{64 * MiB}\n", "memory.low": "0\n", "memory.swap.max": "0\n",
        "cgroup.procs": f"{os.getpid()}\n", "pids.current": "5\n", "pids.max": "100\n",
        "io.stat": "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        "cpu.pressure": PSI.format(some=2_500_000, full=1_000_000),
        "memory.pressure": PSI.format(some=0, full=0),
        "io.pressure": PSI.format(some=7_000_000, full=3_000_000),
    })  # fmt: skip
    return CgroupDirs("/pod/ctr", V2, {}, str(d))


def target(dirs: CgroupDirs | None, upper: Path) -> ContainerTarget:
    upper.mkdir(exist_ok=True)
    return ContainerTarget(id="c" * 64, name="app", image="busybox", dirs=dirs,
                           pid=os.getpid(), started_at=1_700_000_000_123_456_789,
                           upper_dir=str(upper))  # fmt: skip


def collect(dirs: CgroupDirs | None, tmp_path: Path,
            families: frozenset[str] = frozenset(FAMILIES)) -> PodMetricSet:  # fmt: skip
    layer = LayerUsage(used_bytes=4321, inodes_used=9, timestamp=1_700_000_001_000_000_000)
    collector = PodMetricsCollector(families, lambda ctr_id: layer)
    return collector.collect([(POD, [target(dirs, tmp_path / "upper")])])[0]


def values(samples: tuple[MetricSample, ...]) -> dict[tuple[str, tuple[str, ...]], int]:
    """(name, extra label values) -> value; every sample's labels checked against its
    descriptor on the way."""
    out = {}
    for s in samples:
        spec = BY_NAME[s.name]
        assert len(s.labels) == len(spec.label_keys), s.name
        assert s.kind == spec.kind
        key = (s.name, s.labels[5:])
        assert key not in out, f"{key} sent twice"
        out[key] = s.value
    return out


@pytest.mark.parametrize("tree", [hybrid_tree, v2_tree], ids=["hybrid", "v2"])
def test_container_values(tree: Callable[[Path], CgroupDirs], tmp_path: Path) -> None:
    pod = collect(tree(tmp_path), tmp_path)
    (ctr,) = pod.containers
    assert ctr.container_id == "c" * 64
    assert all(s.labels[:5] == ("app", "c" * 64, "busybox", "ns1", "web") for s in ctr.samples)
    v = values(ctr.samples)
    assert v["container_cpu_usage_seconds_total", ("total",)] == 3
    assert v["container_cpu_user_seconds_total", ()] == 2
    assert v["container_cpu_system_seconds_total", ()] == 1
    assert v["container_cpu_cfs_periods_total", ()] == 40
    assert v["container_cpu_cfs_throttled_periods_total", ()] == 7
    assert v["container_cpu_cfs_throttled_seconds_total", ()] == 2
    assert v["container_memory_usage_bytes", ()] == 10 * MiB
    assert v["container_memory_working_set_bytes", ()] == 8 * MiB
    assert v["container_memory_rss", ()] == 6 * MiB
    assert v["container_memory_cache", ()] == 4 * MiB
    assert v["container_memory_mapped_file", ()] == MiB
    assert v["container_memory_kernel_usage", ()] == MiB // 2
    assert v["container_memory_swap", ()] == MiB
    assert v["container_memory_max_usage_bytes", ()] == 12 * MiB
    assert v["container_memory_failcnt", ()] == 4
    assert v["container_memory_failures_total", ("pgfault", "hierarchy")] == 100
    assert v["container_memory_failures_total", ("pgmajfault", "hierarchy")] == 3
    assert v["container_oom_events_total", ()] == 1
    assert v["container_spec_cpu_period", ()] == 100000
    assert v["container_spec_cpu_quota", ()] == 20000
    # v2 keeps a weight (runc made 39 of 1024 shares); back to shares it is 998, as in cAdvisor
    assert v["container_spec_cpu_shares", ()] == (1024 if tree is hybrid_tree else 998)
    assert v["container_spec_memory_limit_bytes", ()] == 64 * MiB
    assert v["container_spec_memory_reservation_limit_bytes", ()] == 0  # unlimited
    assert v["container_spec_memory_swap_limit_bytes", ()] == 64 * MiB
    assert v["container_start_time_seconds", ()] == 1_700_000_000
    assert v["container_pressure_cpu_waiting_seconds_total", ()] == 2
    assert v["container_pressure_cpu_stalled_seconds_total", ()] == 1
    assert v["container_pressure_io_waiting_seconds_total", ()] == 7
    assert v["container_pressure_io_stalled_seconds_total", ()] == 3
    assert v["container_pressure_memory_stalled_seconds_total", ()] == 0
    reads = {k[1][0]: val for k, val in v.items() if k[0] == "container_fs_reads_bytes_total"}
    assert list(reads.values()) == [4096], reads
    (device,) = reads  # /dev/<name> of 254:0 on this host, or "254:0" where there is none
    assert device == "254:0" or device.startswith("/dev/")
    assert v["container_fs_writes_bytes_total", (device,)] == 8192
    assert v["container_fs_reads_total", (device,)] == 1
    assert v["container_fs_writes_total", (device,)] == 2
    assert v["container_blkio_device_usage_total", (device, "254", "0", "Write")] == 8192
    assert v["container_threads", ()] == 5
    assert v["container_processes", ()] == 1
    assert v["container_file_descriptors", ()] >= 3  # this process: stdio at least
    assert v["container_ulimits_soft", ("max_open_files",)] == resource.getrlimit(
        resource.RLIMIT_NOFILE)[0]
    fs = {k[0]: val for k, val in v.items() if k[0].startswith("container_fs_") and
          k[0].endswith(("_bytes", "_free", "_total")) and "reads" not in k[0] and
          "writes" not in k[0]}  # fmt: skip
    st = os.statvfs(tmp_path)
    assert fs["container_fs_limit_bytes"] == st.f_blocks * st.f_frsize
    assert fs["container_fs_inodes_total"] == st.f_files
    assert fs["container_fs_usage_bytes"] == 4321
    stamps = {s.name: s.timestamp for s in ctr.samples}
    assert stamps["container_fs_usage_bytes"] == 1_700_000_001_000_000_000
    assert stamps["container_memory_usage_bytes"] == 0  # read now: "live" to the kubelet


def test_v1_memory_failures_keep_the_container_scope_apart(tmp_path: Path) -> None:
    v = values(collect(hybrid_tree(tmp_path), tmp_path).containers[0].samples)
    assert v["container_memory_failures_total", ("pgfault", "container")] == 90
    assert v["container_memory_failures_total", ("pgmajfault", "container")] == 2
    assert v["container_threads_max", ()] == 0  # pids.max "max"


def test_v2_unlimited_and_weight(tmp_path: Path) -> None:
    dirs = v2_tree(tmp_path)
    assert dirs.unified is not None
    d = Path(dirs.unified)
    (d / "cpu.max").write_text("max 100000\n")
    (d / "memory.max").write_text("max\n")
    (d / "cpu.weight").write_text("100\n")
    v = values(collect(dirs, tmp_path).containers[0].samples)
    assert ("container_spec_cpu_quota", ()) not in v
    assert v["container_spec_cpu_period", ()] == 100000
    assert v["container_spec_cpu_shares", ()] == 2 + (99 * 262142) // 9999
    assert v["container_spec_memory_limit_bytes", ()] == 0
    assert v["container_spec_memory_swap_limit_bytes", ()] == 0
    assert v["container_threads_max", ()] == 100


def test_family_selection_limits_what_is_read(tmp_path: Path) -> None:
    pod = collect(hybrid_tree(tmp_path), tmp_path, frozenset({"cpu"}))
    names = {s.name for s in pod.containers[0].samples}
    assert names == {"container_last_seen", "container_cpu_user_seconds_total",
                     "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
                     "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
                     "container_cpu_cfs_throttled_seconds_total"}  # fmt: skip
    nothing = collect(hybrid_tree(tmp_path / "b"), tmp_path, frozenset())
    assert [s.name for s in nothing.containers[0].samples] == ["container_last_seen"]
    assert [s.name for s in nothing.samples] == ["container_last_seen"]
    assert nothing.samples[0].labels == (POD_CONTAINER, POD.id, "", "ns1", "web")


def test_vanished_cgroup_parts_leave_the_rest_answered(tmp_path: Path) -> None:
    dirs = hybrid_tree(tmp_path)
    shutil.rmtree(dirs.v1["memory"])  # removed between listing and reading
    (Path(dirs.v1["cpu"]) / "cpu.stat").unlink()
    v = values(collect(dirs, tmp_path).containers[0].samples)
    assert not [k for k in v if k[0].startswith("container_memory_")]
    assert ("container_oom_events_total", ()) not in v
    assert ("container_spec_memory_limit_bytes", ()) not in v
    assert ("container_cpu_cfs_periods_total", ()) not in v
    assert v["container_cpu_usage_seconds_total", ("total",)] == 3
    assert v["container_spec_cpu_quota", ()] == 20000
    assert v["container_processes", ()] == 1
    assert ("container_last_seen", ()) in v


def test_garbled_file_costs_only_its_family(tmp_path: Path) -> None:
    dirs = hybrid_tree(tmp_path)
    (Path(dirs.v1["pids"]) / "cgroup.procs").write_text("12 not-a-pid\n")
    v = values(collect(dirs, tmp_path).containers[0].samples)
    assert ("container_processes", ()) not in v
    assert v["container_memory_usage_bytes", ()] == 10 * MiB


def test_container_without_cgroup_still_has_last_seen_and_disk(tmp_path: Path) -> None:
    names = {s.name for s in collect(None, tmp_path).containers[0].samples}
    assert names == {"container_last_seen", "container_fs_limit_bytes",
                     "container_fs_inodes_total", "container_fs_inodes_free",
                     "container_fs_usage_bytes"}  # fmt: skip


def test_network_skips_loopback_and_labels_by_interface() -> None:
    text = ("Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame "
            "compressed multicast|bytes packets errs drop fifo colls carrier compressed\n"
            "    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n"
            "  eth0: 5000 40 1 2 0 0 0 0 3000 30 3 4 0 0 0 0\n")  # fmt: skip
    got = {(n, extra): val for n, extra, val in network_readings(parse_net_dev(text))}
    assert len(got) == 8
    assert got["container_network_receive_bytes_total", ("eth0",)] == 5000
    assert got["container_network_receive_packets_total", ("eth0",)] == 40
    assert got["container_network_receive_errors_total", ("eth0",)] == 1
    assert got["container_network_receive_packets_dropped_total", ("eth0",)] == 2
    assert got["container_network_transmit_bytes_total", ("eth0",)] == 3000
    assert got["container_network_transmit_packets_total", ("eth0",)] == 30
    assert got["container_network_transmit_errors_total", ("eth0",)] == 3
    assert got["container_network_transmit_packets_dropped_total", ("eth0",)] == 4


def test_first_walks_of_one_call_share_one_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers no background walk reached are walked in the call from one budget for
    the whole call (not one per container), so a call with many new containers stays
    bounded; the first layers in the call still get their figure."""
    visited = []

    class CountingWalk(metric_disk.TreeWalk):
        def step(self, budget: int, stop: object = None) -> int:
            n = super().step(budget)
            visited.append(n)
            return n

    monkeypatch.setattr(metric_disk, "TreeWalk", CountingWalk)
    containers = []
    for i in range(10):  # 10 layers of 30 directories of 20 files: 630 entries each
        upper = tmp_path / f"upper{i}"
        for d in range(30):
            write(upper / f"d{d}", {f"f{n}": "x" for n in range(20)})
        containers.append(replace(target(None, upper), id=f"{i}" * 64))
    got = PodMetricsCollector(frozenset({"disk"}), lambda ctr_id: None).collect(
        [(POD, containers)])[0]  # fmt: skip
    budget = metric_disk.CALL_WALK_BUDGET
    assert budget <= sum(visited) <= budget + 30  # one directory's listing more at most
    measured = [
        c.container_id for c in got.containers
        if any(s.name == "container_fs_usage_bytes" for s in c.samples)
    ]  # fmt: skip
    assert measured == [c.id for c in containers[: len(measured)]]
    assert 1 <= len(measured) < len(containers)
    usage = next(s for s in got.containers[0].samples if s.name == "container_fs_usage_bytes")
    assert usage.value == 30 * 20
