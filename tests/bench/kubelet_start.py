"""Scenario 10: pod start through a real kubelet, static pods, each runtime in turn.

The kubelet ``deploy/build-clients.sh`` built runs standalone (``support.kubelet``: the
test suite's configuration, every path in a folder of its own) against one runtime's
socket; only the endpoint and the cgroup root differ between runtimes. In each round
and for each runtime, in alternating order, a fresh kubelet starts ``pods`` static pods
(one busybox container, image present, ``imagePullPolicy: IfNotPresent``) one after
another, each once the previous one runs; then a second fresh kubelet starts ``pods``
written all at once. Between the two, and at the end, the kubelet is stopped and the
pods are removed through the runtime itself.

Figures, the kubelet's own record first: ``kubelet_pod_start_duration_seconds`` ("from
kubelet seeing a pod for the first time to the pod starting to run") read off its
/metrics around each pod. A static pod is observed there twice, once at its first sync
(with no status yet: the same moment ``kubelet_pod_worker_start_duration_seconds``
records) and once on turning Running, so that metric's sum is taken off. Second, as a
client sees it: the manifest written until ``/pods`` shows the pod Running (polled every
20 ms). Both include the wait for the kubelet's next PLEG relist (every second), which
dominates them on either runtime.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from cri_driver import RUN_LABEL
from measure import Metric
from runtimes import RuntimeUnderTest
from scenarios import WORKLOAD, Comparison
from support.daemon import metric_value
from support.kubelet import Kubelet, static_pod
from support.kubelet_host import KubeletHost

S10 = "10 kubelet pod start"
ROUNDS = 4  # one for fewer than 10 pods (--quick)
POLL = 0.02
START = "kubelet_pod_start_duration_seconds_sum"
WORKER = "kubelet_pod_worker_start_duration_seconds_sum"


def run_kubelet_start(run: Comparison, pods: int) -> None:
    """Scenario 10 for every runtime, ``ROUNDS`` times in alternating order."""
    rounds = ROUNDS if pods >= 10 else 1
    with run.scenario(f"{S10}, {pods} static pods"):
        seq = run.metric(S10, "one after another, kubelet's pod_start_duration", "ms")
        seq_seen = run.metric(S10, "one after another, manifest to Running in /pods", "ms")
        burst = run.metric(S10, f"{pods} at once, kubelet's pod_start_duration (mean)", "ms")
        burst_seen = run.metric(S10, f"{pods} at once, manifest to Running in /pods", "ms")
        burst_all = run.metric(S10, f"{pods} at once, until all Running", "s")
        for turn, rt in enumerate(run.rounds(rounds)):
            image = run.images.busybox
            with kubelet_on(rt, f"{turn}s") as k:
                for i in range(pods):
                    before = _start_sums(k)
                    seen = _start(k, [(f"seq{i}", manifest(f"seq{i}", image, rt))])
                    seq.add(rt.name, (_start_sums(k) - before) * 1000)
                    seq_seen.add(rt.name, *seen)
            with kubelet_on(rt, f"{turn}b") as k:
                before = _start_sums(k)
                t0 = time.perf_counter()
                seen = _start(k, [(f"burst{i}", manifest(f"burst{i}", image, rt))
                                  for i in range(pods)])
                burst_all.add(rt.name, time.perf_counter() - t0)
                burst.add(rt.name, (_start_sums(k) - before) * 1000 / pods)
                burst_seen.add(rt.name, *seen)
            print(f"   {rt.name}: round {turn // len(run.runtimes) + 1}: {_summary(seq, rt)}, "
                  f"{_summary(burst, rt)}", flush=True)


def manifest(name: str, image: str, rt: RuntimeUnderTest) -> dict[str, Any]:
    """One busybox container whose PID 1 ends on SIGTERM, labelled with the run's tag
    (the runtime's teardown finds the pod by it)."""
    pod = static_pod(name, [{"name": "c", "image": image, "command": WORKLOAD,
                             "imagePullPolicy": "IfNotPresent"}], namespace="bench")
    pod["metadata"]["labels"][RUN_LABEL] = rt.shared.run_tag
    return pod


@contextlib.contextmanager
def kubelet_on(rt: RuntimeUnderTest, tag: str) -> Iterator[Kubelet]:
    """A fresh kubelet on ``rt``'s socket; afterwards it is stopped, its pods removed
    through the runtime, and what it changed on the host put back."""
    cgroup_root = f"{rt.shared.cgroup_root}/kubelet-{rt.name}-{tag}"
    host = KubeletHost(cgroup_root)
    k = Kubelet(rt.endpoint, cgroup_root, f"bench-{rt.name}",
                base=rt.shared.base / f"kubelet-{rt.name}-{tag}")
    left: list[str] = []
    try:
        host.prepare()
        k.start()
        yield k
    finally:
        k.stop()
        if rt.driver is not None:
            left += rt.driver.remove_all_pods()
        left += host.restore()
        left += k.cleanup()
    if left:
        raise RuntimeError(f"the kubelet on {rt.name} left: {left}")


def _start_sums(k: Kubelet) -> float:
    """Seconds of pod start the kubelet recorded so far, first-sync observations off."""
    text = k.metrics_text()
    return metric_value(text, START) - metric_value(text, WORKER)


def _start(k: Kubelet, pods: list[tuple[str, dict[str, Any]]],
           timeout: float = 300) -> list[float]:
    """Write the manifests at once; each pod's ms from then until /pods shows it Running."""
    t0 = time.perf_counter()
    for name, pod in pods:
        k.write_manifest(name, pod)
    waiting = {f"{name}-{k.node_name}" for name, _ in pods}
    seen: list[float] = []
    while waiting:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"pods not Running after {timeout} s: {sorted(waiting)}")
        now = time.perf_counter()
        for pod in k.pods():
            if pod["metadata"]["name"] in waiting and _running(pod):
                waiting.discard(pod["metadata"]["name"])
                seen.append((now - t0) * 1000)
        time.sleep(POLL)
    return seen


def _running(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    return status.get("phase") == "Running" and bool(containers) and all(
        "running" in (c.get("state") or {}) for c in containers)


def _summary(metric: Metric, rt: RuntimeUnderTest) -> str:
    s = metric.summary(rt.name)
    return f"{metric.name} median {s['median']:.0f} {metric.unit}" if s else metric.name
