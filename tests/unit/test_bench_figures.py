"""The comparison benchmark's arithmetic: percentiles, ratios, round order and the table."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from measure import Metric, cpu_seconds, memory, percentile  # noqa: E402
from report import load, ratios, table, write_json  # noqa: E402
from scenarios import Comparison, Settings  # noqa: E402


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.9) == pytest.approx(90.1)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0


def test_metric_summary_and_ratio_of_medians() -> None:
    m = Metric("1 x", "RunPodSandbox", "ms")
    m.add("peapod", 10, 20, 30)
    m.add("containerd", 40, 40)
    assert m.summary("peapod")["median"] == 20
    assert m.summary("peapod")["n"] == 3
    assert m.ratio("peapod", "containerd") == pytest.approx(0.5)
    assert m.ratio("peapod", "absent") is None
    assert m.summary("absent") == {}


def test_rounds_alternate_the_runtime_order() -> None:
    a, b = SimpleNamespace(name="a"), SimpleNamespace(name="b")
    run = Comparison([a, b], images=None, settings=Settings())  # type: ignore[arg-type, list-item]
    assert [rt.name for rt in run.rounds(4)] == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_table_shows_each_runtime_and_the_ratio() -> None:
    lat = Metric("1 pod start", "pod start (sum)", "ms")
    lat.add("peapod", 90, 100, 110)
    lat.add("containerd", 150, 160, 170)
    rss = Metric("6 memory", "daemon RSS, idle", "MiB")
    rss.add("peapod", 55.0)
    rate = Metric("2 concurrent", "pods per second", "pods/s", "higher")
    rate.add("containerd", 14.0)
    text = table([lat, rss, rate], ["peapod", "containerd"], "peapod")
    lines = text.splitlines()
    assert "peapod median" in lines[0] and "containerd median" in lines[0]
    assert "peapod/containerd" in lines[0]
    row = next(line for line in lines if "pod start (sum)" in line)
    assert row.split()[-1] == "0.62"  # 100 / 160
    assert "100.00" in row and "160.00" in row
    only_one = next(line for line in lines if "pods per second" in line)
    assert only_one.split()[-1] == "-"  # no ratio without both runtimes
    assert "(higher better)" in only_one


def test_ratios_against_each_peer_and_the_best_one_by_direction() -> None:
    lat = Metric("1 pod start", "pod start (sum)", "ms")
    lat.add("peapod", 100)
    lat.add("crio", 80)
    lat.add("containerd2", 125)
    rate = Metric("2 concurrent", "pods started per second", "pods/s", "higher")
    rate.add("peapod", 12.0)
    rate.add("crio", 15.0)
    rate.add("containerd2", 10.0)
    names = ["peapod", "crio", "containerd2"]
    got = ratios(lat, names, "peapod")
    assert got["each"] == {"crio": pytest.approx(1.25), "containerd2": pytest.approx(0.8)}
    assert got["best_peer"] == "crio" and got["to_best"] == pytest.approx(1.25)
    got = ratios(rate, names, "peapod")
    assert got["best_peer"] == "crio" and got["to_best"] == pytest.approx(0.8)
    assert "best_peer" not in ratios(lat, ["peapod", "crio"], "peapod")  # one peer: no "best"
    lines = table([lat, rate], names, "peapod").splitlines()
    assert lines[0].split()[-3:] == ["peapod/crio", "peapod/containerd2", "peapod/best"]
    row = next(line for line in lines if "pod start (sum)" in line)
    assert row.split()[-4:] == ["1.25", "0.80", "1.25", "(crio)"]


def test_saved_runs_load_back_with_their_subject(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    lat = Metric("1 pod start", "pod start (sum)", "ms")
    lat.add("peapod", 100, 110)
    lat.add("crio", 80)
    out = tmp_path / "compare.json"
    write_json(out, started=datetime.now(UTC), seconds=1.0, settings={}, versions={},
               configs={}, metrics=[lat], runtimes=["peapod", "crio"], subject="peapod")
    metrics, runtimes, subject = load(out)
    assert (runtimes, subject) == (["peapod", "crio"], "peapod")
    assert metrics[0].samples == {"peapod": [100, 110], "crio": [80]}


def test_cpu_and_memory_of_this_process_are_read_from_proc() -> None:
    pid = Path("/proc/self").resolve().name
    assert cpu_seconds(int(pid)) > 0
    mem = memory(int(pid))
    assert mem is not None and mem.rss_kib > 1000 and 0 < mem.pss_kib <= mem.rss_kib
    assert memory(2**22 + 12345) is None


def test_in_parallel_keeps_order_and_drops_unstarted_calls_on_failure() -> None:
    import threading
    import time

    from scenarios import in_parallel

    assert in_parallel(3, list(range(10)), lambda i: i * i) == [i * i for i in range(10)]
    started: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> int:
        with lock:
            started.append(i)
        if i == 0:
            raise RuntimeError("boom")
        time.sleep(0.05)
        return i

    with pytest.raises(RuntimeError, match="boom"):
        in_parallel(2, list(range(50)), call)
    assert len(started) < 50  # the queued calls were cancelled, not run
