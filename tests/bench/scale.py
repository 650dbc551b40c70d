"""Scenario 7: scale. Many kubelet-shaped pods on one node, one runtime at a time.

Each runtime in turn starts ``pods`` pods (one container each) one after another,
then, with all of them running: times the list and status calls, reads its daemon's
RSS, restarts its daemon (pods keep running) and times how long until it answers
and lists every pod again, and finally removes every pod. Runtimes take turns (not
rounds) because each holds all of its pods at the peak.

For peapod the time spent inside the daemon is read too: the mean of
``peapod_operations_latency_seconds`` over the queries (its interceptor's clock,
from the request's arrival to the response), which excludes the client and gRPC.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from measure import Metric, memory, timed
from runtimes import PeapodRuntime, RuntimeUnderTest
from scenarios import Comparison, PodStart, in_parallel
from support.daemon import metric_value

S7 = "7 scale"
WINDOW = 20  # pods at each end whose RunPodSandbox medians are compared
QUERIES = 200  # calls of each query at the peak
TEARDOWN_CLIENTS = 5

LATENCY = "peapod_operations_latency_seconds"
QUERIED = ("ListPodSandbox", "ListContainers", "PodSandboxStatus", "ContainerStatus")
NETWORK = "peapod_network_setup_seconds"  # every CNI ADD of one RunPodSandbox


def in_daemon(rt: RuntimeUnderTest) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) of each queried rpc, as peapod's metrics record them."""
    if not isinstance(rt, PeapodRuntime) or rt.daemon is None:
        return {}
    text = rt.daemon.metrics_text()
    return {
        op: (
            metric_value(text, f"{LATENCY}_sum", {"operation": op}),
            metric_value(text, f"{LATENCY}_count", {"operation": op}),
        )
        for op in QUERIED
    }


def network_setup(rt: RuntimeUnderTest) -> tuple[float, float] | None:
    """(sum of seconds, count) of peapod's CNI ADDs so far; None for other runtimes."""
    if not isinstance(rt, PeapodRuntime) or rt.daemon is None:
        return None
    text = rt.daemon.metrics_text()
    return metric_value(text, f"{NETWORK}_sum"), metric_value(text, f"{NETWORK}_count")


def run_scale(run: Comparison, pods: int) -> None:
    """Scenario 7 for every runtime, one after another."""
    label = f"{pods} pods"
    with run.scenario(f"{S7}, {label}"):
        first = run.metric(S7, f"RunPodSandbox, pods 1-{WINDOW}", "ms")
        last = run.metric(S7, f"RunPodSandbox, pods {pods - WINDOW + 1}-{pods}", "ms")
        growth = run.metric(S7, "RunPodSandbox median, last / first", "x")
        cni = {
            "first": run.metric(S7, f"CNI ADD inside RunPodSandbox (mean), pods 1-{WINDOW}", "ms"),
            "last": run.metric(S7, f"CNI ADD inside RunPodSandbox (mean), pods "
                                   f"{pods - WINDOW + 1}-{pods}", "ms"),
        }
        start_all = run.metric(S7, f"pod start (sum), all {label}", "ms")
        client = {op: run.metric(S7, f"{op}, {label}", "ms") for op in QUERIED}
        inside = {op: run.metric(S7, f"{op} inside the daemon (mean)", "ms") for op in QUERIED}
        rss = run.metric(S7, f"daemon RSS, {label}", "MiB")
        restart = run.metric(S7, f"daemon restart until all {label} listed", "s")
        teardown = run.metric(S7, f"stop + remove, {TEARDOWN_CLIENTS} clients", "ms")
        for rt in run.runtimes:
            print(f"   {rt.name}: starting {pods} pods", flush=True)
            started = []
            marks: dict[int, tuple[float, float] | None] = {}
            for i in range(pods):
                if i in (0, WINDOW, pods - WINDOW):
                    marks[i] = network_setup(rt)
                p = run.start_pod(rt, run.images.busybox, f"scale{i}")
                started.append(p)
                start_all.add(rt.name, p.total * 1000)
                if (i + 1) % 100 == 0:
                    print(f"   {rt.name}: {i + 1} pods", flush=True)
            marks[pods] = network_setup(rt)
            for key, (a, b) in (("first", (0, WINDOW)), ("last", (pods - WINDOW, pods))):
                start, end = marks[a], marks[b]
                if start is not None and end is not None and end[1] > start[1]:
                    cni[key].add(rt.name, (end[0] - start[0]) / (end[1] - start[1]) * 1000)
            runs = [p.run * 1000 for p in started]
            first.add(rt.name, *runs[:WINDOW])
            last.add(rt.name, *runs[-WINDOW:])
            growth.add(rt.name,
                       statistics.median(runs[-WINDOW:]) / statistics.median(runs[:WINDOW]))

            _queries(rt, started, client, inside)
            pid = rt.daemon_pid()
            mem = memory(pid) if pid else None
            if mem:  # the other runtimes hold no pods at this moment
                rss.add(rt.name, mem.rss_kib / 1024)

            t0 = time.perf_counter()
            rt.restart()
            d = rt.driver
            assert d is not None
            d.wait_ready(timeout=600)
            while len(d.run_pods()) < pods:
                time.sleep(0.05)
            restart.add(rt.name, time.perf_counter() - t0)

            print(f"   {rt.name}: removing {pods} pods", flush=True)
            for times in in_parallel(TEARDOWN_CLIENTS, started,
                                     lambda p, rt=rt: run.stop_pod(rt, p)):
                teardown.add(rt.name, sum(times) * 1000)


def _queries(rt: RuntimeUnderTest, started: list[PodStart], client: dict[str, Metric],
             inside: dict[str, Metric]) -> None:
    """QUERIES calls of each query, timed at the client and (peapod) inside the daemon."""
    d = rt.driver
    assert d is not None
    pod_ids = [p.pod_id for p in started]
    ctr_ids = [p.container_id for p in started]
    calls: dict[str, Callable[[int], object]] = {
        "ListPodSandbox": lambda i: d.list_pods(),
        "ListContainers": lambda i: d.list_containers(),
        "PodSandboxStatus": lambda i: d.pod_status(pod_ids[i % len(pod_ids)]),
        "ContainerStatus": lambda i: d.container_status(ctr_ids[i % len(ctr_ids)]),
    }
    before = in_daemon(rt)
    for op, call in calls.items():
        for i in range(QUERIES):
            client[op].add(rt.name, timed(lambda call=call, i=i: call(i)) * 1000)
    after = in_daemon(rt)
    for op in QUERIED if after else ():
        count = after[op][1] - before[op][1]
        if count:
            inside[op].add(rt.name, (after[op][0] - before[op][0]) / count * 1000)
