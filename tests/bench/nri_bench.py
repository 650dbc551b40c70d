"""Pod start with 0, 1 and 3 NRI plugins subscribed to every event (issue 15's figures).

One peapod (its own bridge network, runc) and a loopback registry holding busybox. In
blocks of ``--block`` pods per plugin count, in the order 0, 1, 3, 3, 1, 0 repeated until
each count has ``--pods`` pods (so drift and other load over the run hit every count
alike), each pod is started as the
kubelet starts one: RunPodSandbox, CreateContainer, StartContainer of one container
(``sleep``), timed each; between pods (untimed) it is stopped and removed. With
plugins, each start is five plugin calls per plugin (RunPodSandbox, CreateContainer,
PostCreateContainer, StartContainer, PostStartContainer), made in turn.

The plugin is a no-op on containerd/nri's own Go stub (``nri_noop/``, built here in a
copy of tests/tools' module), so the figures are peapod's cost per plugin rather than
a slow plugin's; ``--plugin python`` uses the Python test plugin instead.

Figures: the median of each part and of the whole start per plugin count, and what
each plugin adds: (median with n - median with 0) / n over the whole run, and the same
taken within each cycle of the order and then the median over cycles (paired, so a
busy neighbour on the host moves both sides alike). The goal is under 2 ms. Besides,
the daemon's own record (``peapod_nri_plugin_duration_seconds``) gives the time peapod
waited on plugin calls per pod and plugin, and the daemon's CPU time per start (its
threads' run time from schedstat) what its work costs, both much less moved by other
load on the host. A JSON copy goes to tests/bench/results/nri-<time>.json. ``--host-network`` leaves
CNI (the largest and most variable part of a start) out.

    sudo .venv/bin/python tests/bench/nri_bench.py [--pods 60] [--block 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _path in (REPO, HERE.parent):  # peapod's api package, tests/support
    sys.path.insert(0, str(_path))

from support.images import push_busybox  # noqa: E402
from support.nri_env import PLUGIN  # noqa: E402
from support.nri_go import build_noop  # noqa: E402
from support.pods import PodEnv  # noqa: E402
from support.registry import Registry  # noqa: E402

from api import api_pb2 as pb  # noqa: E402

COUNTS = (0, 1, 3)
PARTS = ("run", "create", "start", "total", "cpu")


class Plugins:
    """The bench's plugins on the daemon's NRI socket; ``set(n)`` keeps n connected."""

    def __init__(self, env: PodEnv, kind: str) -> None:
        self.env = env
        self.socket = env.peapod.runroot / "nri.sock"
        self.binary = build_noop() if kind == "go" else None
        self.procs: list[subprocess.Popen[bytes]] = []

    def command(self, i: int) -> list[str]:
        name, idx = f"bench{i}", f"{50 + i}"
        if self.binary is not None:
            return [str(self.binary), "-socket", str(self.socket), "-name", name, "-idx", idx]
        return [sys.executable, str(PLUGIN), "--socket", str(self.socket), "--name", name,
                "--idx", idx]

    def set(self, n: int) -> None:
        while len(self.procs) > n:
            proc = self.procs.pop()
            proc.terminate()
            proc.wait(10)
        while len(self.procs) < n:
            self.procs.append(subprocess.Popen(self.command(len(self.procs)),
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while self.ready() != n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} plugins not ready: {self.ready()}")
            time.sleep(0.05)

    def ready(self) -> int:
        info = self.env.rt.Status(pb.StatusRequest(verbose=True), timeout=10).info
        return sum(1 for p in json.loads(info["nri"])["plugins"] if p["ready"])

    def stop(self) -> None:
        self.set(0)


def plugin_seconds(env: PodEnv) -> tuple[float, int]:
    """The daemon's total seconds and count of plugin calls so far (all plugins, methods)."""
    total, count = 0.0, 0
    for line in env.peapod.metrics_text().splitlines():
        if line.startswith("peapod_nri_plugin_duration_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("peapod_nri_plugin_duration_seconds_count"):
            count += int(float(line.rsplit(" ", 1)[1]))
    return total, count


def cpu_ms(pid: int) -> float:
    """CPU time the process's live threads have run so far, in ms (schedstat: ns, where
    /proc/<pid>/stat counts 10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return total / 1e6


def start_pod(env: PodEnv, image: str, i: int,
              host_network: bool) -> tuple[str, dict[str, float]]:
    """One pod started as the kubelet does it; its id and the time of each call (ms)."""
    cfg = env.config(f"nri{i}", host_network=host_network)
    t0 = time.perf_counter()
    pod = env.run(cfg)
    t1 = time.perf_counter()
    ctr_cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"),
                                 image=pb.ImageSpec(image=image), command=["sleep", "3600"])
    ctr = env.rt.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=ctr_cfg, sandbox_config=cfg), timeout=60).container_id
    t2 = time.perf_counter()
    env.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
    t3 = time.perf_counter()
    return pod, {"run": (t1 - t0) * 1e3, "create": (t2 - t1) * 1e3, "start": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3}


def remove(env: PodEnv, pod: str) -> None:
    env.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)
    env.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=60, help="pods per plugin count")
    parser.add_argument("--block", type=int, default=5, help="pods in a row with one count")
    parser.add_argument("--plugin", choices=("go", "python"), default="go")
    parser.add_argument("--host-network", action="store_true", help="pods without CNI")
    opts = parser.parse_args()
    samples: dict[int, list[dict[str, float]]] = {n: [] for n in COUNTS}
    cycle = [*COUNTS, *reversed(COUNTS)]
    order = cycle * max(1, -(-opts.pods // (2 * opts.block)))
    cycles: list[dict[int, list[float]]] = []  # each cycle's totals per count
    waited = {n: [0.0, 0] for n in COUNTS}  # daemon's seconds and calls waiting on plugins
    with Registry() as registry:
        image = push_busybox(registry.host).ref
        env = PodEnv()
        plugins = None
        try:
            env.peapod.registries_conf.write_text(
                f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
            env.peapod.start()
            env.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)),
                                        timeout=120)
            plugins = Plugins(env, opts.plugin)
            assert env.peapod.proc is not None
            daemon_pid = env.peapod.proc.pid
            for i in range(3):  # warm-up, not counted
                remove(env, start_pod(env, image, -1 - i, opts.host_network)[0])
            for block, n in enumerate(order):
                if block % len(cycle) == 0:
                    cycles.append({c: [] for c in COUNTS})
                plugins.set(n)
                for i in range(opts.block):
                    before = plugin_seconds(env)
                    cpu_before = cpu_ms(daemon_pid)
                    pod, took = start_pod(env, image, block * 1000 + i, opts.host_network)
                    took["cpu"] = cpu_ms(daemon_pid) - cpu_before
                    after = plugin_seconds(env)  # the start's calls only, not the removal's
                    remove(env, pod)
                    samples[n].append(took)
                    cycles[-1][n].append(took["total"])
                    waited[n][0] += after[0] - before[0]
                    waited[n][1] += after[1] - before[1]
                if block % len(cycle) == len(cycle) - 1:
                    print(f"{len(samples[0])} pods per count; medians so far: " + ", ".join(
                        f"{c}: {statistics.median(s['total'] for s in samples[c]):.1f} ms"
                        for c in COUNTS), flush=True)
        finally:
            if plugins is not None:
                plugins.stop()
            env.sweep()
    medians = {n: {p: statistics.median(s[p] for s in samples[n]) for p in PARTS}
               for n in COUNTS}
    per_plugin = {n: (medians[n]["total"] - medians[0]["total"]) / n for n in COUNTS if n}
    calls = {n: waited[n][1] / len(samples[n]) / n for n in COUNTS if n}
    in_daemon = {n: waited[n][0] * 1e3 / len(samples[n]) / n for n in COUNTS if n}
    paired = {n: statistics.median((statistics.median(c[n]) - statistics.median(c[0])) / n
                                   for c in cycles) for n in COUNTS if n}
    print(f"\npod start with NRI plugins ({opts.plugin} no-op plugin, every event), "
          f"{len(samples[0])} pods per count, medians in ms:")
    cpu = {n: statistics.mean(s["cpu"] for s in samples[n]) for n in COUNTS}
    print(f"{'plugins':>8} {'run':>8} {'create':>8} {'start':>8} {'total':>8} {'per plugin':>11}"
          f" {'paired':>8} {'daemon CPU':>11}")
    for n in COUNTS:
        m = medians[n]
        extra = f"{per_plugin[n]:+11.2f} {paired[n]:+8.2f}" if n else f"{'':>20}"
        print(f"{n:>8} {m['run']:8.1f} {m['create']:8.1f} {m['start']:8.1f} {m['total']:8.1f}"
              f"{extra} {cpu[n]:11.2f}")
    print(f"daemon CPU per start and plugin: {(cpu[1] - cpu[0]):+.2f} ms with 1, "
          f"{(cpu[3] - cpu[0]) / 3:+.2f} ms with 3 (means)")
    for n in COUNTS[1:]:
        print(f"with {n}: peapod waited {in_daemon[n]:.2f} ms per pod and plugin on "
              f"{calls[n]:.1f} calls (its peapod_nri_plugin_duration_seconds)")
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results / f"nri-{stamp}.json"
    out.write_text(json.dumps({"plugin": opts.plugin, "pods_per_count": len(samples[0]),
                               "block": opts.block, "host_network": opts.host_network,
                               "medians_ms": medians, "paired_per_plugin_ms": paired,
                               "daemon_wait_per_pod_and_plugin_ms": in_daemon,
                               "daemon_cpu_per_start_ms": cpu,
                               "calls_per_pod_and_plugin": calls,
                               "per_plugin_ms": per_plugin, "samples_ms": samples}, indent=1))
    print(f"written: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
