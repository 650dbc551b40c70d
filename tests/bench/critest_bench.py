"""Scenario 8: ``critest -benchmark``, cri-tools' own benchmarks, against each runtime.

critest times five workloads itself: the container lifecycle (create, start, status,
stop, remove, each in a fresh pod), the pod lifecycle (run, status, stop, remove), the
image lifecycle (pull, status, remove of a small image), ListImages, and one pod with a
container from scratch. The first four go to JSON files in ``-benchmarking-output-dir``
(every sample's duration per operation), the last to a gmeasure experiment in the
ginkgo JSON report. Each runtime runs the set ``ROUNDS`` times, in alternating order,
with the run's busybox as critest's default image. critest picks the pods' cgroup
parent itself (``/test.slice`` for a runtime without the RuntimeConfig rpc, as
containerd 1.6; peapod's default parent for peapod): the cgroups the scenario made
there are removed at its end.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from pathlib import Path

from environment import cgroup_hierarchies, remove_cgroup_tree
from runtimes import RuntimeUnderTest
from scenarios import Comparison
from support.critest import critest_binary, endpoint_args, parse_report
from support.images import build_image, busybox_rootfs_layer, marker_layer, push

S8 = "8 critest benchmark"
ROUNDS = 4
# critest's data files: file -> the figure-name prefix of its operations.
FILES = {
    "container_benchmark_data.json": "container lifecycle",
    "pod_benchmark_data.json": "pod lifecycle",
    "image_lifecycle_benchmark_data.json": "image lifecycle",
    "image_listing_benchmark_data.json": "image listing",
}
FROM_SCRATCH = "pod + container from scratch"  # run, create, start, stop, remove
CGROUP_PARENTS = ("test.slice", "peapod")  # where critest's pods may land (see above)


def run_critest_bench(run: Comparison, samples: int) -> None:
    """Scenario 8 for every runtime: about ``samples`` lifecycles of each kind."""
    per_round = max(1, math.ceil(samples / ROUNDS))
    shared = run.runtimes[0].shared
    pull = push(shared.registry_host, "bench/critest-pull", "latest", build_image(
        [busybox_rootfs_layer(), marker_layer("/etc/critest-pull", "pull\n")]))
    made = [p for p in CGROUP_PARENTS if not any((r / p).exists() for r in cgroup_hierarchies())]
    with run.scenario(f"{S8}, {per_round * ROUNDS} samples"):
        try:
            for rt in run.rounds(ROUNDS):
                with tempfile.TemporaryDirectory(dir=shared.base) as tmp:
                    out = _critest(rt, Path(tmp), per_round, run.images.busybox, pull.ref)
                    _record(run, rt.name, out)
        finally:
            left = [d for p in made for d in remove_cgroup_tree(p)]
            if left:
                raise RuntimeError(f"critest's pod cgroups could not be removed: {left}")


def _critest(rt: RuntimeUnderTest, tmp: Path, n: int, image: str, pull: str) -> Path:
    """One ``critest -benchmark`` run against ``rt``; the directory with its results."""
    params = tmp / "params.yaml"  # YAML, written as JSON (a subset)
    params.write_text(json.dumps({
        "containersNumber": n, "containersNumberParallel": 1,
        "podsNumber": n, "podsNumberParallel": 1,
        "imagesNumber": n, "imagesNumberParallel": 1,
        "imagePullingBenchmarkImage": pull,
        "podContainerStartBenchmarkTimeoutSeconds": 60,
    }))
    images = tmp / "images.yaml"
    images.write_text(json.dumps({"defaultTestContainerImage": image}))
    config = tmp / "crictl.yaml"
    config.write_text("")
    out = tmp / "out"
    out.mkdir()
    socket = Path(rt.endpoint.removeprefix("unix://"))
    args = [str(critest_binary()), "-benchmark", *endpoint_args(socket, config),
            f"-benchmarking-params-file={params}", f"-benchmarking-output-dir={out}",
            f"-test-images-file={images}", f"-ginkgo.json-report={out / 'report.json'}"]
    got = subprocess.run(args, capture_output=True, text=True, timeout=1800,
                         env={**os.environ, "TMPDIR": str(tmp)})
    if got.returncode != 0:
        tail = "\n".join(got.stdout.splitlines()[-30:])
        raise RuntimeError(f"critest -benchmark against {rt.name} exited {got.returncode}:\n"
                           f"{tail}")
    return out


def _record(run: Comparison, runtime: str, out: Path) -> None:
    """Every duration critest wrote, in ms, as samples of this scenario's figures."""
    for name, label in FILES.items():
        data = json.loads((out / name).read_text())
        metrics = [run.metric(S8, f"{label}: {op}", "ms") for op in data["operationsNames"]]
        for point in data["datapoints"]:
            durations = point["operationsDurationsNs"]
            for metric, ns in zip(metrics, durations, strict=True):
                metric.add(runtime, ns / 1e6)
    scratch = run.metric(S8, FROM_SCRATCH, "ms")
    for spec in json.loads((out / "report.json").read_text())[0]["SpecReports"]:
        for entry in spec.get("ReportEntries") or []:
            experiment = json.loads(entry["Value"]["AsJSON"])
            for measurement in experiment.get("Measurements", []):
                scratch.add(runtime, *(ns / 1e6 for ns in measurement.get("Durations") or []))
    specs = parse_report(out / "report.json").specs
    if not any(s.state == "passed" and "from scratch" in s.name for s in specs):
        raise RuntimeError(f"{runtime}: critest's from-scratch benchmark did not pass")
