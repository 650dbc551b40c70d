"""Benchmark: containers through peapod's socket (conmon over runc, busybox image present).

Run as root from the repository root:
    .venv/bin/python tests/bench/bench_containers.py [--pods 50] [--execs 200]
        [--host-network] [--queries 500] [--runroot DIR]

Measures, over --pods sequential pods: RunPodSandbox, CreateContainer, StartContainer and
their sum; ExecSync of `true` (latency, and execs per second one at a time and from 4
clients); ContainerStatus and ListContainers with every pod running (client round trip and
time inside the server from the daemon's debug log); daemon RSS idle and with the pods
running; RSS and PSS of each conmon (/proc/PID/smaps_rollup). Pods get their own network
namespace through a loopback-only CNI network unless --host-network. Everything is
removed afterwards (Remove is timed too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.daemon import Peapod, registries_conf_text
from support.images import busybox_image, push
from support.registry import Registry

from api import api_pb2 as pb
from conmon import procs
from sandbox.cgroup_layout import detect_layout
from sandbox.cgroups import hierarchy_roots


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(label: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{label:<40} n={len(ms):<4} median {statistics.median(ms):8.2f} ms   "
            f"p90 {pct(ms, 0.9):8.2f} ms   max {max(ms):8.2f} ms")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def server_times(daemon: Peapod, rpc: str, since: int) -> list[float]:
    text = daemon.log_path.read_bytes()[since:].decode(errors="replace")
    return [float(m) / 1000 for m in re.findall(rf'msg="rpc done" rpc={rpc} ms=([0-9.]+)', text)]


class Bench:
    def __init__(self, daemon: Peapod, image: str, base: Path, host_network: bool) -> None:
        self.d = daemon
        self.image = image
        self.base = base
        self.host_network = host_network

    @property
    def rt(self) -> object:
        return self.d.runtime

    def pod(self) -> str:
        uid = secrets.token_hex(6)
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"b{uid}", uid=uid, namespace="bench"),
            log_directory=str(self.base / "logs" / uid),
        )
        cfg.linux.security_context.namespace_options.network = (
            pb.NODE if self.host_network else pb.POD
        )
        return str(self.d.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg),
                                                timeout=120).pod_sandbox_id)

    def create(self, pod: str) -> str:
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"),
                                 image=pb.ImageSpec(image=self.image),
                                 command=["sleep", "100000"], log_path="c/0.log")
        req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg)
        return str(self.d.runtime.CreateContainer(req, timeout=120).container_id)

    def start(self, ctr: str) -> None:
        self.d.runtime.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)

    def exec_true(self, ctr: str) -> None:
        got = self.d.runtime.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=["true"]),
                                      timeout=60)
        assert got.exit_code == 0, got.stderr

    def remove_all(self) -> list[float]:
        items = self.d.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
        return [timed(lambda i=i: self.d.runtime.RemovePodSandbox(
            pb.RemovePodSandboxRequest(pod_sandbox_id=i.id), timeout=120)) for i in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--execs", type=int, default=200)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--host-network", action="store_true")
    parser.add_argument("--runroot", default="",
                        help="runtime state dir (default: under the temp dir); try a tmpfs")
    args = parser.parse_args()

    with Registry() as registry:
        pushed = push(registry.host, "bench/busybox", "latest", busybox_image())
        base = Path(tempfile.mkdtemp(prefix="peapod-bench-"))
        net = base / "net.d"
        net.mkdir()
        (net / "10-lo.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "bench-lo", "plugins": [{"type": "loopback"}]}))
        tag = secrets.token_hex(3)
        daemon = Peapod(base, registries_conf=registries_conf_text([registry.host]),
                        config={"network": {"network_dir": str(net),
                                            "plugin_dirs": ["/usr/lib/cni"]},
                                "sandbox": {"default_cgroup_parent": f"peapod-bench-{tag}"},
                                **({"runroot": args.runroot} if args.runroot else {})})
        bench = Bench(daemon, pushed.ref, daemon.base, args.host_network)
        try:
            daemon.start()
            assert daemon.proc is not None
            daemon.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=pushed.ref)),
                                    timeout=60)
            time.sleep(1)
            idle = rss_kib(daemon.proc.pid)
            runs: dict[str, list[float]] = {"RunPodSandbox": [], "CreateContainer": [],
                                            "StartContainer": [], "sum of the three": []}
            ctrs: list[str] = []
            for _ in range(args.pods):
                t0 = time.perf_counter()
                pod = bench.pod()
                t1 = time.perf_counter()
                ctr = bench.create(pod)
                t2 = time.perf_counter()
                bench.start(ctr)
                t3 = time.perf_counter()
                runs["RunPodSandbox"].append(t1 - t0)
                runs["CreateContainer"].append(t2 - t1)
                runs["StartContainer"].append(t3 - t2)
                runs["sum of the three"].append(t3 - t0)
                ctrs.append(ctr)
            mode = "host network" if args.host_network else "own netns, loopback-only CNI"
            print(f"{args.pods} sequential pods, one busybox container each ({mode}):")
            for label, values in runs.items():
                print("  " + row(label, values))

            target = ctrs[0]
            for _ in range(10):
                bench.exec_true(target)
            lat = [timed(lambda: bench.exec_true(target)) for _ in range(args.execs)]
            print(f"ExecSync `true` into one container:\n  {row('ExecSync', lat)}")
            print(f"  sequential: {len(lat) / sum(lat):.1f} execs/s")
            start = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: bench.exec_true(ctrs[i % len(ctrs)]), range(args.execs)))
            print(f"  4 clients, {min(4, len(ctrs))} containers: "
                  f"{args.execs / (time.perf_counter() - start):.1f} execs/s")

            since = daemon.log_path.stat().st_size
            status = [timed(lambda c=c: daemon.runtime.ContainerStatus(
                pb.ContainerStatusRequest(container_id=c), timeout=10))
                for c in (ctrs * (args.queries // len(ctrs) + 1))[:args.queries]]
            listing = [timed(lambda: daemon.runtime.ListContainers(
                pb.ListContainersRequest(), timeout=10)) for _ in range(args.queries // 5)]
            print(f"queries with {len(ctrs)} running containers (client round trip / in server):")
            print("  " + row("ContainerStatus (client)", status))
            print("  " + row("ContainerStatus (server)",
                             server_times(daemon, "ContainerStatus", since)))
            print("  " + row("ListContainers (client)", listing))
            print("  " + row("ListContainers (server)",
                             server_times(daemon, "ListContainers", since)))

            busy = rss_kib(daemon.proc.pid)
            print(f"daemon RSS: idle {idle / 1024:.1f} MiB, with {len(ctrs)} running pods "
                  f"{busy / 1024:.1f} MiB")
            usage = []
            for c in ctrs:
                info = json.loads(daemon.runtime.ContainerStatus(
                    pb.ContainerStatusRequest(container_id=c, verbose=True)).info["info"])
                mem = procs.memory_usage(info["monitorPid"])
                if mem is not None:
                    usage.append(mem)
            print(f"conmon per container (n={len(usage)}): RSS median "
                  f"{statistics.median(u.rss_kib for u in usage):.0f} KiB, PSS median "
                  f"{statistics.median(u.pss_kib for u in usage):.0f} KiB, PSS total "
                  f"{sum(u.pss_kib for u in usage) / 1024:.1f} MiB")
            removes = bench.remove_all()
            print("  " + row("RemovePodSandbox (running container)", removes))
        finally:
            try:
                if daemon.proc is not None:
                    bench.remove_all()
            finally:
                daemon.cleanup()
                # The pods' common parent cgroup outlives the pods; it is ours to remove.
                for root in hierarchy_roots(detect_layout()):
                    with contextlib.suppress(OSError):
                        (root / f"peapod-bench-{tag}").rmdir()
                if args.runroot:
                    shutil.rmtree(args.runroot, ignore_errors=True)


if __name__ == "__main__":
    main()
