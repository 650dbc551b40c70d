"""Messages to conmon's control FIFO ``<bundle>/ctl``.

A message is one line ``"<type> <height> <width>\\n"``: type 1 resizes the
container's terminal, type 2 reopens the log file. conmon 2.1.6 handles only
the first line of each read correctly, so send one message per write.
"""

from __future__ import annotations

import errno
import os
import time

from base.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound

RESIZE = 1
REOPEN_LOG = 2


def _send(ctl_path: str, kind: int, height: int, width: int) -> None:
    line = f"{kind} {height} {width}\n".encode()
    try:
        # Non-blocking: with no conmon reading, open fails instead of hanging.
        fd = os.open(ctl_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"no control FIFO at {ctl_path}") from None
    except OSError as e:
        if e.errno == errno.ENXIO:
            raise FailedPrecondition(
                f"conmon is not reading {ctl_path}; the container's monitor is gone"
            ) from None
        raise FailedPrecondition(f"cannot open control FIFO {ctl_path}: {e}") from None
    try:
        os.write(fd, line)
    except OSError as e:
        raise FailedPrecondition(f"cannot write to control FIFO {ctl_path}: {e}") from None
    finally:
        os.close(fd)


def resize(ctl_path: str, height: int, width: int) -> None:
    """Ask conmon to set the container terminal's size (rows, columns)."""
    for what, v in (("height", height), ("width", width)):
        if not 0 <= v <= 0xFFFF:
            raise InvalidArgument(f"terminal {what} {v} is outside 0..65535")
    _send(ctl_path, RESIZE, height, width)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def reopen_log(ctl_path: str, log_path: str | None = None, timeout: float = 5.0) -> None:
    """Ask conmon to reopen the container log.

    conmon creates a new, empty file at the log path (replacing whatever is
    there), so rename the old file away first. With ``log_path``, wait until
    the new file is in place.
    """
    before = _inode(log_path) if log_path else None
    _send(ctl_path, REOPEN_LOG, 0, 0)
    if log_path is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        now = _inode(log_path)
        if now is not None and now != before:
            return
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"conmon did not reopen {log_path} within {timeout}s")
        time.sleep(0.005)
