"""Children waited for on a pidfd: output, input, timeouts, reaping."""

from __future__ import annotations

import os
import subprocess

import pytest

from base import child_io


def _popen(script: str, stdin: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["/bin/sh", "-c", script], stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_output_of_both_streams_and_the_child_reaped() -> None:
    proc = _popen("echo out; echo err >&2; exit 3")
    out, err = child_io.communicate(proc, timeout=30)
    assert (out, err, proc.returncode) == (b"out\n", b"err\n", 3)
    assert proc.stdout is not None and proc.stdout.closed


def test_input_larger_than_a_pipe_goes_through_without_deadlock() -> None:
    data = os.urandom(3 << 20)
    proc = _popen("cat; cat >&2 </dev/null", stdin=True)
    out, err = child_io.communicate(proc, data, timeout=60)
    assert out == data and err == b"" and proc.returncode == 0


def test_a_child_that_does_not_read_its_input_is_no_error() -> None:
    proc = _popen("exit 0", stdin=True)
    assert child_io.communicate(proc, os.urandom(1 << 20), timeout=30) == (b"", b"")
    assert proc.returncode == 0


def test_timeout_leaves_it_running_and_a_run_resumes() -> None:
    proc = _popen("echo early; exec sleep 30")
    with pytest.raises(subprocess.TimeoutExpired):
        child_io.communicate(proc, timeout=0.2)
    assert proc.poll() is None
    proc.kill()
    proc.wait()

    proc = _popen("echo early; sleep 0.3; echo late", stdin=False)
    io = child_io.ChildIO(proc)
    try:
        assert io.run(0.05) is False and proc.returncode is None
        assert io.run(30) is True and proc.returncode == 0
        assert io.output(proc.stdout) == b"early\nlate\n"
    finally:
        io.close()


def test_output_held_open_by_a_grandchild_is_waited_for_as_communicate_does() -> None:
    proc = _popen("sleep 30 & echo $!")
    io = child_io.ChildIO(proc)
    try:
        assert io.run(0.5) is False
        assert proc.returncode == 0  # the shell itself is gone and reaped
        os.kill(int(io.output(proc.stdout)), 9)  # the grandchild holding stdout
        assert io.run(30) is True
    finally:
        io.close()


def test_wait_gives_the_status_or_none_after_the_timeout() -> None:
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 0.2; exit 7"])
    assert child_io.wait(proc, 0.01) is None
    assert child_io.wait(proc, 30) == 7 and proc.returncode == 7
    assert child_io.wait(proc, 0) == 7  # already reaped
