"""The long hostile-input run: tests/integration/test_hostile_input.py with many examples.

Run as root from the repository root:

    .venv/bin/python tests/bench/hostile.py [--examples N] [--seed S] [--budget SECONDS]

It runs the pytest module with ``PEAPOD_HOSTILE_EXAMPLES=N`` per rpc (default 300), the
given seed and wall-clock budget (default 540 s; each rpc still sends at least 5), then
prints requests sent and the histogram of codes received per rpc, and each distinct
failure (kind and the daemon's error) with its count.
Exit status is pytest's.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--examples", type=int, default=300, help="examples per rpc")
    p.add_argument("--seed", type=int, default=1010)
    p.add_argument("--budget", type=float, default=540.0, help="seconds for all rpcs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="peapod-hostile-") as tmp:
        stats = Path(tmp) / "stats.json"
        env = {**os.environ, "PEAPOD_HOSTILE_EXAMPLES": str(args.examples),
               "PEAPOD_HOSTILE_SEED": str(args.seed), "PEAPOD_HOSTILE_BUDGET": str(args.budget),
               "PEAPOD_HOSTILE_STATS": str(stats)}
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf",
             "tests/integration/test_hostile_input.py"], cwd=REPO, env=env, check=False)
        if not stats.exists():
            print("no statistics written (the module did not get to its daemon)")
            return run.returncode or 1
        data = json.loads(stats.read_text())
    totals: collections.Counter[str] = collections.Counter()
    print(f"\nseed {data['seed']}, {data['examples']} examples per rpc, "
          f"{data['seconds']:.0f} s")
    print(f"{'rpc':26} {'sent':>5}  codes")
    for rpc, codes in data["codes"].items():
        totals.update(codes)
        extra = ""
        if data["over_budget"].get(rpc):
            extra += f"  (+{data['over_budget'][rpc]} not sent: budget)"
        if data["unbuildable"].get(rpc):
            extra += f"  (+{data['unbuildable'][rpc]} refused by protobuf)"
        shown = ", ".join(f"{k} {v}" for k, v in sorted(codes.items(), key=lambda kv: -kv[1]))
        print(f"{rpc:26} {sum(codes.values()):5}  {shown}{extra}")
    print(f"{'total':26} {sum(totals.values()):5}  "
          + ", ".join(f"{k} {v}" for k, v in totals.most_common()))
    failures = data.get("failures", {})
    print(f"\nfailures by kind and daemon error ({sum(map(len, failures.values()))} distinct):")
    for rpc, signatures in failures.items():
        for text, count in sorted(signatures.items(), key=lambda kv: -kv[1]):
            print(f"  {rpc:26} {count:5}  {text[:150]}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
