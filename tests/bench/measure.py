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


def total_cpu(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


__all__ = ["Metric", "cpu_seconds", "memory", "percentile", "timed", "total_cpu"]
