"""Benchmark: pod sandbox latency through peapod's socket, on a real bridge network.

Run as root from the repository root:
    .venv/bin/python tests/bench/bench_sandbox.py [--sequential 50] [--concurrent 20]
        [--pods 100] [--queries 500]

Measures RunPodSandbox over N sequential pods and over M pods started at once, then,
with --pods pods in existence, PodSandboxStatus and ListPodSandbox: the round trip seen
by the client and the time spent in the server (from the daemon's debug log). Stop and
Remove are timed while cleaning up. Everything is removed afterwards.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.pods import HostState, PodEnv, pod_env

from api import api_pb2 as pb


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{label:<44} n={len(ms):<4} median {statistics.median(ms):8.3f} ms   "
            f"p90 {pct(ms, 0.9):8.3f} ms   max {max(ms):8.3f} ms")


def server_times(env: PodEnv, rpc: str, since: int) -> list[float]:
    """Server-side durations of ``rpc`` logged after byte offset ``since``."""
    text = env.peapod.log_path.read_bytes()[since:].decode(errors="replace")
    pattern = re.compile(rf'msg="rpc done" rpc={rpc} ms=([0-9.]+)')
    return [float(m.group(1)) / 1000 for m in pattern.finditer(text)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()

    host = HostState()
    rows: list[str] = []
    try:
        with pod_env() as env:
            ids: list[str] = []

            sequential = []
            for i in range(args.sequential):
                config = env.config(f"seq{i}")
                start = time.perf_counter()
                ids.append(env.run(config))
                sequential.append(time.perf_counter() - start)
            rows.append(row(f"RunPodSandbox, {args.sequential} sequential", sequential))

            configs = [env.config(f"conc{i}") for i in range(args.concurrent)]

            def run_one(config: pb.PodSandboxConfig) -> tuple[str, float]:
                start = time.perf_counter()
                pod = env.run(config)
                return pod, time.perf_counter() - start

            wall = time.perf_counter()
            with ThreadPoolExecutor(args.concurrent) as pool:
                results = list(pool.map(run_one, configs))
            wall = time.perf_counter() - wall
            ids += [pod for pod, _ in results]
            rows.append(row(f"RunPodSandbox, {args.concurrent} concurrent (each call)",
                            [t for _, t in results]))
            rows.append(f"{'  wall time for all ' + str(args.concurrent):<44} "
                        f"{wall * 1000:.0f} ms")

            while len(ids) < args.pods:
                ids.append(env.run(env.config(f"fill{len(ids)}")))
            assert len(env.list()) == len(ids)

            offset = env.peapod.log_path.stat().st_size
            status = [timed(lambda i=i: env.status(ids[i % len(ids)]))
                      for i in range(args.queries)]
            listing = [timed(env.list) for _ in range(args.queries)]
            time.sleep(0.2)  # let the last log lines land
            rows.append(row(f"PodSandboxStatus at {len(ids)} pods (client)", status))
            rows.append(row(f"PodSandboxStatus at {len(ids)} pods (server)",
                            server_times(env, "PodSandboxStatus", offset)))
            rows.append(row(f"ListPodSandbox at {len(ids)} pods (client)", listing))
            rows.append(row(f"ListPodSandbox at {len(ids)} pods (server)",
                            server_times(env, "ListPodSandbox", offset)))

            stops = [timed(lambda p=p: env.stop(p)) for p in ids]
            removes = [timed(lambda p=p: env.remove(p)) for p in ids]
            rows.append(row("StopPodSandbox (sequential)", stops))
            rows.append(row("RemovePodSandbox of a stopped pod (sequential)", removes))
            assert env.list() == [] and env.leases() == []
    finally:
        host.restore()
    print()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
