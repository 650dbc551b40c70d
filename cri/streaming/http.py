"""Reading one HTTP/1.1 request head with h11, and plain error answers."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import h11

MAX_HEAD = 16 * 1024


class BadRequest(Exception):
    """The bytes are not an HTTP/1.1 request we can read; the message says why."""


@dataclass(frozen=True)
class RequestHead:
    """The request line and headers (names lowercased), and every byte read so far."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    raw: bytes

    def values(self, name: str) -> list[str]:
        """Every comma-separated value of header ``name``, trimmed, in order."""
        out: list[str] = []
        for k, v in self.headers:
            if k == name:
                out += [p.strip() for p in v.split(",") if p.strip()]
        return out


def read_head(sock: socket.socket) -> RequestHead:
    """Read one request head; BadRequest for garbage, an oversized head or a closed peer."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    raw = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise BadRequest(f"not an HTTP/1.1 request: {exc}") from None
        if isinstance(event, h11.Request):
            headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers]
            return RequestHead(event.method.decode("ascii", "replace"),
                               event.target.decode("latin-1"), headers, bytes(raw))  # fmt: skip
        if event is h11.NEED_DATA:
            data = sock.recv(4096)
            if not data:
                raise BadRequest("the connection closed before a complete request head")
            raw += data
            conn.receive_data(data)
            continue
        raise BadRequest(f"unexpected HTTP event {type(event).__name__}")


def error_response(code: int, reason: str, message: str, headers: list[tuple[str, str]]) -> bytes:
    """A complete ``Connection: close`` answer with a text body."""
    body = (message.rstrip("\n") + "\n").encode()
    lines = [f"HTTP/1.1 {code} {reason}", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body)}", "Connection: close"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
