"""The daemon over its real socket: runtime info, unimplemented rpcs, socket handling, metrics."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.daemon import REPO, Peapod, metric_value

from api import api_pb2 as pb


@pytest.fixture
def peapod() -> Iterator[Peapod]:
    daemon = Peapod()
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


def test_version(peapod: Peapod) -> None:
    resp = peapod.runtime.Version(pb.VersionRequest(version="v1"))
    assert resp.runtime_name == "peapod"
    assert resp.runtime_api_version == "v1"
    assert resp.runtime_version


def test_status_reports_runtime_ready_and_network_not_ready(peapod: Peapod) -> None:
    resp = peapod.runtime.Status(pb.StatusRequest(verbose=True))
    conditions = {c.type: c for c in resp.status.conditions}
    assert conditions["RuntimeReady"].status is True
    assert conditions["NetworkReady"].status is False
    assert conditions["NetworkReady"].reason
    assert conditions["NetworkReady"].message
    assert str(peapod.root) in resp.info["config"]


def test_runtime_config_reports_cgroupfs(peapod: Peapod) -> None:
    resp = peapod.runtime.RuntimeConfig(pb.RuntimeConfigRequest())
    assert resp.linux.cgroup_driver == pb.CGROUPFS


def test_update_runtime_config_records_pod_cidr(peapod: Peapod) -> None:
    peapod.runtime.UpdateRuntimeConfig(
        pb.UpdateRuntimeConfigRequest(
            runtime_config=pb.RuntimeConfig(
                network_config=pb.NetworkConfig(pod_cidr="10.244.1.0/24")
            )
        )
    )
    info = peapod.runtime.Status(pb.StatusRequest(verbose=True)).info
    assert "10.244.1.0/24" in info["podCIDR"]


def test_unbuilt_rpcs_answer_unimplemented_with_a_message(peapod: Peapod) -> None:
    with pytest.raises(grpc.RpcError) as err:
        peapod.runtime.CheckpointPod(pb.CheckpointPodRequest(pod_sandbox_id="x"))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointPod" in err.value.details()
    assert "not implemented by peapod" in err.value.details()
    # (server-streaming stubs: tests/unit/test_servicers.py)
    # the daemon is still healthy afterwards
    assert peapod.runtime.Version(pb.VersionRequest()).runtime_name == "peapod"


def test_socket_mode_and_removal_on_sigterm(tmp_path: Path) -> None:
    daemon = Peapod()
    try:
        daemon.start()
        mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
        assert stat.S_ISSOCK(os.stat(daemon.socket).st_mode)
        assert mode == 0o660
        assert daemon.stop(signal.SIGTERM) == 0
        assert not daemon.socket.exists()
        assert "peapod stopped" in daemon.log_path.read_text()
    finally:
        daemon.cleanup()


def test_stale_socket_is_replaced_and_live_one_refused() -> None:
    first = Peapod()
    second = Peapod()
    try:
        # A stale socket file, as a crash leaves it: bound, never listened on, closed.
        first.runroot.mkdir(parents=True)
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(first.socket))
        stale.close()
        assert first.socket.exists()
        first.start()
        assert first.runtime.Version(pb.VersionRequest()).runtime_name == "peapod"
        # A second daemon (own root) pointed at the live socket must refuse to start.
        proc = subprocess.run(
            second.command("--listen", str(first.socket)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode != 0
        assert "another process is serving on" in proc.stderr
        assert first.runtime.Version(pb.VersionRequest()).runtime_name == "peapod"
    finally:
        first.cleanup()
        second.cleanup()


def test_second_daemon_on_same_root_is_refused(peapod: Peapod, tmp_path: Path) -> None:
    proc = subprocess.run(
        peapod.command("--listen", str(tmp_path / "other.sock")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "another peapod is running with root" in proc.stderr


def test_two_daemons_side_by_side() -> None:
    a, b = Peapod(), Peapod()
    try:
        a.start()
        b.start()
        assert a.runtime.Version(pb.VersionRequest()).runtime_name == "peapod"
        assert b.runtime.Version(pb.VersionRequest()).runtime_name == "peapod"
        assert a.socket != b.socket and a.metrics_port != b.metrics_port
    finally:
        a.cleanup()
        b.cleanup()


def test_flags_override_the_config_file() -> None:
    daemon = Peapod()
    try:
        other = daemon.base / "flag.sock"
        daemon.socket = other
        daemon.start("--listen", str(other), "--log-level", "info")
        assert other.exists()
        assert daemon.runtime.Version(pb.VersionRequest()).runtime_name == "peapod"
    finally:
        daemon.cleanup()


def test_bad_config_fails_at_start_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("metrics:\n  adress: 127.0.0.1:1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cri.main",
            "run",
            "--config",
            str(cfg),
            "--config-dir",
            str(tmp_path / "none"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert str(cfg) in proc.stderr and "metrics.adress" in proc.stderr


def test_metrics_count_calls_errors_and_latency(peapod: Peapod) -> None:
    for _ in range(3):
        peapod.runtime.Version(pb.VersionRequest())
    with pytest.raises(grpc.RpcError):
        peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="")))
    text = peapod.metrics_text()
    assert metric_value(text, "peapod_operations_total", {"operation": "Version"}) >= 3
    assert (
        metric_value(
            text,
            "peapod_operations_errors_total",
            {"operation": "PullImage", "code": "INVALID_ARGUMENT"},
        )
        == 1
    )
    assert (
        metric_value(text, "peapod_operations_latency_seconds_count", {"operation": "Version"}) >= 3
    )


def test_cli_version_and_config() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cri.main", "version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("peapod ")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cri.main",
            "config",
            "--config",
            "/nonexistent-default.yaml",
            "--root",
            "/tmp/flag-root",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2  # an explicit --config that does not exist is an error
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cri.main",
            "config",
            "--root",
            "/tmp/flag-root",
            "--config-dir",
            "/nonexistent.d",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "root: /tmp/flag-root" in out


def test_metrics_port_in_use_fails_at_start_with_a_message() -> None:
    """A taken metrics port is an operator error: say which address and key, no traceback."""
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    daemon = Peapod(config={"metrics": {"address": f"127.0.0.1:{port}"}})
    try:
        proc = subprocess.run(
            daemon.command(), cwd=REPO, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert f"127.0.0.1:{port}" in proc.stderr and "metrics.address" in proc.stderr
        assert not daemon.socket.exists(), "the CRI socket was left behind"
    finally:
        busy.close()
        daemon.cleanup()
