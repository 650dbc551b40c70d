"""The deploy/ snippets parse and say what the README claims."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "peapod.service").read_text())
    service = unit["Service"]
    assert service["ExecStart"] == "@PEAPOD@ run"
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillMode"] == "process"  # never takes containers down with the daemon
    assert unit["Unit"]["Before"] == "kubelet.service"


def test_peapod_unit_names_the_installed_command(tmp_path: Path) -> None:
    from cri import unit

    command = Path(sys.executable).with_name("peapod")
    text = unit.render()
    assert f"\nExecStart={command} run\n" in text and "@PEAPOD@" not in text
    assert unit.TEMPLATE.read_text() == (DEPLOY / "peapod.service").read_text()
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    path = tmp_path / "peapod.service"
    path.write_text(text)
    out = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_kubelet_snippet_points_at_the_default_socket() -> None:
    cfg = yaml.safe_load((DEPLOY / "kubelet-config.yaml").read_text())
    crictl = yaml.safe_load((DEPLOY / "crictl.yaml").read_text())
    assert cfg["containerRuntimeEndpoint"] == "unix:///run/peapod/peapod.sock"
    assert cfg["imageServiceEndpoint"] == cfg["containerRuntimeEndpoint"]
    assert crictl["runtime-endpoint"] == cfg["containerRuntimeEndpoint"]
    assert cfg["cgroupDriver"] == "cgroupfs"


def test_prometheus_snippet_targets_the_default_metrics_address() -> None:
    from cri.config import Config

    cfg = yaml.safe_load((DEPLOY / "prometheus-scrape.yaml").read_text())
    targets = cfg["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [Config().metrics.address]


def test_default_conflist_is_valid() -> None:
    from cni.netconf import parse_network

    data = (DEPLOY / "cni" / "10-peapod.conflist").read_bytes()
    net = parse_network(data, source="10-peapod.conflist")
    assert net.name == "peapod"
    assert [p["type"] for p in net.plugins] == ["bridge", "portmap"]
    # CRI-O's example bridge network's range, not podman's default 10.88.0.0/16.
    assert net.plugins[0]["ipam"]["ranges"] == [[{"subnet": "10.85.0.0/16"}]]
