"""``peapod status`` against a real daemon with pods and containers, then with it down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from support.daemon import REPO, registries_conf_text
from support.images import PushedImage, push_busybox
from support.pods import PodEnv
from support.registry import Registry

from api import api_pb2 as pb

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")


@pytest.fixture
def env(registry: Registry) -> Iterator[tuple[PodEnv, PushedImage]]:
    busybox = push_busybox(registry.host, repo="status-busybox")
    e = PodEnv(network=False)
    try:
        e.peapod.registries_conf.write_text(registries_conf_text([registry.host]))
        (e.peapod.config_dir / "20-workers.yaml").write_text("grpc_workers: 20\n")
        e.peapod.start()
        e.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=busybox.ref)),
                                  timeout=60)  # fmt: skip
        yield e, busybox
    finally:
        if e.peapod.proc is None:
            e.peapod.start()  # so the pods go through RemovePodSandbox
        e.sweep()


def status(env: PodEnv, *flags: str) -> tuple[int, str]:
    p = env.peapod
    out = subprocess.run(
        [sys.executable, "-m", "cri.main", "status", *flags, "--config", str(p.config_file),
         "--config-dir", str(p.config_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert out.stderr == ""
    return out.returncode, out.stdout


def report(env: PodEnv) -> tuple[int, dict[str, Any]]:
    code, text = status(env, "--json")
    return code, dict(json.loads(text))


def create(env: PodEnv, pod: str, image: str, name: str) -> str:
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), command=["sleep", "1000"],
                             image=pb.ImageSpec(image=image))  # fmt: skip
    req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg)
    return str(env.rt.CreateContainer(req, timeout=60).container_id)


def test_status_of_a_serving_daemon_then_of_a_stopped_and_a_killed_one(
    env: tuple[PodEnv, PushedImage],
) -> None:
    e, busybox = env
    ready = e.run(e.config(host_network=True))
    running = create(e, ready, busybox.ref, "running")
    e.rt.StartContainer(pb.StartContainerRequest(container_id=running), timeout=30)
    create(e, ready, busybox.ref, "created")
    stopped = e.run(e.config(host_network=True))
    e.stop(stopped)

    code, rep = report(e)
    assert code == 0
    daemon = rep["daemon"]
    assert daemon["state"] == "serving" and e.peapod.proc is not None
    assert daemon["pid"] == e.peapod.proc.pid and daemon["socket"] == str(e.peapod.socket)
    assert daemon["version"] == rep["peapod"]
    assert rep["config_sources"] == [str(e.peapod.config_file),
                                     str(e.peapod.config_dir / "20-workers.yaml")]  # fmt: skip
    assert rep["log_level"] == "debug" and rep["seccomp_profile"] == "built-in"
    served = e.rt.Status(pb.StatusRequest(), timeout=10).runtime_handlers
    assert [(h["name"], h["features"]["recursive_read_only_mounts"])
            for h in rep["runtime_handlers"]] == [
        (h.name, h.features.recursive_read_only_mounts) for h in served if h.name]
    assert rep["runtime_handlers"][0]["default"] is True
    net = rep["network"]
    assert net["ready"] is False and net["reason"] == "NetworkPluginNotReady"
    assert str(e.conf_dir) in net["message"]
    assert rep["pods"] == {"ready": 1, "notready": 1}
    assert rep["containers"] == {"running": 1, "created": 1}
    assert rep["images"] == 1
    db = rep["database"]
    assert db["path"] == str(e.peapod.root / "peapod.db") and db["error"] == ""
    assert db["bytes"] == sum(db["files"].values()) > 0 and "peapod.db-wal" in db["files"]
    assert rep["reloads"] == []

    (e.conf_dir / "10-lo.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "lo-only", "plugins": [{"type": "loopback"}]}))
    code, text = status(e)
    assert code == 0
    lines = text.splitlines()
    assert lines[0].startswith(f"daemon:      peapod {rep['peapod']} serving on {e.peapod.socket}")
    assert "network:     ready: network 'lo-only'" in text
    assert "pods:        2 (notready 1, ready 1)" in lines
    assert "containers:  2 (created 1, running 1)" in lines

    # Down after a clean stop: the state database still answers, and nothing is left
    # beside it by the reader.
    assert e.peapod.stop(signal.SIGTERM) == 0
    code, rep = report(e)
    assert code == 3
    assert rep["daemon"]["state"] == "not running"
    assert rep["daemon"]["detail"].startswith("stopped at ")
    assert rep["pods"] == {"ready": 1, "notready": 1}
    assert rep["containers"] == {"running": 1, "created": 1}
    assert [h["name"] for h in rep["runtime_handlers"]] == ["runc", "crun"]
    assert sorted(p.name for p in e.peapod.root.glob("peapod.db*")) == ["peapod.db"]

    e.peapod.start()
    assert report(e)[0] == 0
    e.peapod.stop(signal.SIGKILL)
    code, text = status(e)
    assert code == 3
    assert "not running: pid" in text and "without stopping cleanly" in text
