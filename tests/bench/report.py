"""The comparison's output: a terminal table and a JSON file with the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from measure import Metric


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, memory, kernel, distribution, cgroup layout."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gib"] = round(int(mem) / 1024 / 1024, 1)
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    hybrid = Path("/sys/fs/cgroup/unified").is_dir()
    info["cgroups"] = "v2" if unified else ("hybrid" if hybrid else "v1")
    info["load_avg_at_end"] = list(os.getloadavg())
    return info


def python_version() -> str:
    return platform.python_version()


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "ms/exec") or abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:.1f}"


def peers_of(runtimes: list[str], subject: str) -> list[str]:
    """Every runtime but the subject, which each ratio divides."""
    return [rt for rt in runtimes if rt != subject] if subject in runtimes else []


def ratios(m: Metric, runtimes: list[str], subject: str) -> dict[str, Any]:
    """subject/peer for each peer, and subject/best peer (with its name) when there are
    two peers or more: medians, below 1 better for the subject unless higher is better."""
    peers = peers_of(runtimes, subject)
    out: dict[str, Any] = {"each": {p: m.ratio(subject, p) for p in peers}}
    if len(peers) > 1:
        best = m.best(peers)
        out["best_peer"] = best
        out["to_best"] = m.ratio(subject, best) if best else None
    return out


def ratio_heads(runtimes: list[str], subject: str) -> list[str]:
    peers = peers_of(runtimes, subject)
    return [f"{subject}/{p}" for p in peers] + ([f"{subject}/best"] if len(peers) > 1 else [])


def ratio_cells(m: Metric, runtimes: list[str], subject: str) -> list[str]:
    got = ratios(m, runtimes, subject)
    cells = ["-" if r is None else f"{r:.2f}" for r in got["each"].values()]
    if "to_best" in got:
        r = got["to_best"]
        cells.append("-" if r is None else f"{r:.2f} ({got['best_peer']})")
    return cells


def table(metrics: list[Metric], runtimes: list[str], subject: str) -> str:
    """Median, p90 (and p99 when two runtimes or fewer) per runtime, and the ratios of the
    subject's median to each peer's and to the best peer's."""
    spreads = ["p90", "p99"] if len(runtimes) <= 2 else ["p90"]
    head = ["scenario", "figure", "unit"]
    for rt in runtimes:
        head += [f"{rt} median", *spreads]
    head += ratio_heads(runtimes, subject)
    rows: list[list[str]] = []
    for m in metrics:
        row = [m.scenario, m.name, m.unit + (" (higher better)" if m.better == "higher" else "")]
        for rt in runtimes:
            s = m.summary(rt)
            if not s:
                row += ["-"] * (1 + len(spreads))
            elif s["n"] == 1:
                row += [fmt(s["median"], m.unit)] + [""] * len(spreads)
            else:
                row += [fmt(s["median"], m.unit), *(fmt(s[q], m.unit) for q in spreads)]
        row += ratio_cells(m, runtimes, subject)
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    numeric = set(range(3, len(head)))

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    last = None
    for row in rows:
        if last is not None and row[0] != last:
            out.append("")
        out.append(line(row) if row[0] != last else line(["", *row[1:]]))
        last = row[0]
    return "\n".join(out)


def write_json(
    path: Path,
    *,
    started: datetime,
    seconds: float,
    settings: dict[str, Any],
    versions: dict[str, dict[str, str]],
    configs: dict[str, Any],
    metrics: list[Metric],
    runtimes: list[str],
    subject: str,
    error: str = "",
) -> None:
    data = {
        "error": error,  # empty for a complete run
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "seconds": round(seconds, 1),
        "machine": machine(),
        "python": python_version(),
        "runtimes": runtimes,
        "subject": subject,  # every ratio is subject median / a peer's median
        "peers": peers_of(runtimes, subject),
        "settings": settings,
        "versions": versions,
        "configs": configs,
        "git": git_head(),
        "metrics": [
            {
                "scenario": m.scenario,
                "name": m.name,
                "unit": m.unit,
                "better": m.better,
                "ratios": ratios(m, runtimes, subject),
                "runtimes": {
                    rt: {**m.summary(rt), "samples": m.samples.get(rt, [])} for rt in runtimes
                },
            }
            for m in metrics
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def git_head() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
    )
    return out.stdout.strip()


def load(path: Path) -> tuple[list[Metric], list[str], str]:
    """Metrics, runtimes and subject of a saved run (older runs name a "ratio" instead)."""
    data = json.loads(path.read_text())
    subject = data.get("subject") or data["ratio"].partition("/")[0]
    metrics = []
    for item in data["metrics"]:
        m = Metric(item["scenario"], item["name"], item["unit"], item["better"])
        for rt, got in item["runtimes"].items():
            if got.get("samples"):
                m.add(rt, *got["samples"])
        metrics.append(m)
    return metrics, data["runtimes"], subject


def markdown(metrics: list[Metric], runtimes: list[str], subject: str) -> str:
    """The table as Markdown: median (p90, p99) per runtime, and the ratios of medians."""
    head = ["scenario", "figure", *(f"{rt} median (p90 / p99)" for rt in runtimes),
            *ratio_heads(runtimes, subject)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    last = None
    for m in metrics:
        unit = m.unit + (", higher is better" if m.better == "higher" else "")
        cells = [m.scenario if m.scenario != last else "", f"{m.name} ({unit})"]
        last = m.scenario
        for rt in runtimes:
            s = m.summary(rt)
            if not s:
                cells.append("-")
            elif s["n"] == 1:
                cells.append(fmt(s["median"], m.unit))
            else:
                cells.append(f"{fmt(s['median'], m.unit)} ({fmt(s['p90'], m.unit)} / "
                             f"{fmt(s['p99'], m.unit)})")
        cells += ratio_cells(m, runtimes, subject)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="Print a saved comparison again.")
    p.add_argument("result", type=Path, help="a compare-*.json file")
    p.add_argument("--markdown", action="store_true", help="as a Markdown table")
    args = p.parse_args()
    metrics, runtimes, subject = load(args.result)
    show = markdown if args.markdown else table
    print(show(metrics, runtimes, subject))


if __name__ == "__main__":
    main()
