"""Waiting for a child process on a pidfd, without polling.

Given a timeout, ``Popen.wait`` (and so ``communicate`` and ``subprocess.run``) polls
for the exit, sleeping 1 ms, then 2, 4... up to 50 ms between looks: a child that
exits just after a look is seen a sleep later. A Go runtime such as runc exits just
after closing its output, and ``runc --version`` took ~0.9 ms longer with a timeout
than without. Here the exit wakes ``select`` through a pidfd (Linux 5.3) in the same
loop that feeds stdin and drains stdout and stderr.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import subprocess
import time
from typing import IO

_CHUNK = 65536
_PIPE_BUF = 512  # a write this small to a writable pipe never blocks


class ChildIO:
    """One child's stdin fed, stdout and stderr read, and exit seen: ``Popen.communicate``
    that can be resumed after a timeout, and that reaps the child once it exits."""

    def __init__(self, proc: subprocess.Popen[bytes], input: bytes | None = None) -> None:
        self.proc = proc
        self._out: dict[int, list[bytes]] = {}
        self._sel = selectors.DefaultSelector()
        self._pidfd: int | None = None
        self._input = memoryview(input or b"")
        self._sent = 0
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                self._out[pipe.fileno()] = []
                self._sel.register(pipe, selectors.EVENT_READ)
        if proc.stdin is not None:
            if input:
                self._sel.register(proc.stdin, selectors.EVENT_WRITE)
            else:
                self._close(proc.stdin)
        try:
            self._pidfd = os.pidfd_open(proc.pid)
        except OSError as exc:  # reaped already (ESRCH) or an old kernel
            if exc.errno not in (errno.ESRCH, errno.ENOSYS):
                raise
        else:
            self._sel.register(self._pidfd, selectors.EVENT_READ)

    def run(self, timeout: float | None) -> bool:
        """Go on for at most ``timeout`` seconds (None: until done); True once the child
        has exited (and is reaped) and its output pipes are at end of file."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._sel.get_map():
            wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            events = self._sel.select(wait)
            if not events and deadline is not None and time.monotonic() >= deadline:
                return False
            for key, _ in events:
                self._handle(key)
        if self.proc.returncode is None:
            if self._pidfd is None:  # no pidfd: Popen's own (polling) wait
                try:
                    self.proc.wait(None if deadline is None
                                   else max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    return False
            else:
                self.proc.wait()
        return True

    def _handle(self, key: selectors.SelectorKey) -> None:
        if key.fileobj == self._pidfd:
            self._sel.unregister(key.fileobj)
            self.proc.wait()  # it has exited: this only reaps it
            return
        proc = self.proc
        if key.fileobj is proc.stdin:
            assert proc.stdin is not None
            try:
                self._sent += os.write(proc.stdin.fileno(),
                                       self._input[self._sent : self._sent + _PIPE_BUF])
            except BrokenPipeError:  # the child does not read it all: as communicate
                self._sent = len(self._input)
            if self._sent >= len(self._input):
                self._sel.unregister(proc.stdin)
                self._close(proc.stdin)
            return
        data = os.read(key.fd, _CHUNK)
        if data:
            self._out[key.fd].append(data)
        else:
            self._sel.unregister(key.fileobj)

    @staticmethod
    def _close(pipe: IO[bytes]) -> None:
        with contextlib.suppress(BrokenPipeError):
            pipe.close()

    def output(self, pipe: IO[bytes] | None) -> bytes:
        """What was read so far from ``pipe`` (the child's stdout or stderr)."""
        return b"" if pipe is None else b"".join(self._out.get(pipe.fileno(), []))

    def close(self) -> None:
        """Release the pidfd, the selector and the child's pipes."""
        self._sel.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                self._close(pipe)


def communicate(
    proc: subprocess.Popen[bytes], input: bytes | None = None, timeout: float | None = None
) -> tuple[bytes, bytes]:
    """``proc.communicate(input, timeout)`` without the polling wait: (stdout, stderr).

    On timeout raises ``subprocess.TimeoutExpired`` and leaves the child running (the
    caller kills it) with its pipes closed.
    """
    io = ChildIO(proc, input)
    try:
        if not io.run(timeout):
            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
        return io.output(proc.stdout), io.output(proc.stderr)
    finally:
        io.close()


def wait(proc: subprocess.Popen[bytes], timeout: float | None) -> int | None:
    """The exit status once ``proc`` exits, or None after ``timeout`` seconds; its pipes
    are left alone."""
    if proc.returncode is not None:
        return proc.returncode
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.ENOSYS):
            raise
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
    finally:
        os.close(pidfd)
    return proc.wait()
