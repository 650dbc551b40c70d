"""A small WebSocket remotecommand client (wsproto) for the corner cases crictl cannot reach."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)


@dataclass
class Result:
    """What a session produced, by channel, and how it ended."""

    channels: dict[int, bytes] = field(default_factory=dict)
    close_code: int | None = None
    close_reason: str = ""
    rejected: int | None = None  # HTTP status of a refused upgrade
    body: bytes = b""

    def out(self, ch: int) -> bytes:
        return self.channels.get(ch, b"")


class WsSession:
    """One connection to a streaming URL, upgraded to WebSocket."""

    def __init__(self, url: str, protocols: list[str], timeout: float = 20,
                 tls: ssl.SSLContext | None = None) -> None:  # fmt: skip
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        if parts.scheme == "https":  # an https URL needs ``tls`` (whose CA checks the server)
            assert tls is not None, f"{url} needs an SSL context"
            self.sock = tls.wrap_socket(self.sock, server_hostname=parts.hostname)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.result = Result()
        self._partial = bytearray()
        target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        self.sock.sendall(self.ws.send(Request(host=parts.netloc, target=target,
                                               subprotocols=protocols)))  # fmt: skip
        self.accepted = False
        while not self.accepted and self.result.rejected is None:
            self._pump()

    def _pump(self) -> bool:
        data = self.sock.recv(65536)
        self.ws.receive_data(data or None)
        for ev in self.ws.events():
            if isinstance(ev, AcceptConnection):
                self.accepted = True
                self.subprotocol = ev.subprotocol
            elif isinstance(ev, RejectConnection):
                self.result.rejected = ev.status_code
            elif isinstance(ev, RejectData):
                self.result.body += ev.data
            elif isinstance(ev, BytesMessage):  # a large message arrives in fragments
                self._partial += ev.data
                if ev.message_finished and self._partial:
                    ch = self._partial[0]
                    self.result.channels[ch] = self.result.out(ch) + bytes(self._partial[1:])
                if ev.message_finished:
                    self._partial = bytearray()
            elif isinstance(ev, TextMessage):
                self.result.channels.setdefault(-1, b"")
            elif isinstance(ev, CloseConnection):
                self.result.close_code, self.result.close_reason = ev.code, ev.reason or ""
                with contextlib.suppress(Exception):
                    self.sock.sendall(self.ws.send(ev.response()))
                return False
        return bool(data)

    def wait_for(self, channel: int, timeout: float = 20) -> bytes:
        """Read until ``channel`` has output (or the server closes, or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not self.result.out(channel) and time.monotonic() < deadline:
            if not self._pump():
                break
        return self.result.out(channel)

    def send(self, channel: int, data: bytes) -> None:
        msg: Message = BytesMessage(data=bytes([channel]) + data)
        self.sock.sendall(self.ws.send(msg))

    def send_raw(self, payload: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=payload)))

    def finish(self, timeout: float = 20) -> Result:
        """Read until the server closes (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        while self.result.close_code is None and time.monotonic() < deadline:
            if not self._pump():
                break
        self.sock.close()
        return self.result
