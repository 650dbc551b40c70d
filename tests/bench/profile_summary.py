"""Where a peapod daemon's busy time went, from a ``compare.py --profile`` file.

    .venv/bin/python tests/bench/profile_summary.py PROFILE.txt [--top 15]

The file holds py-spy's collapsed stacks (recorded with --idle and --threads). Samples
whose innermost frame is a thread waiting for work (a pool worker's queue, a condition,
grpcio's completion-queue poll) count as idle; the rest are split into peapod's rpc
handlers, its interceptor, grpcio's server code and everything else, and the hottest
innermost peapod frames are listed.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

IDLE_LEAVES = ("_worker (concurrent/futures/thread.py", "Condition.wait (threading.py",
               "_serve (grpc/_server.py:1314)", "Event.wait (threading.py")
PEAPOD = ("(cri/", "(oci/", "(sandbox/", "(cni/", "(conmon/")


def classify(frames: list[str]) -> str:
    if any(frames[-1].startswith(leaf) for leaf in IDLE_LEAVES):
        return "idle (waiting for work)"
    if any("(cri/handlers/" in f for f in frames):
        return "peapod rpc handlers"
    if any("(cri/interceptor" in f for f in frames):
        return "peapod interceptor"
    if any("grpc/" in f for f in frames):
        return "grpcio server"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    kinds: collections.Counter[str] = collections.Counter()
    hot: collections.Counter[str] = collections.Counter()
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        kind = classify(frames)
        kinds[kind] += int(count)
        if kind != "idle (waiting for work)":
            ours = [f for f in frames if any(p in f for p in PEAPOD)]
            hot[(ours[-1] if ours else frames[-1]).split(" ", 1)[-1]] += int(count)
    busy = sum(n for k, n in kinds.items() if not k.startswith("idle"))
    for kind, n in kinds.most_common():
        share = "" if kind.startswith("idle") else f"{100 * n / max(busy, 1):5.1f} % of busy"
        print(f"{kind:<26} {n:7d} samples  {share}")
    print(f"\nhottest innermost peapod frames (of {busy} busy samples):")
    for frame, n in hot.most_common(args.top):
        print(f"{n:7d}  {frame}")


if __name__ == "__main__":
    main()
