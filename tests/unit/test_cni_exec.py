"""Running plugin binaries: lookup, CNI error parsing, garbage, timeouts, cancellation."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from base.cancel import CallContext
from base.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    NotFound,
    Unavailable,
)
from cni.plugin_exec import (
    STDERR_LIMIT,
    exec_plugin,
    find_plugin,
    plugin_failure,
)


def script(directory: Path, name: str, body: str) -> str:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def run(path: str, ctx: CallContext | None = None, cap: float | None = 10.0,
        stdin: bytes = b"{}") -> str:
    return exec_plugin(path, plugin="fake", command="ADD", env={"PATH": os.environ["PATH"]},
                       stdin=stdin, ctx=ctx or CallContext(), cap=cap,
                       what="CNI plugin 'fake' (network 'n') ADD")


def test_find_plugin(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "bridge").write_text("not executable")
    wanted = script(second, "bridge", "exit 0\n")
    assert find_plugin("bridge", [str(first), str(second)]) == wanted
    with pytest.raises(FailedPrecondition) as info:
        find_plugin("macvlan", [str(first), str(second)], where="network 'n'")
    assert info.value.message == (
        f"CNI plugin 'macvlan' (network 'n') not found in {first}, {second}")
    assert info.value.reason == "macvlan"


def test_stdin_reaches_plugin_and_stdout_returns(tmp_path: Path) -> None:
    path = script(tmp_path, "cat", "cat\n")
    assert run(path, stdin=b'{"x": 1}') == '{"x": 1}'


def test_a_plugin_reading_its_stdin_late_still_gets_all_of_it(tmp_path: Path) -> None:
    """The config arrives whole even when the plugin starts reading after several of the
    run's polls: the write must go on across them. (Resuming ``Popen.communicate`` with
    no input stopped feeding stdin and never closed it, so a plugin started slowly on a
    loaded host read forever, until the 60 s cap killed it.)"""
    path = script(tmp_path, "late", "sleep 0.3; wc -c\n")
    config = b"x" * 300_000  # more than a pipe holds: cannot all go in the first poll
    started = time.monotonic()
    assert run(path, stdin=config, cap=10.0).strip() == str(len(config))
    assert time.monotonic() - started < 5


def test_cni_error_json_on_stdout(tmp_path: Path) -> None:
    path = script(tmp_path, "p", """
cat >/dev/null
echo 'some log line' >&2
echo '{"cniVersion":"1.1.0","code":7,"msg":"Invalid Configuration","details":"too small"}'
exit 1
""")
    with pytest.raises(FailedPrecondition) as info:
        run(path)
    message = info.value.message
    assert message.startswith("CNI plugin 'fake' (network 'n') ADD failed: CNI error code 7 "
                              "(invalid network config): Invalid Configuration; details: too small")
    assert message.endswith("; plugin stderr: some log line")
    assert info.value.reason == "fake"
    failure = plugin_failure(info.value)
    assert failure is not None
    assert (failure.code, failure.msg, failure.details, failure.exit_status) == (
        7, "Invalid Configuration", "too small", 1)


def test_cni_error_json_on_stderr_among_logs(tmp_path: Path) -> None:
    path = script(tmp_path, "p", """
echo 'starting' >&2
echo '{"code":11,"msg":"busy"}' >&2
exit 3
""")
    with pytest.raises(Unavailable, match="CNI error code 11 \\(try again later\\): busy"):
        run(path)


@pytest.mark.parametrize(("code", "cls"), [(3, NotFound), (50, Unavailable), (51, Unavailable),
                                           (1, FailedPrecondition), (999, Internal)])
def test_error_code_classes(tmp_path: Path, code: int, cls: type[Exception]) -> None:
    path = script(tmp_path, "p", f"echo '{{\"code\":{code},\"msg\":\"m\"}}'; exit 1\n")
    with pytest.raises(cls, match=f"CNI error code {code}"):
        run(path)


def test_garbage_and_non_zero_exit(tmp_path: Path) -> None:
    path = script(tmp_path, "p", "echo 'panic: oops'; echo 'goroutine 1' >&2; exit 2\n")
    with pytest.raises(Internal) as info:
        run(path)
    assert info.value.message == (
        "CNI plugin 'fake' (network 'n') ADD exited with status 2 without a CNI error result; "
        "stdout: panic: oops; plugin stderr: goroutine 1")
    failure = plugin_failure(info.value)
    assert failure is not None and failure.code is None and failure.exit_status == 2


def test_killed_by_signal(tmp_path: Path) -> None:
    path = script(tmp_path, "p", "kill -9 $$\n")
    with pytest.raises(Internal, match="was killed by signal 9"):
        run(path)


def test_stderr_is_truncated_keeping_the_end(tmp_path: Path) -> None:
    path = script(tmp_path, "p", """
i=0; while [ $i -lt 400 ]; do echo "noise line $i" >&2; i=$((i+1)); done
echo 'the real cause' >&2
exit 1
""")
    with pytest.raises(Internal) as info:
        run(path)
    stderr_part = info.value.message.split("; plugin stderr: ", 1)[1]
    assert stderr_part.startswith("...") and stderr_part.endswith("the real cause")
    assert len(stderr_part) <= STDERR_LIMIT + 3


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_timeout_kills_plugin_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    path = script(tmp_path, "p", f"sleep 300 & echo $! > {pidfile}; wait\n")
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        run(path, cap=0.5)
    assert time.monotonic() - started < 5
    assert "ran longer than 0.5s" in info.value.message
    assert info.value.reason == "fake"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the delegated child process survived the timeout"


def test_caller_deadline_bounds_run(tmp_path: Path) -> None:
    path = script(tmp_path, "p", "sleep 300\n")
    with pytest.raises(DeadlineExceeded, match="the caller's deadline passed"):
        run(path, ctx=CallContext.with_timeout(0.3), cap=60)
    with pytest.raises(DeadlineExceeded):  # no time left: never started
        run(path, ctx=CallContext.with_timeout(-1), cap=60)


def test_cancel_kills_plugin(tmp_path: Path) -> None:
    path = script(tmp_path, "p", "sleep 300\n")
    ctx = CallContext()
    timer = threading.Timer(0.3, ctx.cancel)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(Cancelled, match="cancelled by the caller; the plugin was killed"):
            run(path, ctx=ctx, cap=None)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5


def test_unexecutable_binary(tmp_path: Path) -> None:
    path = tmp_path / "p"
    path.write_text("#!/nonexistent/interpreter\n")
    path.chmod(0o755)
    with pytest.raises(Internal, match="cannot execute"):
        run(str(path))
