"""The long chaos run: a seeded CRI workload while the daemon is killed -9 and restarted.

Run as root from the repository root:

    .venv/bin/python tests/bench/chaos.py [--ops N] [--seed S] [--workers W]
        [--kill-after MIN,MAX]

It starts a loopback docker-registry with busybox, a peapod daemon on a private CNI
network (``support.pods.PodEnv``), runs ``support.chaos.Chaos`` until N operations
(default 3000) have been sent, then checks survivors, removes everything through the
CRI and takes the leak census. Prints ops, kills, the histogram of codes per operation,
and what was lost or leaked; exits 1 if anything was. The machine is swept afterwards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for _path in (REPO, REPO / "tests"):
    sys.path.insert(0, str(_path))

from support.chaos import Chaos  # noqa: E402
from support.daemon import registries_conf_text  # noqa: E402
from support.images import push_busybox  # noqa: E402
from support.pods import HostState, PodEnv  # noqa: E402
from support.registry import Registry  # noqa: E402

from api import api_pb2 as pb  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=3000)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--kill-after", default="2,6", help="seconds between kills: MIN,MAX")
    args = p.parse_args()
    low, high = (float(x) for x in args.kill_after.split(","))
    state = HostState()
    with Registry() as registry:
        image = push_busybox(registry.host)
        env = PodEnv()
        env.peapod.registries_conf.write_text(registries_conf_text([registry.host]))
        try:
            env.peapod.start()
            env.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(
                image=image.ref)), timeout=60)
            result = Chaos(env, image.ref, args.seed, ops=args.ops, workers=args.workers,
                           kill_after=(low, high)).run()
        finally:
            env.sweep()
            state.restore()
    print(f"seed {result.seed}: {result.total()} ops, {result.kills} kills, "
          f"{result.seconds:.0f} s")
    print(f"{'operation':18} {'code':20} {'count':>6}")
    for key, count in sorted(result.codes.items()):
        op, code = key.split(" ", 1)
        print(f"{op:18} {code:20} {count:6}")
    for title, items in (("INTERNAL/UNKNOWN", result.errors), ("lost", result.lost),
                         ("cleanup failures", result.cleanup)):
        print(f"{title}: {len(items)}")
        for item in items[:20]:
            print(f"  {item}")
    print(f"leaks: {sum(len(v) for v in result.leaks.values())}")
    for category, items in result.leaks.items():
        print(f"  {category} ({len(items)}): " + "; ".join(items[:6]))
    for key, message in sorted(result.samples.items()):
        print(f"  sample {key}: {message}")
    bad = result.errors or result.lost or result.cleanup or result.leaks
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
