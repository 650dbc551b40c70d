"""Scenario 13: pod start in its own user namespace (``hostUsers: false``) against a plain pod.

Each runtime that advertises ``user_namespaces`` in Status starts ``pods`` pods of each
kind one after another (RunPodSandbox + CreateContainer + StartContainer of one busybox
container, timed as scenario 1 does), in rounds that alternate which kind goes first and,
as every scenario does, the order of the runtimes. The user-namespaced pods get the
mappings the kubelet would send: uid and gid 0 onto a host range of 65536 of their own
(disjoint per pod), and the container carries the pod's ``userns_options``. Each round's
pods are stopped and removed before the next.

Figures per runtime: the start of each kind and its RunPodSandbox and CreateContainer
parts, and the ratio of the medians (user namespace over plain), the issue's goal being
at most 1.2. A runtime that does not advertise user namespaces (Debian's containerd 1.6
speaks a CRI without the field) is left out, and the run says so.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

from runtimes import RuntimeUnderTest
from scenarios import WORKLOAD, Comparison, PodStart

from api import api_pb2 as pb

S13 = "13 user namespaces"
RANGE = 65536
FIRST_RANGE = 1 << 20  # host ids from here on, one range of 65536 per pod


@dataclass
class UsernsBenchSettings:
    pods: int = 20  # per kind and runtime
    rounds: int = 4

    @classmethod
    def quick(cls) -> UsernsBenchSettings:
        return cls(pods=4, rounds=2)


def supports_userns(rt: RuntimeUnderTest) -> bool:
    """Whether the runtime's default handler advertises user namespaces in Status."""
    assert rt.driver is not None
    status = rt.driver.runtime.Status(pb.StatusRequest(), timeout=30)
    return any(h.name == "" and h.features.user_namespaces for h in status.runtime_handlers)


def start(rt: RuntimeUnderTest, image: str, name: str, host_id: int | None) -> PodStart:
    """Run, create and start one pod, in its own user namespace from ``host_id`` if given."""
    d = rt.driver
    assert d is not None
    cfg = d.pod_config(name)
    if host_id is not None:
        ids = [pb.IDMapping(container_id=0, host_id=host_id, length=RANGE)]
        cfg.linux.security_context.namespace_options.userns_options.CopyFrom(
            pb.UserNamespace(mode=pb.POD, uids=ids, gids=ids))
    t0 = time.perf_counter()
    pod = d.run_pod(cfg)
    t1 = time.perf_counter()
    ctr = d.create_container(pod, cfg, image, WORKLOAD)  # copies the pod's namespace options
    t2 = time.perf_counter()
    d.start_container(ctr)
    t3 = time.perf_counter()
    return PodStart(pod, ctr, t1 - t0, t2 - t1, t3 - t2)


def run_userns_start(run: Comparison, settings: UsernsBenchSettings) -> None:
    with run.scenario(S13):
        able = [rt for rt in run.runtimes if supports_userns(rt)]
        for rt in run.runtimes:
            if rt not in able:
                print(f"   {rt.name}: does not advertise user namespaces; left out", flush=True)
        kinds = {"plain": False, "hostUsers:false": True}
        figures = {
            (kind, part): run.metric(S13, f"{label}, {kind}", "ms")
            for kind in kinds
            for part, label in (("total", "pod start (sum)"), ("run", "RunPodSandbox"),
                                ("create", "CreateContainer"))
        }  # fmt: skip
        ratio = run.metric(S13, "pod start, hostUsers:false / plain (medians)", "x")
        per_round = max(1, math.ceil(settings.pods / settings.rounds))
        next_range = FIRST_RANGE
        for index, rt in enumerate(run.rounds(settings.rounds)):
            if rt not in able:
                continue
            order = list(kinds) if index % 2 == 0 else list(reversed(kinds))
            started: list[PodStart] = []
            for kind in order:
                for i in range(per_round):
                    host_id = None
                    if kinds[kind]:
                        host_id, next_range = next_range, next_range + RANGE
                    p = start(rt, run.images.busybox, f"userns{index}-{i}", host_id)
                    started.append(p)
                    for part, value in (("total", p.total), ("run", p.run),
                                        ("create", p.create)):  # fmt: skip
                        figures[(kind, part)].add(rt.name, value * 1000)
            for p in started:
                run.stop_pod(rt, p)
        for rt in able:
            plain = figures[("plain", "total")].samples.get(rt.name, [])
            mapped = figures[("hostUsers:false", "total")].samples.get(rt.name, [])
            if plain and mapped:
                ratio.add(rt.name, statistics.median(mapped) / statistics.median(plain))
