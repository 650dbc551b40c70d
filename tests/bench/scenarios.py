"""The comparison's scenarios, each run against every runtime in alternating order.

Every scenario is cut into rounds; round r runs the runtimes in order, reversed on odd
rounds (A B, B A, A B ...), so slow drift on a noisy machine falls on all of them alike.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TypeVar

from environment import Images
from measure import Metric, memory, timed, total_cpu
from runtimes import RuntimeUnderTest

T = TypeVar("T")
R = TypeVar("R")

# PID 1 of every container: ends at once on SIGTERM, as a well-behaved workload does.
WORKLOAD = ["sh", "-c", "trap 'exit 0' TERM; sleep 1000000 & wait"]
STOP_GRACE = 10  # seconds, StopContainer's timeout, as a pod's grace period

S1 = "1 pod start, sequential"
S2 = "2 pod start, concurrent"
S3 = "3 ExecSync"
S4 = "4 image pull"
S5 = "5 queries, pods running"
S6 = "6 memory"


def in_parallel(clients: int, items: list[T], call: Callable[[T], R]) -> list[R]:
    """``call`` on every item from ``clients`` threads; on a failure, calls not yet begun
    are dropped and the ones under way finish before the error is raised."""
    pool = ThreadPoolExecutor(clients)
    try:
        return list(pool.map(call, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Settings:
    """Counts and durations; the defaults keep a two-runtime run under 10 minutes."""

    seq_pods: int = 50
    seq_round: int = 10
    conc_pods: int = 100
    conc_clients: int = 10
    conc_rounds: int = 2
    exec_seconds: float = 30.0
    exec_rounds: int = 6
    pull_reps: int = 3
    queries: int = 300
    query_rounds: int = 3

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class PodStart:
    pod_id: str
    container_id: str
    run: float
    create: float
    start: float

    @property
    def total(self) -> float:
        return self.run + self.create + self.start


@dataclass
class Comparison:
    """The runtimes, the images they run, and every figure measured so far."""

    runtimes: list[RuntimeUnderTest]
    images: Images
    settings: Settings
    scenario_hook: Callable[[str], contextlib.AbstractContextManager[None]] | None = None
    metrics: list[Metric] = field(default_factory=list)
    running: dict[str, list[PodStart]] = field(default_factory=dict)
    _index: dict[tuple[str, str], Metric] = field(default_factory=dict)

    # ------------------------------------------------------------ helpers
    def metric(self, scenario: str, name: str, unit: str, better: str = "lower") -> Metric:
        key = (scenario, name)
        if key not in self._index:
            self._index[key] = Metric(scenario, name, unit, better)
            self.metrics.append(self._index[key])
        return self._index[key]

    def rounds(self, count: int) -> Iterator[RuntimeUnderTest]:
        """The runtimes ``count`` times over, reversed on odd rounds."""
        for rnd in range(count):
            yield from self.runtimes if rnd % 2 == 0 else reversed(self.runtimes)

    def pods_label(self) -> tuple[dict[str, int], str]:
        """How many pods of 2 each runtime runs, and "N pods" for figure names."""
        pods = {rt.name: len(self.running.get(rt.name, [])) for rt in self.runtimes}
        return pods, f"{min(pods.values())} pods"

    def scenario(self, name: str) -> contextlib.AbstractContextManager[None]:
        print(f"-- {name}", flush=True)
        return self.scenario_hook(name) if self.scenario_hook else contextlib.nullcontext()

    @staticmethod
    def start_pod(rt: RuntimeUnderTest, image: str, name: str) -> PodStart:
        d = rt.driver
        assert d is not None
        cfg = d.pod_config(name)
        t0 = time.perf_counter()
        pod = d.run_pod(cfg)
        t1 = time.perf_counter()
        ctr = d.create_container(pod, cfg, image, WORKLOAD)
        t2 = time.perf_counter()
        d.start_container(ctr)
        t3 = time.perf_counter()
        return PodStart(pod, ctr, t1 - t0, t2 - t1, t3 - t2)

    @staticmethod
    def stop_pod(rt: RuntimeUnderTest, pod: PodStart) -> tuple[float, float, float]:
        """StopContainer, StopPodSandbox, RemovePodSandbox, as the kubelet deletes a pod."""
        d = rt.driver
        assert d is not None
        return (
            timed(lambda: d.stop_container(pod.container_id, STOP_GRACE)),
            timed(lambda: d.stop_pod(pod.pod_id)),
            timed(lambda: d.remove_pod(pod.pod_id)),
        )

    # ------------------------------------------------------------ set-up
    def prepare(self) -> None:
        """Pull the images the pods run (and containerd's pause) and start one pod each."""
        for rt in self.runtimes:
            d = rt.driver
            assert d is not None
            for image in (self.images.busybox, self.images.pause):
                d.pull(image)
            warm = self.start_pod(rt, self.images.busybox, "warmup")
            d.exec_sync(warm.container_id, ["true"])
            self.stop_pod(rt, warm)
        time.sleep(2)
        self.daemon_rss(self.metric(S6, "daemon RSS, idle", "MiB"))

    def daemon_rss(self, metric: Metric) -> None:
        """Each runtime's daemon RSS now, in MiB (none for a runtime this run did not start)."""
        for rt in self.runtimes:
            pid = rt.daemon_pid()
            mem = memory(pid) if pid else None
            if mem:
                metric.add(rt.name, mem.rss_kib / 1024)

    # ------------------------------------------------------------ 1
    def sequential_start(self) -> None:
        s = self.settings
        with self.scenario(S1):
            names = ["RunPodSandbox", "CreateContainer", "StartContainer", "pod start (sum)"]
            starts = [self.metric(S1, n, "ms") for n in names]
            stops = [
                self.metric(S1, n, "ms")
                for n in (
                    "StopContainer",
                    "StopPodSandbox",
                    "RemovePodSandbox",
                    "stop + remove (sum)",
                )
            ]
            per_round = max(1, s.seq_round)
            for rt in self.rounds(math.ceil(s.seq_pods / per_round)):
                pods = []
                for i in range(per_round):
                    p = self.start_pod(rt, self.images.busybox, f"seq{i}")
                    pods.append(p)
                    for m, v in zip(starts, (p.run, p.create, p.start, p.total), strict=True):
                        m.add(rt.name, v * 1000)
                for p in pods:
                    times = self.stop_pod(rt, p)
                    for m, v in zip(stops, (*times, sum(times)), strict=True):
                        m.add(rt.name, v * 1000)

    # ------------------------------------------------------------ 2
    def concurrent_start(self) -> None:
        """Start conc_pods pods from conc_clients clients; the pods stay for 5 and 6."""
        s = self.settings
        with self.scenario(S2):
            lat = self.metric(S2, f"pod start, {s.conc_clients} clients", "ms")
            rate = self.metric(S2, "pods started per second", "pods/s", "higher")
            walls: dict[str, float] = {}
            per_round = s.conc_pods // s.conc_rounds
            for idx, rt in enumerate(self.rounds(s.conc_rounds)):
                names = [f"con{idx}-{i}" for i in range(per_round)]
                t0 = time.perf_counter()
                got = in_parallel(s.conc_clients, names,
                                  lambda n, rt=rt: self.start_pod(rt, self.images.busybox, n))
                walls[rt.name] = walls.get(rt.name, 0.0) + time.perf_counter() - t0
                self.running.setdefault(rt.name, []).extend(got)
                lat.add(rt.name, *(p.total * 1000 for p in got))
            for rt in self.runtimes:
                rate.add(rt.name, len(self.running[rt.name]) / walls[rt.name])

    def concurrent_teardown(self) -> None:
        """Stop and remove the pods of 2 from conc_clients clients, in the rounds they
        started in, newest first, alternating as they did."""
        s = self.settings
        with self.scenario(f"{S2}: teardown"):
            m = self.metric(S2, f"stop + remove, {s.conc_clients} clients", "ms")
            per_round = s.conc_pods // s.conc_rounds
            for rt in reversed(list(self.rounds(s.conc_rounds))):
                running = self.running.get(rt.name, [])
                batch, self.running[rt.name] = running[-per_round:], running[:-per_round]
                for times in in_parallel(s.conc_clients, batch,
                                         lambda p, rt=rt: self.stop_pod(rt, p)):
                    m.add(rt.name, sum(times) * 1000)

    # ------------------------------------------------------------ 3
    def exec_sync(self) -> None:
        s = self.settings
        with self.scenario(S3):
            targets = {
                rt.name: self.start_pod(rt, self.images.busybox, "exec") for rt in self.runtimes
            }
            lat = self.metric(S3, "ExecSync `true`", "ms")
            counts: dict[str, int] = {}
            spent: dict[str, float] = {}
            cpu: dict[str, float] = {}
            slice_s = s.exec_seconds / s.exec_rounds
            for rt in self.rounds(s.exec_rounds):
                d = rt.driver
                assert d is not None
                ctr = targets[rt.name].container_id
                watched = [p for p in [rt.daemon_pid(), *rt.monitor_pids()] if p]
                cpu0 = total_cpu(watched)
                t_start = time.perf_counter()
                end = t_start + slice_s
                n = 0
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    code = d.exec_sync(ctr, ["true"])
                    lat.add(rt.name, (time.perf_counter() - t0) * 1000)
                    if code != 0:
                        raise RuntimeError(f"{rt.name}: ExecSync true exited {code}")
                    n += 1
                spent[rt.name] = spent.get(rt.name, 0.0) + time.perf_counter() - t_start
                cpu[rt.name] = cpu.get(rt.name, 0.0) + total_cpu(watched) - cpu0
                counts[rt.name] = counts.get(rt.name, 0) + n
            rate = self.metric(S3, "execs per second, one client", "execs/s", "higher")
            per = self.metric(S3, "daemon + monitor CPU per exec", "ms/exec")
            for rt in self.runtimes:
                rate.add(rt.name, counts[rt.name] / spent[rt.name])
                if rt.daemon_pid() is not None:  # unknown for a runtime this run did not start
                    per.add(rt.name, cpu[rt.name] * 1000 / counts[rt.name])
                self.stop_pod(rt, targets[rt.name])

    # ------------------------------------------------------------ 4
    def pull(self) -> None:
        s = self.settings
        size_mib = self.images.big_bytes / 2**20
        with self.scenario(S4):
            took = self.metric(
                S4, f"PullImage {size_mib:.0f} MiB, {self.images.big_layers} layers", "s"
            )
            speed = self.metric(S4, "pull rate", "MiB/s", "higher")
            removed = self.metric(S4, "RemoveImage", "ms")
            for rt in self.rounds(s.pull_reps):
                d = rt.driver
                assert d is not None
                if d.has_image(self.images.big):
                    d.remove_image(self.images.big)
                seconds = timed(lambda d=d: d.pull(self.images.big))
                took.add(rt.name, seconds)
                speed.add(rt.name, size_mib / seconds)
                # An image is removed long after its pull, with its files on disk; unlinking
                # files still in the page cache costs a seventh, and runtimes differ in
                # whether a pull flushes them. So flush first.
                os.sync()
                removed.add(rt.name, timed(lambda d=d: d.remove_image(self.images.big)) * 1000)

    # ------------------------------------------------------------ 5
    def queries(self) -> None:
        s = self.settings
        _, label = self.pods_label()
        with self.scenario(S5):
            lp = self.metric(S5, f"ListPodSandbox, {label}", "ms")
            lc = self.metric(S5, f"ListContainers, {label}", "ms")
            cs = self.metric(S5, f"ContainerStatus, {label}", "ms")
            floor = self.metric(S5, "Version (an empty rpc: the floor)", "ms")
            per = max(1, s.queries // s.query_rounds)
            for rt in self.rounds(s.query_rounds):
                d = rt.driver
                assert d is not None
                ctrs = [p.container_id for p in self.running[rt.name]]
                for _ in range(per):
                    lp.add(rt.name, timed(d.list_pods) * 1000)
                for _ in range(per):
                    lc.add(rt.name, timed(d.list_containers) * 1000)
                for _ in range(per):
                    floor.add(rt.name, timed(d.version) * 1000)
                for i in range(per):
                    c = ctrs[i % len(ctrs)]
                    cs.add(rt.name, timed(lambda c=c, d=d: d.container_status(c)) * 1000)

    # ------------------------------------------------------------ 6
    def memory(self) -> None:
        pods, label = self.pods_label()
        with self.scenario(S6):
            busy = self.metric(S6, f"daemon RSS, {label}", "MiB")
            mon_rss = self.metric(S6, "monitor RSS, each (conmon / shim)", "MiB")
            mon_pss = self.metric(S6, "monitor PSS, each (conmon / shim)", "MiB")
            mon_count = self.metric(S6, "monitor processes per pod", "count")
            pause_rss = self.metric(S6, "pause/infra RSS, each", "MiB")
            pause_pss = self.metric(S6, "pause/infra PSS, each", "MiB")
            total = self.metric(S6, "monitor + pause PSS, per pod", "MiB")
            self.daemon_rss(busy)
            for rt in self.runtimes:
                monitors = [m for m in map(memory, rt.monitor_pids()) if m]
                pauses = [m for m in map(memory, rt.pause_pids()) if m]
                n = max(1, pods[rt.name])
                mon_rss.add(rt.name, *(m.rss_kib / 1024 for m in monitors))
                mon_pss.add(rt.name, *(m.pss_kib / 1024 for m in monitors))
                pause_rss.add(rt.name, *(m.rss_kib / 1024 for m in pauses))
                pause_pss.add(rt.name, *(m.pss_kib / 1024 for m in pauses))
                mon_count.add(rt.name, len(monitors) / n)
                total.add(rt.name, sum(m.pss_kib for m in monitors + pauses) / n / 1024)
                print(
                    f"   {rt.name}: {len(monitors)} monitor processes, {len(pauses)} "
                    f"pause/infra processes for {pods[rt.name]} pods",
                    flush=True,
                )
