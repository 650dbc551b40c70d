"""The comparison benchmark's harness, run small against peapod alone.

The benchmark itself (peapod against containerd) is not part of the test run; this
checks that its driver runs every scenario over the real socket, writes its JSON, and
leaves the host as it found it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMPARE = REPO / "tests" / "bench" / "compare.py"


def host_state() -> dict[str, object]:
    """What the harness must give back: cgroup, mounts, links, rules, processes, files."""
    cgroups = sorted(p.name for p in Path("/sys/fs/cgroup/memory").glob("peapod-compare-*"))
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if "peapod-compare" in line]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    procs = subprocess.run(["ps", "-eo", "stat=,comm="], capture_output=True, text=True).stdout
    live = [line.split()[1] for line in procs.splitlines() if not line.startswith("Z")]
    return {
        "cgroups": cgroups,
        "mounts": mounts,
        "bench links": [x for x in links.splitlines() if x.startswith("pbench")],
        "bench rules": [x for x in rules.splitlines() if "bench-" in x],
        "conmons": live.count("conmon"),  # exited ones wait for init to reap them
        "tmp": sorted(p.name for p in Path("/tmp").glob("peapod-compare-*")),
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
    }


def test_quick_run_against_peapod_measures_every_scenario_and_cleans_up(tmp_path: Path) -> None:
    before = host_state()
    out = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--runtimes", "peapod",
         "--results", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "left behind" not in out.stderr
    [result] = list(tmp_path.glob("compare-*.json"))
    data = json.loads(result.read_text())
    assert data["error"] == "" and data["runtimes"] == ["peapod"]
    scenarios = {m["scenario"].split()[0] for m in data["metrics"]}
    assert scenarios == {"1", "2", "3", "4", "5", "6"}
    figures = {m["name"]: m["runtimes"]["peapod"] for m in data["metrics"]}
    assert figures["pod start (sum)"]["n"] == 4  # --quick: 4 sequential pods
    assert 0 < figures["pod start (sum)"]["median"] < 10_000
    assert figures["pods started per second"]["median"] > 0
    assert figures["ExecSync `true`"]["n"] >= 2
    assert figures["daemon + monitor CPU per exec"]["median"] > 0
    assert figures["monitor processes per pod"]["median"] == 1.0  # one conmon per container
    assert 0 < figures["monitor PSS, each (conmon / shim)"]["median"] < 8
    assert figures["daemon RSS, idle"]["median"] > 10
    assert data["versions"]["peapod"]["runc"].startswith("runc version")
    assert host_state() == before
