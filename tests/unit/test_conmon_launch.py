"""create_container's side of the protocol, against a scripted fake conmon.

The fake checks that the fd numbers in _OCI_SYNCPIPE/_OCI_STARTPIPE are open
sockets, waits for the start byte, and then misbehaves as FAKE_MODE says.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from base.cancel import CallContext
from base.errors import Cancelled, DeadlineExceeded, Internal
from conmon import procs
from conmon.launch import create_container
from conmon.paths import MonitorPaths

FAKE = """\
import os, stat, subprocess, sys, time
mode = os.environ["FAKE_MODE"]
sync, start = int(os.environ["_OCI_SYNCPIPE"]), int(os.environ["_OCI_STARTPIPE"])
for fd in (sync, start):
    if not stat.S_ISSOCK(os.fstat(fd).st_mode):
        sys.exit(f"fd {fd} is not a socket")
if os.read(start, 1) != b"\\0":
    sys.exit("no start byte")
argv = sys.argv
pidfile = argv[argv.index("-P") + 1]
if mode == "exit1":
    sys.exit("conmon: option parsing failed: bad flag")
if mode == "hang-first":
    open(pidfile + ".first", "w").write(str(os.getpid()))
    time.sleep(60)
# The "monitor": a separate long-lived process, like the daemonised conmon;
# in "hang" mode it holds the sync pipe open without ever writing to it.
os.set_inheritable(sync, True)
keep = (sync,) if mode == "hang" else ()
mon = subprocess.Popen(["sleep", "60"], start_new_session=True, pass_fds=keep)
open(pidfile, "w").write(str(mon.pid))
msg = {
    "ok": b'{"pid": 4242}\\n',
    "fail": b'{"pid": -1, "message": "level=error msg=\\\\"boom: no such file\\\\""}\\n',
    "silent": None,
    "hang": None,
}[mode]
if msg is not None:
    os.write(sync, msg)
"""


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    path = tmp_path / "fake-conmon"
    path.write_text(f"#!{sys.executable}\n{FAKE}")
    path.chmod(0o755)
    return path


def _paths(tmp_path: Path) -> MonitorPaths:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    d = str(tmp_path)
    return MonitorPaths.standard(
        str(bundle), exit_dir=d, persist_dir=d, socket_dir=d, log_path=f"{d}/log"
    )


def _create(fake: Path, tmp_path: Path, mode: str, **kw: object):  # type: ignore[no-untyped-def]
    env = {"FAKE_MODE": mode}
    kw.setdefault("timeout", 10.0)
    return create_container(str(fake), "/bin/true", str(tmp_path / "root"), "c1", "c1",
                            _paths(tmp_path), env=env, **kw)  # type: ignore[arg-type]  # fmt: skip


def _monitor(tmp_path: Path) -> int:
    return int((tmp_path / "bundle" / "conmon-pidfile").read_text())


def test_ok_reads_pid_and_monitor_and_fills_the_cgroup_file(fake: Path, tmp_path: Path) -> None:
    procs_file = tmp_path / "cgroup.procs"
    procs_file.write_text("")
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "pidfile").write_text("999999")  # stale, must be ignored
    created = _create(fake, tmp_path, "ok", cgroup_procs_path=str(procs_file))
    try:
        assert created.pid == 4242 and created.monitor_pid == _monitor(tmp_path)
        assert procs.is_alive(created.monitor_pid)
        assert int(procs_file.read_text()) > 0  # conmon's first pid was written there
        assert not (tmp_path / "bundle" / "pidfile").exists()
    finally:
        procs.kill_tree(created.monitor_pid)


def test_runtime_failure_carries_its_message_and_kills_the_monitor(
    fake: Path, tmp_path: Path
) -> None:
    with pytest.raises(Internal, match="failed to create container c1: boom: no such file"):
        _create(fake, tmp_path, "fail")
    assert procs.wait_gone([_monitor(tmp_path)], 5)


def test_conmon_error_exit_shows_its_stderr(fake: Path, tmp_path: Path) -> None:
    with pytest.raises(Internal, match="exit status 1: conmon: option parsing failed"):
        _create(fake, tmp_path, "exit1")


def test_silent_exit_is_an_error(fake: Path, tmp_path: Path) -> None:
    with pytest.raises(Internal, match="without reporting the pid"):
        _create(fake, tmp_path, "silent")
    assert procs.wait_gone([_monitor(tmp_path)], 5)


def test_no_report_in_time_kills_everything(fake: Path, tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="the pid of container c1"):
        _create(fake, tmp_path, "hang", timeout=1.0)
    assert time.monotonic() - t0 < 5
    assert procs.wait_gone([_monitor(tmp_path)], 5)


def test_unreachable_monitor_binary(tmp_path: Path) -> None:
    with pytest.raises(Internal, match="cannot run conmon"):
        _create(tmp_path / "missing", tmp_path, "ok")
    assert not os.listdir(tmp_path / "bundle")


@pytest.mark.parametrize("mode", ["hang", "hang-first"])
def test_a_cancelled_create_stops_waiting_at_once_and_kills_everything(
    fake: Path, tmp_path: Path, mode: str
) -> None:
    """Cancelled while conmon's monitor waits on the runtime, or its first process hangs."""
    ctx = CallContext.with_timeout(60, "creation of container c1")
    first = tmp_path / "bundle" / "conmon-pidfile.first"
    monitor = tmp_path / "bundle" / "conmon-pidfile"
    waiting = monitor if mode == "hang" else first

    def cancel_once_waiting() -> None:
        deadline = time.monotonic() + 10
        while not waiting.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        ctx.cancel()

    threading.Thread(target=cancel_once_waiting, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(Cancelled, match="creation of container c1"):
        _create(fake, tmp_path, mode, timeout=60.0, ctx=ctx)
    assert time.monotonic() - t0 < 2.0  # not the 60 s of the timeout, nor a 5 s grace
    pids = [int(f.read_text()) for f in (first, monitor) if f.exists()]
    assert pids and procs.wait_gone(pids, 2)
