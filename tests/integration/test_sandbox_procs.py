"""Process identification by pid + start time, and the pid-reuse guard."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from sandbox import procs


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "300"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def test_start_time_children_and_comm(sleeper: subprocess.Popen[bytes]) -> None:
    assert procs.start_time(sleeper.pid) is not None
    assert procs.start_time(os.getpid()) is not None
    assert sleeper.pid in procs.children(os.getpid())
    assert procs.wait_until(lambda: procs.comm(sleeper.pid) == "sleep", 5)
    assert procs.state(sleeper.pid) in ("S", "R")


def test_kill_and_wait_spares_a_different_process(sleeper: subprocess.Popen[bytes]) -> None:
    started = procs.start_time(sleeper.pid)
    assert started is not None
    # A record with another start time describes a process that is gone.
    assert procs.kill_and_wait(sleeper.pid, started + 1, 1.0)
    assert sleeper.poll() is None
    assert procs.kill_and_wait(sleeper.pid, started, 5.0)
    assert sleeper.wait(5) == -9


def test_gone_process() -> None:
    p = subprocess.Popen(["true"])
    p.wait()
    # Pids are allocated sequentially, so the reaped pid is not reused this soon.
    assert procs.start_time(p.pid) is None
    assert procs.state(p.pid) is None and procs.comm(p.pid) is None
    assert procs.children(p.pid) == []
    assert procs.wait_exit(p.pid, 0.1) is True
    assert procs.kill_and_wait(p.pid, 0, 0.1) is True
