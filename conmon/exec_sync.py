"""ExecSync through a short-lived ``conmon --sync -e``.

conmon runs ``<runtime> exec --detach``, waits for the process, writes its
output as a CRI log to a temporary file and reports ``{"exit_code": N}`` on
the sync pipe. peapod enforces the timeout itself: conmon 2.1.6's ``-T`` can
fire up to a second early and kills only the process group, leaving behind
descendants that called setsid. At the deadline peapod freezes and kills the
whole process tree named by the exec pidfile.

conmon reports once the output is in the log (it drains and syncs it first), so a
command that exited is answered at once: reaping conmon and deleting the scratch
directory (0.7 ms an exec on the benchmark's disk) are left to a background thread.
A daemon stopped before that leaves the directory to the start-up clean-up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from base import child_io
from base.cancel import CallContext
from base.errors import DeadlineExceeded, FailedPrecondition, Internal, NotFound, PeapodError
from conmon import crilog, exec_scratch, files, procs
from conmon.argv import exec_sync_argv, monitor_env
from conmon.sync_pipe import (
    TIMED_OUT_MESSAGE,
    SyncMessage,
    SyncReader,
    runtime_error_text,
)

DEFAULT_MAX_OUTPUT = 16 << 20
# conmon's -T fires up to a second early and only kills the process group, so
# peapod times the command itself; -T (later by this much) is only a backstop
# for when peapod is gone.
_BACKSTOP = 2
# How long conmon gets to report once the command was killed.
_REPORT_GRACE = 5.0
_KILLED_STATUS = 128 + 9
_POLL = 0.25

log = logging.getLogger("peapod.conmon")


@dataclass(frozen=True)
class ExecResult:
    """What a synchronous exec produced; stdout/stderr are capped."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    truncated: bool = False


def exec_sync(
    monitor_path: str,
    runtime_path: str,
    runtime_root: str,
    ctr_id: str,
    process_spec: Mapping[str, Any],
    timeout_s: int | None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    *,
    work_dir: str | None = None,
    env: Mapping[str, str] | None = None,
    log_level: str = "error",
    ctx: CallContext | None = None,
) -> ExecResult:
    """Run ``process_spec`` in the running container ``ctr_id`` and wait for it.

    ``process_spec`` is an OCI ``process`` object (the container's, with
    ``args`` replaced). ``timeout_s`` of None or 0 means no limit. A timed-out
    command gives exit code -1 and stderr ``command timed out``. A runtime
    failure (e.g. the binary does not exist) raises Internal with the
    runtime's message.
    """
    tmp = exec_scratch.make(work_dir)
    run = _ExecRun(tmp, ctr_id, ctx)
    try:
        return run.run(
            monitor_path, runtime_path, runtime_root, process_spec, timeout_s, max_output,
            env, log_level,
        )  # fmt: skip
    finally:
        if not run.handed_off:
            shutil.rmtree(tmp, ignore_errors=True)


class _Finisher:
    """Reaps the conmons of answered execs and deletes their scratch directories, one
    after another on a thread of its own (started at the first exec)."""

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[tuple[subprocess.Popen[bytes], str]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, proc: subprocess.Popen[bytes], scratch: str) -> None:
        self._work.put((proc, scratch))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="exec-finisher",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def _run(self) -> None:
        while True:
            proc, scratch = self._work.get()
            try:
                _, err = child_io.communicate(proc, timeout=_REPORT_GRACE)
                if proc.returncode:
                    log.warning("conmon of an answered exec failed", extra={
                        "status": proc.returncode, "error": err.decode(errors="replace")})
            except subprocess.TimeoutExpired:
                procs.kill_tree(proc.pid)
                proc.wait()
            except Exception:  # the thread must go on
                log.exception("finishing an answered exec failed")
            shutil.rmtree(scratch, ignore_errors=True)


_FINISHER = _Finisher()


class _ExecRun:
    """One exec: the temporary files, conmon, the timer and leftover cleanup."""

    def __init__(self, tmp: str, ctr_id: str, ctx: CallContext | None) -> None:
        self.ctr_id = ctr_id
        self.ctx = ctx
        self.tmp = tmp
        self.spec_path = os.path.join(tmp, "process.json")
        self.pidfile = os.path.join(tmp, exec_scratch.PIDFILE)
        self.log_path = os.path.join(tmp, "log")
        self.started_ticks = 0
        self.killed_for_timeout = False
        self.handed_off = False  # conmon and the scratch dir are the finisher's now

    def run(
        self,
        monitor_path: str,
        runtime_path: str,
        runtime_root: str,
        process_spec: Mapping[str, Any],
        timeout_s: int | None,
        max_output: int,
        env: Mapping[str, str] | None,
        log_level: str,
    ) -> ExecResult:
        # No terminal: conmon was not given -t, and ExecSync output is not a tty.
        with open(self.spec_path, "w") as f:
            # One C-encoded string: json.dump would encode piecewise in Python (4x slower).
            f.write(json.dumps({**process_spec, "terminal": False}))
        # Each log line costs ~45 bytes besides its content; leave room for both
        # streams and a margin so the cap we apply below is the one that bites.
        global_max = 2 * max_output + (64 << 10)
        argv = exec_sync_argv(
            monitor_path, runtime_path, runtime_root, self.ctr_id,
            process_spec_path=self.spec_path, pidfile=self.pidfile, log_path=self.log_path,
            timeout_s=timeout_s + _BACKSTOP if timeout_s else None,
            log_global_size_max=global_max, log_level=log_level,
        )  # fmt: skip
        sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.started_ticks = procs.boot_ticks_now() - 1
        exec_scratch.mark_started(self.tmp, self.started_ticks)  # for clean-up after a crash
        expires = time.monotonic() + timeout_s if timeout_s else None
        try:
            try:
                proc = subprocess.Popen(
                    argv,
                    env=monitor_env(env, child.fileno()),
                    pass_fds=(child.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as e:
                raise Internal(f"cannot run conmon {monitor_path}: {e}") from None
            finally:
                child.close()
            try:
                msg = self._wait_report(SyncReader(sock), proc, expires)
                if msg is not None and not msg.failed and not self._timed_out(msg):
                    result = self._result(msg, "", max_output)  # the log is complete
                    _FINISHER.submit(proc, self.tmp)
                    self.handed_off = True
                    return result
                err = self._reap(proc)
            except BaseException:
                if not self.handed_off:
                    self._kill(proc)
                raise
        finally:
            sock.close()
        return self._result(msg, err, max_output)

    def _wait_report(
        self, reader: SyncReader, proc: subprocess.Popen[bytes], expires: float | None
    ) -> SyncMessage | None:
        """conmon's exit report; kills the command when ``expires`` passes.

        The caller's context is polled while waiting.
        """
        limit = expires
        while True:
            if self.ctx is not None:
                self.ctx.check()
            step = time.monotonic() + _POLL
            if limit is not None and limit < step:
                step = limit
            try:
                return reader.read(step, "the exec's exit code")
            except DeadlineExceeded:
                if limit is None or time.monotonic() < limit:
                    continue
                if self.killed_for_timeout:
                    raise DeadlineExceeded(
                        f"conmon did not report the exec in container {self.ctr_id} "
                        f"within {_REPORT_GRACE}s of killing it"
                    ) from None
                self._kill_for_timeout(proc)
                limit = time.monotonic() + _REPORT_GRACE

    def _kill_for_timeout(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill the exec'd process tree; before it exists, conmon and the runtime."""
        self.killed_for_timeout = True
        if not self._kill_exec_process():
            procs.kill_tree(proc.pid, not_before_ticks=self.started_ticks)

    def _reap(self, proc: subprocess.Popen[bytes]) -> str:
        """Wait for conmon to exit after its report; its stderr, if any."""
        try:
            _, err = child_io.communicate(proc, timeout=_REPORT_GRACE)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            return ""
        return err.decode(errors="replace").strip()

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill conmon, the runtime and the exec'd process tree."""
        killed = procs.kill_tree(proc.pid)
        killed += self._kill_exec_process()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)
        procs.wait_gone(killed, 5.0)

    def _kill_exec_process(self) -> list[int]:
        """SIGKILL the process named by the exec pidfile and its descendants."""
        try:
            pid = files.read_pidfile(self.pidfile)
        except PeapodError:
            return []
        if pid is None:
            return []
        return procs.kill_tree(pid, not_before_ticks=self.started_ticks)

    def _timed_out(self, msg: SyncMessage | None) -> bool:
        if msg is not None and msg.value == -1 and msg.message == TIMED_OUT_MESSAGE:
            return True  # conmon's own -T backstop fired
        # After our kill, SIGKILL's status (or no report at all) means it was us;
        # any other status means the command finished just before.
        return self.killed_for_timeout and (msg is None or msg.value == _KILLED_STATUS)

    def _result(self, msg: SyncMessage | None, err: str, max_output: int) -> ExecResult:
        timed_out = self._timed_out(msg)
        if timed_out:
            procs.wait_gone(self._kill_exec_process(), 5.0)
        elif msg is None:
            self._kill_exec_process()
            raise Internal(
                f"conmon exited without reporting the exec's exit code in container "
                f"{self.ctr_id}" + (f": {err}" if err else "")
            )
        elif msg.failed:
            detail = runtime_error_text(msg.message or err) or f"status {msg.value}"
            text = f"runtime failed to exec in container {self.ctr_id}: {detail}"
            if "stopped container" in detail or "not running" in detail:
                raise FailedPrecondition(text, reason="CONTAINER_NOT_RUNNING")
            if "container does not exist" in detail:
                raise NotFound(text, reason="CONTAINER_NOT_FOUND")
            raise Internal(text, reason="RUNTIME_EXEC_FAILED")
        try:
            lines = crilog.read_log(self.log_path)
        except FileNotFoundError:
            lines = []
        stdout, stderr, truncated = crilog.split_streams(lines, max_output)
        if timed_out:
            return ExecResult(-1, stdout, TIMED_OUT_MESSAGE.encode(), True, truncated)
        assert msg is not None
        return ExecResult(msg.value, stdout, stderr, False, truncated)
