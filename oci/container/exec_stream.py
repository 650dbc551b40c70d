"""Streaming exec: ``<runtime> exec`` in the foreground, its stdio handed to the caller.

No monitor and no Python process per exec: the runtime process itself waits for
the exec'd process and exits with its status. Without a TTY its stdio are pipes;
with one, a host pseudo-terminal is the runtime's stdio and the runtime copies
between it and the container's console, resizing that console on SIGWINCH.
The process spec and the pidfile live in an exec scratch directory, so a daemon
killed mid-exec leaves something ``conmon.exec_scratch`` cleans up at start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Mapping
from typing import Any

from base.errors import Internal
from conmon import exec_scratch, procs


class StreamExec:
    """One running exec: its stdio fds (None when not asked for), resize, wait, kill."""

    def __init__(
        self,
        runtime_path: str,
        runtime_root: str,
        ctr_id: str,
        process: Mapping[str, Any],
        *,
        stdin: bool,
        work_dir: str,
        env: Mapping[str, str],
    ) -> None:
        self.tty = bool(process.get("terminal"))
        self.scratch = exec_scratch.make(work_dir)
        spec_path = os.path.join(self.scratch, "process.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(process))  # one C-encoded string: json.dump encodes in Python
        self.stdin: int | None = None
        self.stdout: int | None = None
        self.stderr: int | None = None
        self._master: int | None = None
        child: list[int] = []
        argv = [runtime_path, f"--root={runtime_root}", "exec", "--process", spec_path,
                "--pid-file", os.path.join(self.scratch, exec_scratch.PIDFILE), ctr_id]
        try:
            if self.tty:
                master, slave = os.openpty()
                os.set_inheritable(master, False)
                self._master = master
                child = [slave]
                io: dict[str, Any] = {"stdin": slave, "stdout": slave, "stderr": slave}
            else:
                io = {"stdin": subprocess.DEVNULL}
                if stdin:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    self.stdin, io["stdin"] = w, r
                    child.append(r)
                r, w = os.pipe2(os.O_CLOEXEC)
                self.stdout, io["stdout"] = r, w
                child.append(w)
                r, w = os.pipe2(os.O_CLOEXEC)
                self.stderr, io["stderr"] = r, w
                child.append(w)
            exec_scratch.mark_started(self.scratch, procs.boot_ticks_now())
            self.proc = subprocess.Popen(argv, env=dict(env), start_new_session=True, **io)
        except OSError as exc:
            self._close_all()
            raise Internal(f"cannot run runtime {runtime_path} exec: {exc}") from None
        finally:
            for fd in child:
                os.close(fd)
        if self._master is not None:
            self.stdout = self._master
            self.stdin = os.dup(self._master) if stdin else None

    def resize(self, width: int, height: int) -> None:
        """Set the terminal size and tell the runtime, which resizes the container's console."""
        if self._master is None or width <= 0 or height <= 0:
            return
        with contextlib.suppress(OSError):
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
            self.proc.send_signal(signal.SIGWINCH)

    def close_stdin(self) -> None:
        """End the process's input (with a TTY: send EOF, the terminal's ^D)."""
        if self.stdin is None:
            return
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self.stdin, b"\x04")
        else:
            with contextlib.suppress(OSError):
                os.close(self.stdin)
        self.stdin = None

    def wait(self) -> int:
        """The exec'd process's exit code (128+signal when killed)."""
        code = self.proc.wait()
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        """Kill the exec'd process (then the runtime exits)."""
        pid = _read_pid(os.path.join(self.scratch, exec_scratch.PIDFILE))
        with contextlib.suppress(OSError):
            if pid:
                os.kill(pid, signal.SIGKILL)
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)

    def close(self) -> None:
        """Kill the process if still running, reap it, and release every fd and file."""
        if self.proc.poll() is None:
            self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._close_all()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _close_all(self) -> None:
        for fd in {self.stdin, self.stdout, self.stderr, self._master} - {None}:
            with contextlib.suppress(OSError):
                os.close(fd)  # type: ignore[arg-type]
        self.stdin = self.stdout = self.stderr = self._master = None


def _read_pid(path: str) -> int:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
