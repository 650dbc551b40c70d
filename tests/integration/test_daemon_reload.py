"""SIGHUP against the real daemon: what it reloads, for whom, and a refused reload.

Each test has its own daemon (a PodEnv without a pod network: host-network pods) and
config drop-in directory; busybox comes from the session's test registry.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from support.daemon import REPO, registries_conf_text
from support.images import PushedImage, push_busybox
from support.pods import PodEnv
from support.registry import Registry

from api import api_pb2 as pb
from cri import status_file
from sandbox import procs

RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin") or "/usr/sbin/runc"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")


@pytest.fixture(scope="module")
def busybox(registry: Registry) -> PushedImage:
    return push_busybox(registry.host, repo="reload-busybox")


@pytest.fixture
def env(registry: Registry, busybox: PushedImage) -> Iterator[PodEnv]:
    e = PodEnv(network=False)
    try:
        e.peapod.registries_conf.write_text(registries_conf_text([registry.host]))
        runc = {"runtime": {"runtimes": {"runc": {"runtime_path": RUNC}}}}
        write_dropin(e, "10-runtimes.yaml", runc)
        e.peapod.start()
        e.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=busybox.ref)),
                                  timeout=60)  # fmt: skip
        yield e
    finally:
        e.sweep()


def write_dropin(env: PodEnv, name: str, doc: dict[str, Any] | str) -> None:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    (env.peapod.config_dir / name).write_text(text)


def handlers(env: PodEnv) -> list[str]:
    resp = env.rt.Status(pb.StatusRequest(), timeout=10)
    return [h.name for h in resp.runtime_handlers]


def sighup_and_wait(env: PodEnv) -> dict[str, Any]:
    """Send SIGHUP and return the reload the daemon then reports in status.json."""
    path = status_file.path_for(env.peapod.root)
    before = len((status_file.read(path) or {}).get("reloads", []))
    assert env.peapod.proc is not None
    env.peapod.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reloads = (status_file.read(path) or {}).get("reloads", [])
        if len(reloads) > before:
            return dict(reloads[-1])
        time.sleep(0.05)
    raise AssertionError(f"no reload reported:\n{env.peapod.log_tail()}")


def container(env: PodEnv, pod: str, image: str, name: str) -> str:
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name), command=["sleep", "1000"],
                             image=pb.ImageSpec(image=image))  # fmt: skip
    cfg.linux.security_context.seccomp.profile_type = pb.SecurityProfile.RuntimeDefault
    req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg,
                                    sandbox_config=pb.PodSandboxConfig())  # fmt: skip
    ctr = str(env.rt.CreateContainer(req, timeout=60).container_id)
    env.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)
    return ctr


def info(env: PodEnv, ctr: str) -> tuple[int, dict[str, Any]]:
    resp = env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True),
                                  timeout=10)  # fmt: skip
    return resp.status.state, json.loads(resp.info["info"])


def exec_sync(env: PodEnv, ctr: str, *cmd: str) -> pb.ExecSyncResponse:
    return env.rt.ExecSync(pb.ExecSyncRequest(container_id=ctr, cmd=list(cmd), timeout=20),
                           timeout=60)  # fmt: skip


def runc_ids(root: Path) -> list[str]:
    out = subprocess.run([RUNC, f"--root={root}", "list", "-q"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return out.split()


def status_cli(env: PodEnv) -> dict[str, Any]:
    p = env.peapod
    out = subprocess.run(
        [sys.executable, "-m", "cri.main", "status", "--json", "--config", str(p.config_file),
         "--config-dir", str(p.config_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_sighup_reloads_log_level_handlers_and_seccomp_for_new_containers_only(
    env: PodEnv, busybox: PushedImage
) -> None:
    old_pod = env.run(env.config(host_network=True))
    old = container(env, old_pod, busybox.ref, "old")
    _, old_info = info(env, old)
    old_start = procs.start_time(old_info["pid"])
    assert handlers(env) == ["", "runc"]
    with pytest.raises(grpc.RpcError) as err:
        env.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=env.config(host_network=True),
                                                     runtime_handler="runc-b"), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "level=debug" in env.peapod.log_path.read_text()

    profile = env.peapod.base / "no-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    runc_b_root = env.peapod.base / "runc-b"
    write_dropin(env, "50-reload.yaml", {
        "log_level": "info",
        "runtime": {"runtimes": {"runc-b": {"runtime_path": RUNC,
                                            "runtime_root": str(runc_b_root)}},
                    "seccomp_profile": str(profile)},
    })  # fmt: skip
    log_offset = env.peapod.log_path.stat().st_size
    event = sighup_and_wait(env)
    assert event["ok"] and event["error"] == "", event
    assert set(event["applied"]) == {"log_level", "runtime.runtimes.runc-b",
                                     "runtime.seccomp_profile"}  # fmt: skip
    assert event["needs_restart"] == []

    assert handlers(env) == ["", "runc", "runc-b"]
    new_pod = env.run(env.config(host_network=True))
    req = pb.RunPodSandboxRequest(config=env.config(host_network=True), runtime_handler="runc-b")
    new_pod_b = env.rt.RunPodSandbox(req, timeout=60).pod_sandbox_id
    new = container(env, new_pod_b, busybox.ref, "new")
    assert new in runc_ids(runc_b_root)
    assert old in runc_ids(env.peapod.runroot / "runtimes" / "runc")
    # The new default profile refuses mkdir in new containers only.
    refused = exec_sync(env, new, "mkdir", "/tmp/new")
    assert refused.exit_code != 0 and b"Operation not permitted" in refused.stderr
    also_new = container(env, new_pod, busybox.ref, "also-new")
    assert exec_sync(env, also_new, "mkdir", "/tmp/x").exit_code != 0
    assert exec_sync(env, old, "mkdir", "/tmp/old").exit_code == 0
    # The running container is untouched: same process, still running.
    state, now_info = info(env, old)
    assert state == pb.CONTAINER_RUNNING
    assert now_info["pid"] == old_info["pid"] and now_info["monitorPid"] == old_info["monitorPid"]
    assert procs.start_time(old_info["pid"]) == old_start

    with env.peapod.log_path.open() as f:
        f.seek(log_offset)
        after = f.read()
    assert "configuration reloaded" in after
    assert "level=debug" not in after, "debug lines after the reload to info"

    report = status_cli(env)
    assert report["log_level"] == "info"
    assert report["seccomp_profile"] == str(profile)
    assert [h["name"] for h in report["runtime_handlers"]] == ["runc", "runc-b"]
    assert report["reloads"][-1]["applied"] == event["applied"]


def test_a_bad_config_on_sighup_is_refused_and_the_running_one_kept(
    env: PodEnv, busybox: PushedImage
) -> None:
    pod = env.run(env.config(host_network=True))
    ctr = container(env, pod, busybox.ref, "c")
    bad = env.peapod.config_dir / "60-bad.yaml"
    write_dropin(env, bad.name, {"log_level": "warning", "runtime": {"runtimes": {
        "runc-c": {"runtime_path": RUNC}}, "default_runtime": "nonexistent"}})  # fmt: skip
    log_offset = env.peapod.log_path.stat().st_size
    event = sighup_and_wait(env)
    assert not event["ok"]
    assert str(bad) in event["error"] and "default_runtime" in event["error"]
    assert handlers(env) == ["", "runc"]
    with env.peapod.log_path.open() as f:
        f.seek(log_offset)
        after = f.read()
    assert "level=error" in after and "reload refused" in after and str(bad) in after
    assert "level=debug" in after, "the log level changed although the reload was refused"
    report = status_cli(env)  # finds the daemon although the files no longer load
    assert report["daemon"]["state"] == "serving" and str(bad) in report["config_error"]
    assert report["reloads"][-1]["error"] == event["error"]

    missing = env.peapod.base / "missing-profile.json"
    write_dropin(env, bad.name, {"runtime": {"seccomp_profile": str(missing)}})
    event = sighup_and_wait(env)
    assert not event["ok"] and str(missing) in event["error"]

    report = status_cli(env)
    assert [r["ok"] for r in report["reloads"]] == [False, False]
    assert report["seccomp_profile"] == "built-in"
    state, _ = info(env, ctr)
    assert state == pb.CONTAINER_RUNNING
    # A restart-only key is reported, not applied.
    write_dropin(env, bad.name, {"grpc_workers": 7})
    event = sighup_and_wait(env)
    assert event["ok"] and event["needs_restart"] == ["grpc_workers"] and event["applied"] == []
