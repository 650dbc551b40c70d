"""peapod installed from its wheel: the command, its package data, and a daemon that serves.

The wheel is built from a copy of the sources (the checkout gets no build/ or
egg-info), with the project venv's setuptools (no download). It goes into a fresh
venv in a temp dir; that venv borrows the dependencies (grpcio, protobuf ...) from
the project venv through a .pth line, which adds the directory but not its
.pth files, so the checkout's editable install stays out of sight.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from support.daemon import REPO

from api import api_pb2 as pb
from api import api_pb2_grpc

PACKAGE_DIRS = ("api", "base", "cri", "nri", "sandbox", "conmon", "cni", "oci")


class Installed:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.venv = base / "venv"
        self.bin = self.venv / "bin"
        self.wheel = Path()

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return subprocess.run([str(a) for a in args], cwd=self.base, env=env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def python(self, code: str) -> str:
        out = self.run(self.bin / "python", "-c", code)
        assert out.returncode == 0, out.stderr
        return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    inst = Installed(tmp_path_factory.mktemp("wheel"))
    src = inst.base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for pkg in PACKAGE_DIRS:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    pip = Path(sys.executable).with_name("pip")
    dist = inst.base / "dist"
    out = inst.run(pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src,
                   timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    (inst.wheel,) = dist.glob("peapod-*.whl")
    out = inst.run(sys.executable, "-m", "venv", "--without-pip", inst.venv)
    assert out.returncode == 0, out.stderr
    out = inst.run(pip, "--python", inst.bin / "python", "install", "-q", "--no-deps",
                   "--no-index", inst.wheel, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    site = Path(inst.python("import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    (site / "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    yield inst


def test_the_wheel_holds_every_package_and_its_data(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    packages = {str(p.parent.relative_to(REPO)) for pkg in PACKAGE_DIRS
                for p in (REPO / pkg).rglob("__init__.py")}  # fmt: skip
    assert packages <= {str(Path(n).parent) for n in names}
    for data in ("api/api.proto", "oci/spec/seccomp_default.json", "cri/peapod.service"):
        assert data in names


def test_installed_command_version_config_and_unit(installed: Installed) -> None:
    peapod = installed.bin / "peapod"
    out = installed.run(peapod, "version")
    assert out.returncode == 0 and out.stdout.startswith("peapod 0.1.0"), out.stderr
    out = installed.run(peapod, "config", "--defaults")
    assert out.returncode == 0, out.stderr
    assert out.stdout == (REPO / "deploy" / "peapod.yaml").read_text()
    out = installed.run(peapod, "unit")
    assert out.returncode == 0, out.stderr
    assert f"ExecStart={peapod} run\n" in out.stdout and "Type=notify\n" in out.stdout


def test_packaged_data_loads_from_site_packages(installed: Installed) -> None:
    found = json.loads(installed.python(
        "import json, api, cri, oci.spec.seccomp as s; from pathlib import Path\n"
        "profile = s.read_profile(s.PACKAGED_DEFAULT)\n"
        "proto = Path(api.__file__).with_name('api.proto')\n"
        "print(json.dumps({'cri': cri.__file__, 'seccomp': s.PACKAGED_DEFAULT,\n"
        "  'rules': len(profile['syscalls']), 'proto': str(proto),\n"
        "  'runtime_service': 'service RuntimeService' in proto.read_text()}))"
    ))
    site = str(installed.venv)
    assert found["cri"].startswith(site) and found["seccomp"].startswith(site)
    assert found["proto"].startswith(site) and found["runtime_service"]
    assert found["rules"] > 0


def test_the_installed_daemon_serves_version(installed: Installed) -> None:
    base = installed.base / "daemon"
    sock = base / "run" / "peapod.sock"
    config = base / "peapod.yaml"
    base.mkdir()
    config.write_text(yaml.safe_dump({
        "listen": str(sock), "root": str(base / "root"), "runroot": str(base / "run"),
        "metrics": {"address": ""}, "network": {"network_dir": str(base / "net.d")},
        "image": {"registries_conf": str(base / "registries.conf"),
                  "registries_conf_dir": str(base / "registries.conf.d")},
        "nri": {"socket_path": str(base / "run" / "nri.sock"), "plugin_dirs": []},
    }))  # fmt: skip
    log = (base / "peapod.log").open("wb")
    proc = subprocess.Popen(
        [installed.bin / "peapod", "run", "--config", config, "--config-dir", base / "none.d"],
        cwd=installed.base, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )
    log.close()
    channel = grpc.insecure_channel(f"unix:{sock}")
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (base / "peapod.log").read_text()
            try:
                got = api_pb2_grpc.RuntimeServiceStub(channel).Version(pb.VersionRequest(),
                                                                       timeout=1)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, (base / "peapod.log").read_text()
                time.sleep(0.1)
        assert got.runtime_name == "peapod" and got.runtime_version == "0.1.0"
    finally:
        channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not sock.exists()
