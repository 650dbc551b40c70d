"""The daemon's own process and Python runtime metrics.

prometheus_client's process collector (RSS, CPU seconds, open and maximum fds),
platform collector (``python_info``) and GC collector (collections and objects per
generation), plus what they lack: the thread count, the time each GC pass stops the
interpreter, and the zombie processes on the node (CRI-O's ``processes_defunct``).
"""

from __future__ import annotations

import bisect
import gc
import os
import time
from collections.abc import Callable, Iterator

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

GC_PAUSE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def register(registry: CollectorRegistry) -> Callable[[], None]:
    """Add the process and runtime collectors to ``registry``; returns their clean-up."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(ThreadsCollector())
    registry.register(DefunctCollector())
    pauses = GcPauses()
    registry.register(pauses)
    gc.callbacks.append(pauses.callback)

    def undo() -> None:
        if pauses.callback in gc.callbacks:
            gc.callbacks.remove(pauses.callback)

    return undo


class ThreadsCollector(Collector):
    """``peapod_process_threads``: the daemon's OS threads (gRPC's own included)."""

    def __init__(self, status_path: str = "/proc/self/status") -> None:
        self.status_path = status_path

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "peapod_process_threads", "OS threads of the daemon process (gRPC core's included)."
        )
        count = threads_in(self.status_path)
        if count is not None:
            family.add_metric([], count)
        yield family


def threads_in(status_path: str) -> int | None:
    """The ``Threads:`` figure of a /proc/<pid>/status file, None if unreadable."""
    try:
        with open(status_path, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class DefunctCollector(Collector):
    """``peapod_processes_defunct``: zombie processes on the node, counted at each scrape."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "peapod_processes_defunct",
            "Zombie (defunct) processes on the node: exited, not yet reaped by their parent.",
        )
        family.add_metric([], count_defunct(self.proc))
        yield family


def count_defunct(proc: str = "/proc") -> int:
    """How many processes under ``proc`` are in state Z; vanished ones are skipped.

    About 5 µs a process (one open, read and close each, no Python file object).
    """
    count = 0
    try:
        entries = os.listdir(proc)
    except OSError:
        return 0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"{proc}/{name}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            stat = os.read(fd, 1024)  # "pid (comm) S ...": comm is at most 15 bytes
        except OSError:
            continue
        finally:
            os.close(fd)
        # The state follows the command name, which is in parentheses and may hold any byte.
        end = stat.rfind(b")")
        if end >= 0 and stat[end + 2 : end + 3] == b"Z":
            count += 1
    return count


class GcPauses(Collector):
    """``peapod_python_gc_pause_seconds``: how long each GC pass held the interpreter.

    The GC callback only adds to plain lists (no lock: a callback that took a
    metric's lock could deadlock a thread that held it when the GC started); the
    histogram is built from them at scrape time.
    """

    def __init__(self, buckets: tuple[float, ...] = GC_PAUSE_BUCKETS) -> None:
        self.buckets = buckets
        self._counts = [[0] * (len(buckets) + 1) for _ in range(3)]  # per generation, +Inf
        self._sums = [0.0, 0.0, 0.0]
        self._started = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        gen = min(max(int(info.get("generation", 0)), 0), 2)
        self._counts[gen][bisect.bisect_left(self.buckets, elapsed)] += 1
        self._sums[gen] += elapsed

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "peapod_python_gc_pause_seconds",
            "Time each garbage collection pass stopped the interpreter, by generation.",
            labels=["generation"],
        )
        for gen in range(3):
            counts, total = list(self._counts[gen]), self._sums[gen]
            cumulative, running = [], 0
            for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
                running += n
                cumulative.append((_bound(bound), running))
            family.add_metric([str(gen)], cumulative, total)
        yield family


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)
