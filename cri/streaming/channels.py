"""The numbered streams of a remotecommand session, whatever the transport carries them."""

from __future__ import annotations

from typing import Protocol

STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
NAMES = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}


class ProtocolViolation(Exception):
    """The client broke the stream protocol; the message is for the client."""


class Channels(Protocol):
    """Both transports (WebSocket, SPDY) as numbered byte streams."""

    json_status: bool  # v4 and later: the error stream carries a Status object

    def recv(self) -> tuple[int, bytes] | None:
        """Next client bytes as ``(channel, data)``; ``data`` empty means that stream
        ended; None when the connection ended. Raises ProtocolViolation."""
        ...

    def send(self, channel: int, data: bytes) -> None:
        """Write to the client, blocking while it does not read (back-pressure)."""
        ...

    def close(self) -> None:
        """End the session cleanly; later sends are dropped."""
        ...

    def abort(self, reason: str) -> None:
        """End the session after a protocol error, telling the client ``reason``."""
        ...
