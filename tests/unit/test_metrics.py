"""cri.metrics and cri.process_metrics: what the observers record and the daemon's own figures."""

from __future__ import annotations

import gc
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cri import process_metrics
from cri.metrics import (
    CniPluginMetrics,
    ContainerMetrics,
    LateWorkMetrics,
    Metrics,
    PullObserver,
    StreamingMetrics,
    image_size_class,
    set_default_runtime,
    track_pods,
)


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.close()


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry: (name, sorted labels) -> value."""
    text = generate_latest(m.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return samples(m).get((name, tuple(sorted(labels.items()))))


def test_oom_kills_count_in_total_and_per_namespace(metrics: Metrics) -> None:
    observer = ContainerMetrics(metrics)
    observer.oom_killed("team-a")
    observer.oom_killed("team-a")
    observer.oom_killed("")
    assert value(metrics, "peapod_containers_oom_total") == 3
    assert value(metrics, "peapod_containers_oom_by_namespace_total", namespace="team-a") == 2
    assert value(metrics, "peapod_containers_oom_by_namespace_total", namespace="") == 1


def test_exec_sync_outcomes(metrics: Metrics) -> None:
    observer = ContainerMetrics(metrics)
    for code, timed_out in ((0, False), (0, False), (3, False), (-1, True)):
        observer.exec_sync_finished(code, timed_out)
    assert value(metrics, "peapod_exec_sync_total", outcome="exit_zero") == 2
    assert value(metrics, "peapod_exec_sync_total", outcome="exit_nonzero") == 1
    assert value(metrics, "peapod_exec_sync_total", outcome="timeout") == 1


@pytest.mark.parametrize(
    ("size", "label"),
    [(0, "<1MiB"), ((1 << 20) - 1, "<1MiB"), (1 << 20, "1-10MiB"), (50 << 20, "10-100MiB"),
     ((1 << 30) - 1, "100MiB-1GiB"), (1 << 30, ">1GiB"), (40 << 30, ">1GiB")],
)  # fmt: skip
def test_image_size_classes_are_a_fixed_set(size: int, label: str) -> None:
    assert image_size_class(size) == label


def test_pull_duration_by_size_class_and_layer_sizes(metrics: Metrics) -> None:
    observer = PullObserver(metrics)
    observer.pull_succeeded(0.3, 700 << 10)
    observer.pull_succeeded(42.0, 300 << 20)
    observer.layer_downloaded(5000)
    observer.layer_downloaded(3 << 30)
    observer.pull_finished("NOT_FOUND")
    got = samples(metrics)
    count = "peapod_image_pull_duration_seconds_count"
    assert got[(count, (("size", "<1MiB"),))] == 1
    assert got[(count, (("size", "100MiB-1GiB"),))] == 1
    assert got[("peapod_image_pull_duration_seconds_sum", (("size", "100MiB-1GiB"),))] == 42.0
    assert got[("peapod_image_pulls_layer_size_bytes_count", ())] == 2
    assert got[("peapod_image_pulls_layer_size_bytes_bucket", (("le", "4096.0"),))] == 0
    assert got[("peapod_image_pulls_layer_size_bytes_bucket", (("le", "16384.0"),))] == 1
    assert got[("peapod_image_pulls_total", (("result", "NOT_FOUND"),))] == 1
    sizes = {dict(labels).get("size") for name, labels in got if name == count}
    assert sizes == {"<1MiB", "100MiB-1GiB"}  # no raw sizes as labels


def test_cni_plugin_latency_by_type_and_operation(metrics: Metrics) -> None:
    observer = CniPluginMetrics(metrics)
    observer.plugin_ran("bridge", "ADD", 0.02)
    observer.plugin_ran("bridge", "ADD", 0.04)
    observer.plugin_ran("loopback", "DEL", 0.001)
    name = "peapod_cni_plugin_duration_seconds_count"
    assert value(metrics, name, plugin="bridge", operation="ADD") == 2
    assert value(metrics, name, plugin="loopback", operation="DEL") == 1


def test_streaming_sessions_started_active_and_refused(metrics: Metrics) -> None:
    observer = StreamingMetrics(metrics)
    observer.session_started("exec", "spdy")
    observer.session_started("exec", "spdy")
    observer.session_started("portforward", "websocket")
    observer.session_ended("exec", "spdy")
    observer.refused("capacity")
    assert value(metrics, "peapod_streaming_sessions_total", kind="exec", protocol="spdy") == 2
    assert value(metrics, "peapod_streaming_sessions_active", kind="exec", protocol="spdy") == 1
    assert value(metrics, "peapod_streaming_sessions_active", kind="portforward",
                 protocol="websocket") == 1  # fmt: skip
    assert value(metrics, "peapod_streaming_refused_total", reason="capacity") == 1


def test_late_work_is_counted_by_resource_and_event(metrics: Metrics) -> None:
    observer = LateWorkMetrics(metrics)
    observer.late_work("pod-builds", "outlived")
    observer.late_work("container-creates", "handed")
    assert value(metrics, "peapod_resources_late_total", resource="pod", event="outlived") == 1
    assert value(metrics, "peapod_resources_late_total", resource="container",
                 event="handed") == 1  # fmt: skip


def test_pods_by_state_are_read_at_scrape_time(metrics: Metrics) -> None:
    counts = {"ready": 2}
    track_pods(metrics, lambda: counts)
    assert value(metrics, "peapod_pods", state="ready") == 2
    assert value(metrics, "peapod_pods", state="notready") == 0
    counts["notready"] = 1
    assert value(metrics, "peapod_pods", state="notready") == 1


def test_the_default_runtime_gauge_names_only_the_current_one(metrics: Metrics) -> None:
    set_default_runtime(metrics, "runc")
    set_default_runtime(metrics, "crun")
    assert value(metrics, "peapod_default_runtime", runtime="crun") == 1
    assert value(metrics, "peapod_default_runtime", runtime="runc") is None


def test_the_daemon_exports_its_process_and_runtime_figures(metrics: Metrics) -> None:
    gc.collect()
    got = samples(metrics)
    names = {name for name, _ in got}
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds", "process_max_fds", "python_info",
                 "python_gc_collections_total", "peapod_process_threads",
                 "peapod_processes_defunct"):  # fmt: skip
        assert name in names, name
    assert got[("process_resident_memory_bytes", ())] > 1 << 20
    pauses = got[("peapod_python_gc_pause_seconds_count", (("generation", "2"),))]
    assert pauses >= 1  # the gc.collect() above
    assert got[("peapod_python_gc_pause_seconds_bucket", (("generation", "2"), ("le", "+Inf")))] \
        == pauses


def test_the_thread_gauge_follows_threads(metrics: Metrics) -> None:
    before = value(metrics, "peapod_process_threads")
    assert before is not None and before >= threading.active_count()
    stop = threading.Event()
    extra = [threading.Thread(target=stop.wait) for _ in range(3)]
    for t in extra:
        t.start()
    try:
        assert value(metrics, "peapod_process_threads") == before + 3
    finally:
        stop.set()
        for t in extra:
            t.join()


def test_a_zombie_child_is_counted_as_defunct() -> None:
    before = process_metrics.count_defunct()
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 5
        while process_metrics.count_defunct() < before + 1:  # exited, not yet reaped
            assert time.monotonic() < deadline, "the exited child never showed as a zombie"
            time.sleep(0.01)
    finally:
        child.wait()


def test_defunct_count_reads_the_state_after_the_command_name(tmp_path: Path) -> None:
    for pid, stat in (("1", "1 (init) S 0"), ("20", "20 (a) Z (b) R 1"),
                      ("21", "21 (x) Z 1"), ("22", "22 (y) R 1")):  # fmt: skip
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "stat").write_text(stat)
    (tmp_path / "self").mkdir()  # not a pid
    (tmp_path / "30").mkdir()  # vanished meanwhile: no stat
    assert process_metrics.count_defunct(str(tmp_path)) == 1


def test_close_removes_the_gc_callback() -> None:
    before = list(gc.callbacks)
    m = Metrics()
    added = [cb for cb in gc.callbacks if cb not in before]
    assert len(added) == 1 and isinstance(getattr(added[0], "__self__", None),
                                          process_metrics.GcPauses)  # fmt: skip
    m.close()
    assert gc.callbacks == before
