"""Scenario 11: stats. What the kubelet's CRI stats provider costs each runtime.

Every runtime starts ``pods`` pods (one busybox container each, from ``clients``
clients) and holds them at once; after a settling pause:

- **latency**: ListContainerStats({}) and ListPodSandboxStats({}) round trips, with
  ListContainers and ListPodSandbox beside them as the reference a stats call should
  stay within the order of; ``calls`` calls of each in alternating rounds. For peapod
  the mean inside the daemon is read too (its latency histogram, scraped outside the
  CPU windows). Each answer must cover every container (pod) of the run.
- **CPU**: windows of ``window`` seconds per runtime and mode (cut into alternating
  rounds), with CPU time (utime + stime from /proc/PID/stat) of the daemon (its reaped
  children included) and of its monitors (conmon, containerd's shims; children
  excluded, so the containers' processes never count) read before and after:
  *idle* (no calls: the background collectors alone), *every 10 s* (a kubelet-like
  summary pass: ListPodSandbox, ListContainers, ListContainerStats, ListPodSandboxStats)
  and *every 1 s* (the same pass, to get the cost of one pass out of the idle noise).
  Polling figures are per minute of window or per pass, less the idle rate.

A runtime that answers UNIMPLEMENTED to a stats call gets no figure ("-") for it and
leaves that call out of its passes; the run says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc
from measure import Metric, cpu_seconds, timed
from runtimes import PeapodRuntime, RuntimeUnderTest
from scenarios import Comparison, PodStart, in_parallel
from support.daemon import metric_value

from api import api_pb2 as pb

S11 = "11 stats"
LATENCY = "peapod_operations_latency_seconds"
PASS = ("ListPodSandbox", "ListContainers", "ListContainerStats", "ListPodSandboxStats")
STATS_CALLS = ("ListContainerStats", "ListPodSandboxStats")
TIMED = (*STATS_CALLS, "ListContainers", "ListPodSandbox")


@dataclass
class StatsBenchSettings:
    """Pods held per runtime, timed calls of each kind, seconds of each CPU window."""

    pods: int = 100
    calls: int = 100
    window: float = 60.0  # per runtime and mode, over all rounds
    rounds: int = 2
    clients: int = 10
    settle: float = 15.0  # after the last pod started, before anything is measured
    fast_period: float = 1.0
    kubelet_period: float = 10.0

    @classmethod
    def quick(cls) -> StatsBenchSettings:
        return cls(pods=10, calls=20, window=20.0, settle=2.0)


@dataclass
class Caller:
    """One runtime's calls by name, minus those it answered UNIMPLEMENTED."""

    rt: RuntimeUnderTest
    expected: int  # this run's pods (and containers) on the runtime
    unimplemented: set[str] = field(default_factory=set)

    def call(self, name: str) -> int:
        """One call; the number of items answered, -1 if the runtime lacks the rpc."""
        d = self.rt.driver
        assert d is not None
        rs = d.runtime
        try:
            if name == "ListContainerStats":
                return len(rs.ListContainerStats(pb.ListContainerStatsRequest(), timeout=60).stats)
            if name == "ListPodSandboxStats":
                req = pb.ListPodSandboxStatsRequest()
                return len(rs.ListPodSandboxStats(req, timeout=60).stats)
            if name == "ListContainers":
                return len(d.list_containers())
            if name == "ListPodSandbox":
                return len(d.list_pods())
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                if name not in self.unimplemented:
                    print(f"   {self.rt.name}: {name} is UNIMPLEMENTED: n/a", flush=True)
                self.unimplemented.add(name)
                return -1
            raise
        raise ValueError(name)

    def check(self, name: str) -> bool:
        """One call that must list at least every pod of the run; False if unimplemented."""
        got = self.call(name)
        if got < 0:
            return False
        if got < self.expected:
            raise RuntimeError(f"{self.rt.name}: {name} listed {got} items, "
                               f"the run holds {self.expected}")  # fmt: skip
        return True

    def summary_pass(self) -> None:
        for name in PASS:
            if name not in self.unimplemented:
                self.call(name)


def watched(rt: RuntimeUnderTest) -> tuple[int | None, list[int]]:
    return rt.daemon_pid(), rt.monitor_pids()


def cpu_now(daemon: int | None, monitors: list[int]) -> tuple[float, float]:
    """(daemon with its reaped children, monitors without theirs) CPU seconds."""
    own = cpu_seconds(daemon) if daemon else 0.0
    return own, sum(cpu_seconds(p, children=False) for p in monitors)


def in_daemon(rt: RuntimeUnderTest) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) of each timed rpc, from peapod's metrics; {} for others."""
    if not isinstance(rt, PeapodRuntime) or rt.daemon is None:
        return {}
    text = rt.daemon.metrics_text()
    return {op: (metric_value(text, f"{LATENCY}_sum", {"operation": op}),
                 metric_value(text, f"{LATENCY}_count", {"operation": op}))
            for op in TIMED}  # fmt: skip


@dataclass
class Window:
    """CPU seconds of one window and how many passes it held."""

    seconds: float
    daemon: float
    monitors: float
    passes: int

    @property
    def total(self) -> float:
        return self.daemon + self.monitors


def cpu_window(
    caller: Caller, seconds: float, period: float | None, pass_wall: Metric | None = None
) -> Window:
    """CPU over ``seconds``, with a summary pass every ``period`` (None: idle). A runtime
    whose passes take longer than ``period`` runs the same number back to back, and its
    window lasts until the last one ends (the window's measured length is returned)."""
    daemon, monitors = watched(caller.rt)
    d0, m0 = cpu_now(daemon, monitors)
    t0 = time.monotonic()
    end = t0 + seconds
    passes = 0
    while period is not None:
        due = t0 + passes * period
        if due >= end:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        took = timed(caller.summary_pass)
        passes += 1
        if pass_wall is not None:
            pass_wall.add(caller.rt.name, took * 1000)
    time.sleep(max(0.0, end - time.monotonic()))
    d1, m1 = cpu_now(daemon, monitors)
    return Window(time.monotonic() - t0, d1 - d0, m1 - m0, passes)


def start_pods(run: Comparison, rt: RuntimeUnderTest, s: StatsBenchSettings) -> list[PodStart]:
    names = [f"stats{i}" for i in range(s.pods)]
    print(f"   {rt.name}: starting {s.pods} pods", flush=True)
    return in_parallel(s.clients, names,
                       lambda n: run.start_pod(rt, run.images.busybox, n))  # fmt: skip


def run_stats_bench(run: Comparison, s: StatsBenchSettings) -> None:
    """Scenario 11 for every runtime, all holding their pods at once."""
    label = f"{s.pods} pods"
    with run.scenario(f"{S11}, {label}"):
        held: dict[str, list[PodStart]] = {}
        try:
            for rt in run.runtimes:
                held[rt.name] = start_pods(run, rt, s)
            callers = {rt.name: Caller(rt, s.pods) for rt in run.runtimes}
            for c in callers.values():
                for name in TIMED:
                    c.check(name)
            time.sleep(s.settle)
            _latency(run, callers, s, label)
            _cpu(run, callers, s, label)
        finally:
            for rt in run.runtimes:
                pods = held.get(rt.name, [])
                if pods:
                    print(f"   {rt.name}: removing {len(pods)} pods", flush=True)
                    in_parallel(s.clients, pods, lambda p, rt=rt: run.stop_pod(rt, p))


def _latency(
    run: Comparison, callers: dict[str, Caller], s: StatsBenchSettings, label: str
) -> None:
    client = {op: run.metric(S11, f"{op}, {label}", "ms") for op in TIMED}
    inside = {op: run.metric(S11, f"{op} inside the daemon (mean)", "ms") for op in TIMED}
    before = {name: in_daemon(c.rt) for name, c in callers.items()}
    per = max(1, s.calls // s.rounds)
    for rt in run.rounds(s.rounds):
        c = callers[rt.name]
        for op in TIMED:
            for _ in range(per):
                if op in c.unimplemented:
                    break
                t0 = time.perf_counter()
                if c.call(op) >= 0:
                    client[op].add(rt.name, (time.perf_counter() - t0) * 1000)
    for name, c in callers.items():
        after = in_daemon(c.rt)
        for op in TIMED if after else ():
            count = after[op][1] - before[name][op][1]
            if count:
                inside[op].add(name, (after[op][0] - before[name][op][0]) / count * 1000)


def _cpu(run: Comparison, callers: dict[str, Caller], s: StatsBenchSettings, label: str) -> None:
    slice_s = s.window / s.rounds
    unit = "ms CPU/min"
    idle = run.metric(S11, f"idle: daemon + monitors CPU, {label}", unit)
    idle_mon = run.metric(S11, "idle: of which monitors (conmon / shims)", unit)
    slow = run.metric(S11, f"polling every {s.kubelet_period:g} s: CPU", unit)
    slow_added = run.metric(S11, f"polling every {s.kubelet_period:g} s: CPU added by "
                                 "polling (less idle)", unit)  # fmt: skip
    fast_pass = run.metric(S11, f"polling every {s.fast_period:g} s: CPU per pass "
                                "(less idle)", "ms/pass")  # fmt: skip
    fast_mon = run.metric(S11, f"polling every {s.fast_period:g} s: of which monitors, "
                               "per pass", "ms/pass")  # fmt: skip
    wall = run.metric(S11, "summary pass (4 list calls), wall", "ms")
    idle_rate: dict[str, tuple[float, float]] = {}  # (total, monitors) CPU s per second
    got: dict[str, list[Window]] = {}
    for rt in run.rounds(s.rounds):
        w = cpu_window(callers[rt.name], slice_s, None)
        got.setdefault(rt.name, []).append(w)
        idle.add(rt.name, w.total / w.seconds * 60_000)
        idle_mon.add(rt.name, w.monitors / w.seconds * 60_000)
    for name, windows in got.items():
        secs = sum(w.seconds for w in windows)
        idle_rate[name] = (sum(w.total for w in windows) / secs,
                           sum(w.monitors for w in windows) / secs)  # fmt: skip
    for rt in run.rounds(s.rounds):
        w = cpu_window(callers[rt.name], slice_s, s.kubelet_period, wall)
        base = idle_rate[rt.name][0] * w.seconds
        slow.add(rt.name, w.total / w.seconds * 60_000)
        slow_added.add(rt.name, (w.total - base) / w.seconds * 60_000)
    for rt in run.rounds(s.rounds):
        w = cpu_window(callers[rt.name], slice_s, s.fast_period, wall)
        total_rate, mon_rate = idle_rate[rt.name]
        if w.passes:
            fast_pass.add(rt.name, (w.total - total_rate * w.seconds) / w.passes * 1000)
            fast_mon.add(rt.name, (w.monitors - mon_rate * w.seconds) / w.passes * 1000)
    for name, c in callers.items():
        left = ", ".join(sorted(c.unimplemented))
        if left:
            print(f"   {name}: passes left out {left} (UNIMPLEMENTED)", flush=True)


__all__ = ["S11", "StatsBenchSettings", "run_stats_bench"]
