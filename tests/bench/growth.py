"""Scenario 12: cost as the work grows. Pod start and daemon CPU at rising pod counts.

Each runtime in turn starts kubelet-shaped pods one after another until ``level`` pods
run, for each level (10, 100, 300 by default). At each level, with nothing else asked
of it, the daemon's CPU is read over ``idle`` seconds (its live threads' schedstat:
housekeeping that grows with the pods, such as stats, monitors, timers). Then
``probes`` more pods are started one after another and timed (RunPodSandbox +
CreateContainer + StartContainer) while the daemon's CPU is read (its own utime + stime
and its reaped children's: CNI plugins, unshare, pinns), and the probes are removed, so
the next level starts from ``level`` pods again. Per runtime, the slope is the
least-squares line through (running pods, median pod start) and (running pods, CPU per
pod start), per 100 pods. Runtimes take turns, not rounds, because each holds all of
its pods at the peak.
"""

from __future__ import annotations

import statistics
import time

from measure import cpu_seconds, live_threads_cpu
from runtimes import RuntimeUnderTest
from scenarios import Comparison, PodStart, in_parallel

S12 = "12 growth"
TEARDOWN_CLIENTS = 5
SETTLE = 1.0  # seconds after the last start before the idle window


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    num = sum((x - mx) * (y - my) for x, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return num / den


def run_growth(run: Comparison, levels: list[int], probes: int, idle: float) -> None:
    """Scenario 12 for every runtime, one after another."""
    with run.scenario(f"{S12}, {'/'.join(map(str, levels))} pods, {probes} probes"):
        for rt in run.runtimes:
            _one_runtime(run, rt, levels, probes, idle)


def _one_runtime(run: Comparison, rt: RuntimeUnderTest, levels: list[int], probes: int,
                 idle: float) -> None:
    fill: list[PodStart] = []
    starts: list[tuple[float, float]] = []
    cpus: list[tuple[float, float]] = []
    pid = rt.daemon_pid()
    try:
        for level in sorted(levels):
            while len(fill) < level:
                fill.append(run.start_pod(rt, run.images.busybox, f"grow{len(fill)}"))
            print(f"   {rt.name}: {level} pods running", flush=True)
            if pid is not None:
                time.sleep(SETTLE)
                c0, t0 = live_threads_cpu(pid), time.perf_counter()
                time.sleep(idle)
                busy = live_threads_cpu(pid) - c0
                run.metric(S12, f"daemon CPU while idle, {level} pods", "ms/s").add(
                    rt.name, busy * 1000 / (time.perf_counter() - t0))
            c0 = cpu_seconds(pid) if pid is not None else 0.0
            probe = [run.start_pod(rt, run.images.busybox, f"probe{level}-{i}")
                     for i in range(probes)]
            totals = [p.total * 1000 for p in probe]
            run.metric(S12, f"pod start (sum), {level} pods running", "ms").add(
                rt.name, *totals)
            starts.append((level, statistics.median(totals)))
            if pid is not None:
                per = (cpu_seconds(pid) - c0) * 1000 / probes
                run.metric(S12, f"daemon CPU per pod start, {level} pods running",
                           "ms/pod").add(rt.name, per)
                cpus.append((level, per))
            in_parallel(TEARDOWN_CLIENTS, probe, lambda p: run.stop_pod(rt, p))
    finally:
        print(f"   {rt.name}: removing {len(fill)} pods", flush=True)
        in_parallel(TEARDOWN_CLIENTS, fill, lambda p: run.stop_pod(rt, p))
    for points, name, unit in ((starts, "pod start median", "ms"),
                               (cpus, "daemon CPU per pod start", "ms/pod")):
        k = slope(points)
        if k is not None:
            run.metric(S12, f"slope of {name}, per 100 more pods", unit).add(rt.name, k * 100)
