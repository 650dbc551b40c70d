"""Creating a container through conmon: start pipe, sync pipe, pidfiles.

conmon is started in its own session and blocks on the start pipe; peapod
may then move it into a monitor cgroup and releases it with one byte. conmon's
first process writes the monitor's pid to the ``-P`` pidfile and exits; the
monitor (re-parented away from peapod) runs ``<runtime> create`` and reports
``{"pid": N}`` on the sync pipe. On any failure everything started is killed
and the runtime's state is deleted. Every wait looks at the caller's context
at least every ``CANCEL_POLL`` seconds, so a cancelled create (its pod being
stopped) ends at once, killing what it started, even while the runtime hangs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from base import child_io
from base.cancel import CallContext
from base.errors import DeadlineExceeded, Internal, PeapodError
from conmon import files, procs
from conmon.argv import CreateOptions, create_argv, monitor_env
from conmon.paths import MonitorPaths
from conmon.sync_pipe import CANCEL_POLL, SyncReader, runtime_error_text

# How long conmon's first process may take to exit after the start byte.
_FIRST_EXIT_GRACE = 5.0
_RUNTIME_DELETE_TIMEOUT = 30.0


@dataclass(frozen=True)
class Created:
    """A created (not yet started) container and the conmon watching it."""

    pid: int
    monitor_pid: int
    pid_start_ticks: int | None = None
    monitor_start_ticks: int | None = None


def create_container(
    monitor_path: str,
    runtime_path: str,
    runtime_root: str,
    ctr_id: str,
    name: str,
    paths: MonitorPaths,
    *,
    tty: bool = False,
    stdin: bool = False,
    stdin_once: bool = False,
    log_level: str = "info",
    log_size_max: int = -1,
    systemd_cgroup: bool = False,
    cgroup_procs_path: str | Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 240.0,
    syslog: bool = True,
    ctx: CallContext | None = None,
) -> Created:
    """Have conmon run ``<runtime> create`` for the bundle in ``paths``.

    ``cgroup_procs_path`` is a ``cgroup.procs`` file (or several, one per
    hierarchy) conmon is moved into before it may fork. Raises Internal with
    the runtime's own message when create fails, DeadlineExceeded after
    ``timeout`` seconds, and ``ctx``'s Cancelled or DeadlineExceeded within
    ``CANCEL_POLL`` seconds of it; in every case no conmon, runtime state or
    container process is left behind.
    """
    opts = CreateOptions(
        tty=tty,
        stdin=stdin,
        stdin_once=stdin_once,
        log_level=log_level,
        log_size_max=log_size_max,
        systemd_cgroup=systemd_cgroup,
        syslog=syslog,
    )
    argv = create_argv(monitor_path, runtime_path, runtime_root, ctr_id, name, paths, opts)
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryFile() as stderr:
        launch = _Launch(argv, paths, runtime_path, runtime_root, ctr_id, systemd_cgroup, stderr)
        try:
            return launch.run(env, cgroup_procs_path, deadline, ctx)
        except BaseException:
            launch.abort(prompt=ctx is not None and ctx.cancelled)
            raise
        finally:
            launch.close()


class _Launch:
    """State of one create, so a failure at any step can undo the others."""

    def __init__(
        self,
        argv: list[str],
        paths: MonitorPaths,
        runtime_path: str,
        runtime_root: str,
        ctr_id: str,
        systemd_cgroup: bool,
        stderr: IO[bytes],
    ) -> None:
        self.argv = argv
        self.paths = paths
        self.runtime_path = runtime_path
        self.runtime_root = runtime_root
        self.ctr_id = ctr_id
        self.systemd_cgroup = systemd_cgroup
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = False  # the start byte was written
        self.sock: socket.socket | None = None
        self.start_sock: socket.socket | None = None
        self.stderr = stderr
        # One tick of slack: both clocks are truncated to whole ticks.
        self.launched_ticks = procs.boot_ticks_now() - 1

    def run(
        self,
        env: Mapping[str, str] | None,
        cgroup_procs_path: str | Sequence[str] | None,
        deadline: float,
        ctx: CallContext | None,
    ) -> Created:
        for stale in (self.paths.pidfile, self.paths.conmon_pidfile):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        self.sock, sync_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.start_sock, start_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    env=monitor_env(env, sync_child.fileno(), start_child.fileno()),
                    pass_fds=(sync_child.fileno(), start_child.fileno()),
                    cwd=self.paths.bundle,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=self.stderr,
                    start_new_session=True,
                )
            except OSError as e:
                raise Internal(f"cannot run conmon {self.argv[0]}: {e}") from None
        finally:
            sync_child.close()
            start_child.close()

        if isinstance(cgroup_procs_path, str):
            cgroup_procs_path = [cgroup_procs_path]
        for procs_path in cgroup_procs_path or ():
            self._join_cgroup(procs_path)
        self._release()
        self._wait_first_exit(deadline, ctx)

        reader = SyncReader(self.sock)
        msg = reader.read(deadline, f"the pid of container {self.ctr_id}", ctx)
        if msg is None:
            raise Internal(
                f"conmon exited without reporting the pid of container {self.ctr_id}"
                f"{self._stderr_suffix()} (see syslog for conmon's own messages)"
            )
        if msg.failed:
            detail = runtime_error_text(msg.message or "") or f"status {msg.value}"
            raise Internal(
                f"runtime failed to create container {self.ctr_id}: {detail}",
                reason="RUNTIME_CREATE_FAILED",
            )
        monitor_pid = files.read_pidfile(self.paths.conmon_pidfile)
        if monitor_pid is None:
            raise Internal(f"conmon did not write its pidfile {self.paths.conmon_pidfile}")
        return Created(
            pid=msg.value,
            monitor_pid=monitor_pid,
            pid_start_ticks=procs.start_ticks(msg.value),
            monitor_start_ticks=procs.start_ticks(monitor_pid),
        )

    def _join_cgroup(self, procs_path: str) -> None:
        assert self.proc is not None
        try:
            with open(procs_path, "w") as f:
                f.write(str(self.proc.pid))
        except OSError as e:
            raise Internal(f"cannot move conmon into the cgroup {procs_path}: {e}") from None

    def _release(self) -> None:
        """Write the start byte: conmon may now fork and run the runtime."""
        assert self.start_sock is not None
        # If conmon died before reading it, its exit status tells why.
        with contextlib.suppress(OSError):
            self.start_sock.sendall(b"\0")
        self.started = True
        self.start_sock.close()
        self.start_sock = None

    def _wait_first_exit(self, deadline: float, ctx: CallContext | None) -> None:
        assert self.proc is not None
        while True:
            if ctx is not None:
                ctx.check()
            left = deadline - time.monotonic()
            rc = child_io.wait(self.proc, max(min(left, CANCEL_POLL), 0.0))
            if rc is not None:
                break
            if left <= CANCEL_POLL:
                raise DeadlineExceeded(
                    f"conmon for container {self.ctr_id} did not daemonise in time"
                )
        if rc != 0:
            raise Internal(
                f"conmon failed for container {self.ctr_id} with exit status {rc}"
                f"{self._stderr_suffix()}",
                reason="CONMON_FAILED",
            )

    def _stderr_suffix(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read(4096).decode(errors="replace").strip()
        return f": {text}" if text else ""

    def abort(self, prompt: bool = False) -> None:
        """Kill conmon and what it started; delete any runtime state.

        ``prompt`` (the create was cancelled): a first conmon process still
        running is not given its grace to exit but killed with its children.
        """
        pids: list[int] = []
        if self.proc is not None and self.proc.poll() is None:
            if self.started and not prompt:
                # Past the start pipe it forks and exits at once; killing it
                # now could orphan a monitor whose pid was never written.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=_FIRST_EXIT_GRACE)
            if self.proc.poll() is None:
                # Its tree, frozen first: a monitor it forked cannot slip away.
                pids += procs.kill_tree(self.proc.pid, not_before_ticks=self.launched_ticks)
                self.proc.kill()
                self.proc.wait()
        monitor = _quiet_pid(self.paths.conmon_pidfile)
        if monitor is not None:
            # The monitor's children (runtime create, the container) die with it
            # or are removed by the runtime delete below.
            pids += procs.kill_tree(monitor, not_before_ticks=self.launched_ticks)
        if self.started:
            self._runtime_delete()
        container = _quiet_pid(self.paths.pidfile)
        if container is not None:
            pids += procs.kill_tree(container, not_before_ticks=self.launched_ticks)
        procs.wait_gone(pids, 5.0)

    def _runtime_delete(self) -> None:
        argv = [self.runtime_path, f"--root={self.runtime_root}"]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        argv += ["delete", "--force", self.ctr_id]
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=_RUNTIME_DELETE_TIMEOUT,
                check=False,
            )

    def close(self) -> None:
        for s in (self.sock, self.start_sock):
            if s is not None:
                s.close()


def _quiet_pid(path: str) -> int | None:
    try:
        return files.read_pidfile(path)
    except PeapodError:
        return None
