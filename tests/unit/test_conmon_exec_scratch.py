"""Start-up clean-up of ExecSync scratch directories, on real (short-lived) host processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conmon import exec_scratch, procs

SLEEPER = "import time, sys; time.sleep(100)"


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def spawn(started: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", SLEEPER, *args])
    started.append(p)
    return p


def exited(p: subprocess.Popen[bytes]) -> bool:
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_kills_the_monitor_and_the_pidfile_process_and_removes_the_dir(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    scratch = Path(exec_scratch.make(str(tmp_path)))
    exec_scratch.mark_started(str(scratch), procs.boot_ticks_now() - 1)
    monitor = spawn(spawned, "-p", str(scratch / "pid"))  # named in argv, like conmon
    command = spawn(spawned)  # an orphan named only by the pidfile
    (scratch / "pid").write_text(str(command.pid))
    (tmp_path / "unrelated").mkdir()
    assert exec_scratch.clean_leftovers(str(tmp_path)) == 1
    assert exited(monitor) and exited(command)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unrelated"]


def test_a_pidfile_pid_started_outside_the_exec_is_left_alone(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    older = spawn(spawned)
    time.sleep(0.05)
    first = Path(exec_scratch.make(str(tmp_path)))
    exec_scratch.mark_started(str(first), procs.boot_ticks_now())
    (first / "pid").write_text(str(older.pid))  # reused: started before the exec
    second = Path(exec_scratch.make(str(tmp_path)))
    exec_scratch.mark_started(str(second), procs.boot_ticks_now() - 10_000)
    newer = spawn(spawned)
    (second / "pid").write_text(str(newer.pid))
    written = time.time() - 30
    os.utime(second / "pid", (written, written))  # reused: started well after the pidfile
    assert exec_scratch.clean_leftovers(str(tmp_path)) == 2
    assert older.poll() is None and newer.poll() is None
    assert list(tmp_path.iterdir()) == []


def test_a_dir_without_start_mark_is_just_removed(tmp_path: Path) -> None:
    scratch = Path(exec_scratch.make(str(tmp_path)))
    (scratch / "process.json").write_text("{}")
    (scratch / "pid").write_text(str(os.getpid()))
    assert exec_scratch.clean_leftovers(str(tmp_path)) == 1
    assert list(tmp_path.iterdir()) == []
    assert exec_scratch.clean_leftovers(str(tmp_path / "missing")) == 0
