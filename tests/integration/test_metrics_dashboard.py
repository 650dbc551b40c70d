"""A real daemon's /metrics, and the Grafana dashboard's queries against it.

The daemon (runc, a loopback-only CNI network) pulls busybox from the test registry
and fails to pull an image the registry lacks, runs a pod with its own network
namespace (CNI ADD and DEL through the loopback plugin) and a container, answers
ExecSyncs and an exec session over SPDY and one over WebSocket (crictl). Then its
/metrics is scraped: the new counters moved, and every metric name each query of
deploy/grafana/peapod.json reads is exported, which a misspelled name would fail.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from support.container_env import ContainerEnv, container_env
from support.daemon import metric_value
from support.images import StandardImages
from support.promql import exported_names, load_dashboard, missing_metrics, names_of
from support.registry import Registry

from api import api_pb2 as pb
from cri.metrics import IMAGE_SIZE_CLASSES, IMAGE_SIZE_LARGEST

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "peapod.json"
CLIENTS = Path(os.environ.get("PEAPOD_CLIENTS_DIR", REPO / ".cache" / "clients"))
CRICTL = CLIENTS / "crictl"


@pytest.fixture(scope="module")
def env(registry: Registry) -> Iterator[ContainerEnv]:
    if not CRICTL.exists():
        pytest.fail(f"no crictl at {CRICTL}: run deploy/build-clients.sh")
    with container_env(registry, "metrics", []) as e:
        (e.base / "crictl.yaml").write_text("")
        yield e


def own_netns_pod(env: ContainerEnv) -> str:
    """A pod with its own network namespace: RunPodSandbox runs CNI ADD (loopback)."""
    uid = secrets.token_hex(6)
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"p{uid}", uid=uid, namespace="metrics-ns"),
        log_directory=str(env.logs / uid),
    )
    cfg.linux.security_context.namespace_options.network = pb.POD
    return str(env.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
               .pod_sandbox_id)  # fmt: skip


def crictl_exec(env: ContainerEnv, transport: str, ctr: str) -> None:
    ep = f"unix://{env.peapod.socket}"
    run = subprocess.run(
        [str(CRICTL), "--runtime-endpoint", ep, "--image-endpoint", ep,
         "--config", str(env.base / "crictl.yaml"),
         "exec", "--transport", transport, ctr, "echo", "-n", transport],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout == transport.encode(), run.stderr.decode()


def wait_metric(env: ContainerEnv, name: str, labels: dict[str, str], want: float) -> str:
    """The scrape once sample ``name{labels}`` equals ``want`` (sessions end asynchronously)."""
    deadline = time.monotonic() + 10
    while True:
        text = env.peapod.metrics_text()
        if metric_value(text, name, labels) == want or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def labelled(text: str, name: str, label: str) -> dict[str, float]:
    """``{label value: sample}`` of every ``name`` sample."""
    found = {}
    for m in re.finditer(rf'^{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group("labels")))
        found[labels[label]] = float(m.group("value"))
    return found


@pytest.fixture(scope="module")
def scrape(env: ContainerEnv, test_images: StandardImages) -> str:
    """The daemon's /metrics after a little of everything."""
    env.pull(test_images.busybox.ref)
    with pytest.raises(grpc.RpcError):
        env.pull(f"{test_images.host}/no-such-image:latest")
    pod = own_netns_pod(env)
    ctr = env.run(pod, test_images.busybox.ref, ["sleep", "3600"])
    assert env.exec(ctr, ["true"]).exit_code == 0
    assert env.exec(ctr, ["sh", "-c", "exit 3"]).exit_code == 3
    crictl_exec(env, "spdy", ctr)
    crictl_exec(env, "websocket", ctr)
    url = env.rt.Exec(pb.ExecRequest(container_id=ctr, cmd=["true"], stdout=True),
                      timeout=10).url  # fmt: skip
    with pytest.raises(urllib.error.HTTPError):  # a URL with an unknown token is turned away
        urllib.request.urlopen(url.rsplit("/", 1)[0] + "/nosuchtoken", timeout=10)
    env.remove_all()  # CNI DEL too
    assert env.leftovers() == {}
    sessions = "peapod_streaming_sessions_active"
    wait_metric(env, sessions, {"kind": "exec", "protocol": "spdy"}, 0)
    return wait_metric(env, sessions, {"kind": "exec", "protocol": "websocket"}, 0)


def test_the_new_counters_moved(scrape: str) -> None:
    def v(name: str, **labels: str) -> float:
        return metric_value(scrape, name, labels)

    for protocol in ("spdy", "websocket"):
        assert v("peapod_streaming_sessions_total", kind="exec", protocol=protocol) == 1
        assert v("peapod_streaming_sessions_active", kind="exec", protocol=protocol) == 0
    assert v("peapod_streaming_refused_total", reason="token") == 1
    assert v("peapod_exec_sync_total", outcome="exit_zero") == 1
    assert v("peapod_exec_sync_total", outcome="exit_nonzero") == 1
    duration = "peapod_cni_plugin_duration_seconds_count"
    assert v(duration, plugin="loopback", operation="ADD") == 1  # the network (lo needs none)
    assert v(duration, plugin="loopback", operation="DEL") >= 1
    assert v("peapod_network_setup_seconds_count") == 1
    pulls = labelled(scrape, "peapod_image_pull_duration_seconds_count", "size")
    classes = {name for _, name in IMAGE_SIZE_CLASSES} | {IMAGE_SIZE_LARGEST}
    assert sum(pulls.values()) == 1 and set(pulls) <= classes
    assert v("peapod_image_pulls_layer_size_bytes_count") >= 1
    results = labelled(scrape, "peapod_image_pulls_total", "result")
    assert results.pop("success") == 1 and sum(results.values()) == 1, results
    assert v("peapod_pods", state="ready") == 0 and v("peapod_containers", state="running") == 0
    assert v("peapod_default_runtime", runtime="runc") == 1
    assert v("peapod_process_threads") > 5  # gRPC's pool, the streaming server, the probe...
    assert v("process_resident_memory_bytes") > 10 << 20
    assert v("process_open_fds") > 0 and v("python_gc_collections_total", generation="0") > 0


def test_every_dashboard_query_names_exported_metrics(scrape: str) -> None:
    dashboard = load_dashboard(DASHBOARD)
    exported = exported_names(scrape)
    assert missing_metrics(dashboard, exported) == {}


def test_a_misspelled_metric_in_the_dashboard_would_fail(scrape: str) -> None:
    dashboard: dict[str, Any] = copy.deepcopy(load_dashboard(DASHBOARD))
    target = next(t for p in dashboard["panels"] for t in p.get("targets", [])
                  if "peapod_operations_total" in names_of(t["expr"]))  # fmt: skip
    target["expr"] = target["expr"].replace("peapod_operations_total", "peapod_operation_total")
    missing = missing_metrics(dashboard, exported_names(scrape))
    assert list(missing.values()) == [{"peapod_operation_total"}]


def test_the_readme_lists_every_peapod_metric(scrape: str) -> None:
    readme = (REPO / "README.md").read_text()
    typed = set(re.findall(r"^# TYPE (peapod_\w+) ", scrape, re.M))

    def created_series(name: str) -> bool:  # prometheus_client's <family>_created
        base = name.removesuffix("_created")
        return base != name and (base in typed or f"{base}_total" in typed)

    families = {f for f in typed if not created_series(f)}
    assert families
    undocumented = sorted(f for f in families if f"`{f}`" not in readme)
    assert undocumented == []
