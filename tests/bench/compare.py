"""peapod side by side with CRI-O and containerd 2: the same CRI workload against each,
in one run.

Run as root from the repository root (``deploy/setup.sh bench`` installs and builds what
it needs):

    .venv/bin/python tests/bench/compare.py [--quick] [--profile]
        [--runtimes peapod,crio,containerd2[,containerd]]
        [--endpoint NAME=unix:///path.sock ...] [--results DIR] [counts, see --help]

It starts a loopback docker-registry with images it builds (a catatonit pause image, a
busybox image, a ~100 MiB multi-layer image), writes one CNI conflist every runtime uses
(bridge + host-local + portmap on a free /22), starts peapod from this checkout, CRI-O
and containerd 2 as deploy/build-peers.sh built them (and, if asked, Debian's
containerd 1.6), all with the same /usr/sbin/runc and /usr/lib/cni, each on its own
socket and state directories, then runs the scenarios (see scenarios.py) alternating the
runtimes, prints a table of medians and spreads per runtime with the ratio of peapod's
median to each peer's and to the best peer's, writes the same as JSON under --results
(with each runtime's config files), and tears everything down. ``--endpoint`` adds a
CRI runtime the operator already runs; it must be able to pull from the registry over
plain HTTP and run pods on its own network.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for _path in (REPO, HERE.parent, HERE):  # peapod's api package, tests/support, this folder
    sys.path.insert(0, str(_path))

from critest_bench import run_critest_bench  # noqa: E402
from environment import BenchEnvironment  # noqa: E402
from growth import run_growth  # noqa: E402
from kubelet_start import run_kubelet_start  # noqa: E402
from peer_builds import built  # noqa: E402
from report import table, write_json  # noqa: E402
from runtime_containerd2 import Containerd2Runtime  # noqa: E402
from runtime_crio import CrioRuntime  # noqa: E402
from runtimes import (  # noqa: E402
    ContainerdRuntime,
    ExternalRuntime,
    PeapodRuntime,
    RuntimeUnderTest,
    Shared,
)
from scale import run_scale  # noqa: E402
from scenarios import Comparison, Settings  # noqa: E402
from stats_bench import StatsBenchSettings, run_stats_bench  # noqa: E402
from streaming_bench import run_streaming_bench  # noqa: E402
from userns_bench import UsernsBenchSettings, run_userns_start  # noqa: E402

MANAGED: dict[str, type[RuntimeUnderTest]] = {
    "peapod": PeapodRuntime,
    "crio": CrioRuntime,
    "containerd2": Containerd2Runtime,
    "containerd": ContainerdRuntime,  # Debian's 1.6
}


def default_runtimes() -> str:
    """peapod, CRI-O and containerd 2 once deploy/build-peers.sh built them; until then
    peapod and Debian's containerd 1.6."""
    if built("crio", "pinns", "containerd", "containerd-shim-runc-v2"):
        return "peapod,crio,containerd2"
    print("compare: CRI-O and containerd 2 are not built (deploy/build-peers.sh); "
          "comparing with Debian's containerd 1.6 alone", file=sys.stderr)
    return "peapod,containerd"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--runtimes",
        default=None,
        help="managed runtimes to start, in order: peapod, crio, containerd2 and containerd "
        "(Debian's 1.6); default peapod,crio,containerd2 once built, else peapod,containerd",
    )
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=ENDPOINT",
        help="also measure a CRI runtime already running at ENDPOINT",
    )
    p.add_argument("--subject", default="peapod",
                   help="numerator of the ratio columns; every other runtime is a peer")
    p.add_argument(
        "--results",
        type=Path,
        default=HERE / "results",
        help="directory for the JSON result (default tests/bench/results)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the peapod daemon with py-spy during each scenario",
    )
    p.add_argument(
        "--scenarios",
        default="1,2,3,4,5,6",
        help="which scenarios to run (5 and 6 use the pods 2 starts, so 2 runs too; "
        "7, scale, is not in the default set: --scenarios 7 --scale-pods N; "
        "nor is 8, critest -benchmark: --scenarios 8 --critest-samples N; "
        "nor is 9, streaming: --scenarios 9 --stream-mib N; "
        "nor is 10, pod start through a real kubelet: --scenarios 10 --kubelet-pods N; "
        "nor is 11, stats: --scenarios 11 --stats-pods N --stats-window S)",
    )
    p.add_argument("--critest-samples", type=int, default=20,
                   help="lifecycles of each kind critest times in scenario 8 (--quick: 4)")
    p.add_argument("--kubelet-pods", type=int, default=20,
                   help="static pods per kubelet start in scenario 10 (--quick: 3)")
    p.add_argument("--stream-mib", type=int, default=1024,
                   help="MiB of each transfer in scenario 9 (--quick: 64)")
    p.add_argument("--stats-pods", type=int, default=100,
                   help="pods each runtime holds in scenario 11 (--quick: 10)")
    p.add_argument("--stats-window", type=float, default=60.0,
                   help="seconds of each CPU window per runtime in scenario 11: idle, "
                   "polling every 10 s, every 1 s (--quick: 20)")
    p.add_argument("--growth-levels", default="10,100,300",
                   help="scenario 12 (not in the default set: --scenarios 12), cost as the "
                   "pods grow: running pods at which it measures (--quick: 2,5,10)")
    p.add_argument("--growth-probes", type=int, default=10,
                   help="pods timed at each level of scenario 12 (--quick: 3)")
    p.add_argument("--growth-idle", type=float, default=10.0,
                   help="seconds of idle daemon CPU read at each level of scenario 12 "
                   "(--quick: 1)")
    p.add_argument("--userns-pods", type=int, default=20,
                   help="scenario 13 (not in the default set: --scenarios 13), pod start in "
                   "a user namespace against a plain pod: pods of each kind (--quick: 4)")
    p.add_argument("--scale-pods", type=int, default=500,
                   help="pods each runtime holds at once in scenario 7 (--quick: 30)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small counts: a smoke run of every scenario in about 20 s",
    )
    d = Settings()
    p.add_argument("--seq-pods", type=int, default=d.seq_pods)
    p.add_argument("--conc-pods", type=int, default=d.conc_pods)
    p.add_argument("--conc-clients", type=int, default=d.conc_clients)
    p.add_argument("--exec-seconds", type=float, default=d.exec_seconds)
    p.add_argument("--pull-reps", type=int, default=d.pull_reps)
    p.add_argument("--pull-mb", type=int, default=100)
    p.add_argument("--queries", type=int, default=d.queries)
    return p.parse_args()


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(
            seq_pods=4,
            seq_round=2,
            conc_pods=10,
            conc_clients=5,
            conc_rounds=2,
            exec_seconds=2,
            exec_rounds=2,
            pull_reps=1,
            queries=30,
            query_rounds=3,
        )
    return Settings(
        seq_pods=args.seq_pods,
        conc_pods=args.conc_pods,
        conc_clients=args.conc_clients,
        exec_seconds=args.exec_seconds,
        pull_reps=args.pull_reps,
        queries=args.queries,
    )


class Profiler:
    """py-spy on one daemon, one raw (collapsed stacks) file per scenario."""

    def __init__(self, runtime: RuntimeUnderTest, out_dir: Path) -> None:
        found = shutil.which("py-spy") or str(REPO / ".venv" / "bin" / "py-spy")
        if not Path(found).exists():
            raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.binary = found
        self.runtime = runtime
        self.out_dir = out_dir

    @contextlib.contextmanager
    def around(self, scenario: str) -> Iterator[None]:
        pid = self.runtime.daemon_pid()
        if pid is None:
            yield
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9]+", "-", scenario).strip("-")
        out = self.out_dir / f"{self.runtime.name}-{name}.txt"
        proc = subprocess.Popen(
            [
                self.binary,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
                "--threads",
                "--idle",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            print(f"   py-spy profile: {out}", flush=True)


def on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt("SIGTERM")


def main() -> int:
    args = parse_args()
    if args.runtimes is None:
        args.runtimes = default_runtimes()
    settings = settings_from(args)
    signal.signal(signal.SIGTERM, on_sigterm)
    started = datetime.now(UTC)
    load_at_start = list(os.getloadavg())
    t_start = time.monotonic()
    stamp = started.strftime("%Y%m%dT%H%M%SZ")

    env = BenchEnvironment(big_mb=10 if args.quick else args.pull_mb)
    runtimes: list[RuntimeUnderTest] = []
    run: Comparison | None = None
    error = ""
    print("setting up: registry, images, CNI network", flush=True)
    try:
        env.open()
        assert env.images is not None and env.subnet is not None
        shared = Shared(
            env.base, env.registry.host, env.net_dir, env.images.pause, env.cgroup_root, env.run_tag
        )
        for name in [n for n in args.runtimes.split(",") if n]:
            if name not in MANAGED:
                raise SystemExit(f"unknown runtime {name!r}; managed ones: {', '.join(MANAGED)}")
            runtimes.append(MANAGED[name](name, shared))
        for spec in args.endpoint:
            name, _, endpoint = spec.partition("=")
            if not name or not endpoint:
                raise SystemExit(f"--endpoint wants NAME=ENDPOINT, got {spec!r}")
            runtimes.append(ExternalRuntime(name, shared, endpoint))
        for rt in runtimes:
            print(f"starting {rt.name}", flush=True)
            rt.start()
        hook = None
        if args.profile:
            peapod = next((r for r in runtimes if isinstance(r, PeapodRuntime)), None)
            if peapod is None:
                raise SystemExit("--profile profiles peapod, which is not in --runtimes")
            hook = Profiler(peapod, args.results / f"profile-{stamp}").around
        run = Comparison(runtimes, env.images, settings, hook)
        print(f"network {env.subnet.network} on bridge {env.bridge}; preparing images", flush=True)
        run_scenarios(run, set(args.scenarios.split(",")),
                      30 if args.quick else args.scale_pods,
                      4 if args.quick else args.critest_samples,
                      64 if args.quick else args.stream_mib,
                      3 if args.quick else args.kubelet_pods,
                      StatsBenchSettings.quick() if args.quick else
                      StatsBenchSettings(pods=args.stats_pods, window=args.stats_window))
        if "12" in args.scenarios.split(","):
            levels = [int(n) for n in ("2,5,10" if args.quick else args.growth_levels).split(",")]
            run_growth(run, levels, 3 if args.quick else args.growth_probes,
                       1.0 if args.quick else args.growth_idle)
        if "13" in args.scenarios.split(","):
            run_userns_start(run, UsernsBenchSettings.quick() if args.quick
                             else UsernsBenchSettings(pods=args.userns_pods))
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        # Teardown must finish, or pods, mounts and cgroups stay behind: no second signal.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            save(run, runtimes, env, args, settings, started, t_start, load_at_start, stamp, error)
        except Exception as err:  # the teardown below must run whatever happened
            print(f"could not write the results: {err}", file=sys.stderr)
        print("tearing down", flush=True)
        left: list[str] = []
        for rt in reversed(runtimes):
            try:
                left += rt.stop()
            except Exception as err:  # keep tearing the rest down
                left.append(f"teardown of {rt.name} failed: {err}")
        left += env.close()
        if left:
            print("left behind or failed in teardown:\n  " + "\n  ".join(left), file=sys.stderr)
    return 1 if left else 0


def save(run: Comparison | None, runtimes: list[RuntimeUnderTest], env: BenchEnvironment,
         args: argparse.Namespace, settings: Settings, started: datetime, t_start: float,
         load_at_start: list[float], stamp: str, error: str) -> None:
    """Print the table and write the JSON of what was measured, even of a failed run."""
    if run is None or not run.metrics:
        return
    names = [rt.name for rt in runtimes]
    metrics = sorted(run.metrics, key=lambda m: int(m.scenario.split()[0]))  # 10 after 9
    print()
    print(table(metrics, names, args.subject))
    out = args.results / f"compare-{stamp}.json"
    write_json(
        out,
        started=started,
        seconds=time.monotonic() - t_start,
        settings={
            **settings.as_dict(),
            "scenarios": args.scenarios,
            "pull_mb": env.big_mb,
            "pull_layers": env.big_layers,
            "load_avg_at_start": load_at_start,
            "network": env.conflist(),
            "images": env.images.__dict__ if env.images else {},
        },
        versions={rt.name: rt.versions() for rt in runtimes},
        configs={rt.name: rt.config() for rt in runtimes},
        metrics=metrics,
        runtimes=names,
        subject=args.subject,
        error=error,
    )
    what = "partial results (the run failed)" if error else "results"
    print(f"\n{what}: {out}  ({time.monotonic() - t_start:.0f} s)")


def run_scenarios(run: Comparison, wanted: set[str], scale_pods: int,
                  critest_samples: int, stream_mib: int, kubelet_pods: int,
                  stats: StatsBenchSettings) -> None:
    """The scenarios asked for, in an order that lets 5 and 6 use the pods of 2."""
    run.prepare()
    if "1" in wanted:
        run.sequential_start()
    if "3" in wanted:
        run.exec_sync()
    if "4" in wanted:
        run.pull()
    if wanted & {"2", "5", "6"}:
        run.concurrent_start()
        if "5" in wanted:
            run.queries()
        if "6" in wanted:
            run.memory()
        run.concurrent_teardown()
    if "7" in wanted:
        run_scale(run, scale_pods)
    if "8" in wanted:
        run_critest_bench(run, critest_samples)
    if "9" in wanted:
        run_streaming_bench(run, stream_mib << 20, 1 if stream_mib <= 64 else 2,
                            5 if stream_mib <= 64 else 20)
    if "10" in wanted:
        run_kubelet_start(run, kubelet_pods)
    if "11" in wanted:
        run_stats_bench(run, stats)


if __name__ == "__main__":
    sys.exit(main())
