"""conmon's sync pipe: one JSON object per line, read with a deadline.

conmon writes ``{"pid": N}`` after ``runtime create``, ``{"exit_code": N}``
after a ``--sync`` exec, and adds ``"message"`` on failure (then N is -1 or
negative): the runtime's stderr, or ``command timed out``.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from dataclasses import dataclass

from base.cancel import CallContext
from base.errors import DeadlineExceeded, Internal

TIMED_OUT_MESSAGE = "command timed out"
_MAX_LINE = 1 << 20
CANCEL_POLL = 0.1  # seconds between looks at the caller's context while waiting
# runc logs errors logfmt-style: time="..." level=error msg="..."
_LOGFMT_MSG = re.compile(r'\blevel=(\w+)\b.*?\bmsg="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class SyncMessage:
    """One report from conmon: which key it used, the number, any message."""

    key: str
    value: int
    message: str | None = None

    @property
    def failed(self) -> bool:
        """conmon reports failures as a negative number with a message."""
        return self.value < 0


def parse_sync_message(line: bytes) -> SyncMessage:
    """Decode one line conmon wrote to the sync pipe."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise Internal(f"conmon sent an unreadable sync message {line[:200]!r}: {e}") from None
    if not isinstance(obj, dict):
        raise Internal(f"conmon sent a sync message that is not an object: {line[:200]!r}")
    for key in ("pid", "exit_code", "data"):
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            message = obj.get("message")
            return SyncMessage(key, value, message if isinstance(message, str) else None)
    raise Internal(f"conmon sent a sync message without pid or exit code: {line[:200]!r}")


def runtime_error_text(raw: str) -> str:
    """The human part of a runtime's stderr: logfmt ``msg`` values if any."""
    msgs = []
    for m in _LOGFMT_MSG.finditer(raw):
        try:
            msgs.append(json.loads(f'"{m[2]}"'))
        except ValueError:
            msgs.append(m[2])
    return "; ".join(msgs) if msgs else raw.strip()


class SyncReader:
    """Reads successive lines from the parent's end of the sync socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""

    def read(
        self, deadline: float | None, what: str, ctx: CallContext | None = None
    ) -> SyncMessage | None:
        """The next message, or None if conmon closed the pipe first.

        ``deadline`` is a ``time.monotonic()`` value; past it, DeadlineExceeded
        names ``what`` was being waited for. ``ctx`` is looked at every
        ``CANCEL_POLL`` seconds: its Cancelled or DeadlineExceeded ends the wait.
        """
        while b"\n" not in self._buf:
            if ctx is not None:
                ctx.check()
            if deadline is None:
                wait = None
            else:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise DeadlineExceeded(f"timed out waiting for conmon to report {what}")
            if ctx is not None:
                wait = CANCEL_POLL if wait is None else min(wait, CANCEL_POLL)
            ready, _, _ = select.select([self._sock], [], [], wait)
            if not ready:
                continue
            chunk = self._sock.recv(65536)
            if not chunk:
                if self._buf.strip():
                    # conmon always ends a message with a newline; be lenient.
                    line, self._buf = self._buf, b""
                    return parse_sync_message(line)
                return None
            self._buf += chunk
            if len(self._buf) > _MAX_LINE:
                raise Internal("conmon sent an over-long sync message")
        line, _, self._buf = self._buf.partition(b"\n")
        return parse_sync_message(line)
