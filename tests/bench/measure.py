"""Samples and what is read off /proc: percentiles, CPU time, RSS and PSS (``memory``)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

# RSS and PSS in KiB from /proc/PID/smaps_rollup, None once the process is gone: peapod's
# own reader, which knows nothing of peapod and reads any runtime's processes alike.
from conmon.procs import memory_usage as memory

TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Metric:
    """One figure of one scenario, with samples per runtime.

    A latency has many samples; a single figure (throughput, RSS) has one.
    """

    scenario: str
    name: str
    unit: str
    better: str = "lower"  # or "higher"
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, runtime: str, *values: float) -> None:
        self.samples.setdefault(runtime, []).extend(values)

    def summary(self, runtime: str) -> dict[str, float]:
        values = self.samples.get(runtime, [])
        if not values:
            return {}
        return {
            "n": len(values),
            "median": statistics.median(values),
            "p90": percentile(values, 0.9),
            "p99": percentile(values, 0.99),
            "min": min(values),
            "max": max(values),
        }

    def ratio(self, runtime: str, baseline: str) -> float | None:
        """median(runtime) / median(baseline)."""
        a, b = self.summary(runtime), self.summary(baseline)
        if not a or not b or b["median"] == 0:
            return None
        return a["median"] / b["median"]

    def best(self, runtimes: Iterable[str]) -> str | None:
        """Of ``runtimes`` with samples, the one with the best median: the lowest, or the
        highest where higher is better; None if none has samples."""
        medians = {rt: s["median"] for rt in runtimes if (s := self.summary(rt))}
        if not medians:
            return None
        pick = max if self.better == "higher" else min
        return pick(medians, key=lambda rt: medians[rt])


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU of a process, plus its reaped children's when ``children``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    # fields[0] is state (field 3); utime..cstime are fields 14..17.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def live_threads_cpu(pid: int) -> float:
    """Seconds on CPU of a process's live threads, to the nanosecond (each thread's
    /proc/PID/task/TID/schedstat): for short windows where clock ticks are too coarse.
    Threads that ended, and children, are not counted."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def total_cpu(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


__all__ = ["Metric", "cpu_seconds", "live_threads_cpu", "memory", "percentile", "timed",
           "total_cpu"]
