"""critest, cri-tools' CRI validation suite, run whole against a peapod the test starts.

The daemon has its own root, runroot, socket, CNI network and registries.conf; the
registries.conf mirrors registry.k8s.io, k8s.gcr.io and gcr.io to a loopback registry
holding stand-ins for critest's images (tests/support/critest_images.py). Every spec
must pass, fail on the expected-failure list, or be skipped for a recorded reason
(tests/expected-failures.yaml); see tests/support/critest.py for the rules. The
Streaming specs run a second time over WebSocket (critest's default is SPDY). The NRI
specs connect to the daemon's NRI socket as plugins (``-nri-socket``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import critest
from support.critest_images import HOSTNET_NGINX_PORT, push_critest_images
from support.pods import HostState, PodEnv
from support.registry import Registry

pytestmark = pytest.mark.integration

# Host ports critest's specs bind (port mapping, port-forward, the host-network nginx).
HOST_PORTS = (12000, 12001, 12002, HOSTNET_NGINX_PORT)
TIMEOUT = 900.0  # the whole run takes about 2 minutes on the 2-core VM
SEGMENT_BYTES = 1048576  # critest's HostIpc specs make segments with `ipcmk -M 1048576`


def shm_segments() -> dict[str, int]:
    """System V shared memory segments: id -> size in bytes."""
    out = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    return {r[1]: int(r[4]) for r in rows if len(r) >= 6 and r[0].startswith("0x")}


def port_in_use(port: int) -> bool:
    """Whether something listens on ``port`` on the host."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path``."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(path) or point.startswith(f"{path}/"):
            found.append(point)
    return found


@contextlib.contextmanager
def host_given_back(scratch: Path) -> Iterator[list[str]]:
    """Yield a list of leftovers; on exit remove critest's shm segments and mounts."""
    state = HostState()
    segments = shm_segments()
    left: list[str] = []
    try:
        yield left
    finally:
        for shmid, size in shm_segments().items():
            if shmid not in segments and size == SEGMENT_BYTES:
                subprocess.run(["ipcrm", "-m", shmid], check=False)
        for point in sorted(mounts_under(scratch), key=len, reverse=True):
            left.append(f"mount {point}")
            subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
        state.restore()


def test_critest_passes_but_for_the_expected_failures(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole suite; streaming over SPDY, critest's default transport."""
    run_and_judge(registry, tmp_path, capsys, [])


def test_critest_streaming_over_websocket(
    registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Streaming specs again, with critest's WebSocket exec, attach and port-forward."""
    run_and_judge(registry, tmp_path, capsys,
                  ["-websocket-exec", "-websocket-attach", "-websocket-portforward",
                   "-ginkgo.focus=\\[k8s.io\\] Streaming"], scope="[k8s.io] Streaming")


def run_and_judge(registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                  extra: list[str], scope: str = "") -> None:
    """critest against a fresh peapod; fail on every problem the verdict names."""
    binary = critest.critest_binary()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing; deploy/build-clients.sh builds it (setup.sh test)")
    if shutil.which("ipcmk") is None:
        pytest.fail("critest's HostIpc specs run ipcmk on the host (util-linux)")
    busy = [p for p in HOST_PORTS if port_in_use(p)]
    assert not busy, f"critest needs host ports {HOST_PORTS} free; in use: {busy}"
    expected, skips = critest.load_expected()
    images = push_critest_images(registry.host)

    scratch = tmp_path / "critest-tmp"  # critest's TMPDIR: log dirs, host paths, mounts
    scratch.mkdir()
    config = tmp_path / "crictl.yaml"
    config.write_text("")
    report_path = tmp_path / "report.json"
    log = tmp_path / "critest.log"
    with host_given_back(scratch) as left:
        env = PodEnv()
        try:
            env.peapod.registries_conf.write_text(images.registries_conf())
            env.peapod.start()
            # critest's NRI specs act as plugins on the daemon's NRI socket.
            args = [*critest.endpoint_args(env.peapod.socket, config), *extra,
                    f"-nri-socket={env.peapod.runroot / 'nri.sock'}",
                    f"-ginkgo.json-report={report_path}", f"-ginkgo.timeout={int(TIMEOUT)}s"]
            started = time.monotonic()
            code = critest.run(args, log, TIMEOUT + 60, {"TMPDIR": str(scratch)})
            took = time.monotonic() - started
        finally:
            env.sweep()
    assert report_path.is_file(), f"critest wrote no report (exit {code}):\n{_tail(log)}"
    report = critest.parse_report(report_path)
    verdict = critest.judge(report.specs, expected, skips, scope)
    if not verdict.passed and not verdict.expected:
        verdict.problems.append("critest ran no spec")
    if code != 0 and not verdict.expected and not verdict.problems:
        verdict.problems.append(f"critest exited {code} although no spec failed")
    summary = f"{verdict.summary()}\n  critest ran {took:.0f} s, seed {report.seed}"
    with capsys.disabled():
        print(f"\n{summary}")
    assert not left, f"critest left behind: {left}"
    assert not verdict.problems, (
        "\n".join(verdict.problems) + f"\n\n{summary}\n\ncritest output (tail):\n{_tail(log)}"
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"
