"""WebSocket (RFC 6455, through wsproto) transports: channel-prefixed messages.

Subprotocols: ``v5.channel.k8s.io`` (adds ``255 <channel>`` to half-close a
stream), ``v4.channel.k8s.io``, ``channel.k8s.io`` (binary, first byte = channel)
and the base64 forms (text, first char ``'0' + channel``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import socket
import threading

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from cri.streaming.channels import ProtocolViolation

REMOTECOMMAND_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
)
CLOSE_CHANNEL = 255
_CHUNK = 64 * 1024


class Rejected(Exception):
    """The upgrade was answered with an error status; nothing more to do."""


def handshake(
    sock: socket.socket, raw: bytes, supported: tuple[str, ...]
) -> tuple[WSConnection, str]:
    """Complete the upgrade whose request bytes are ``raw``; the connection and subprotocol.

    A client offering none of ``supported`` gets 403 naming them (Rejected).
    No offer at all means ``channel.k8s.io``.
    """
    ws = WSConnection(ConnectionType.SERVER)
    try:
        ws.receive_data(raw)
        events = list(ws.events())
    except Exception as exc:  # wsproto raises its own errors for a bad handshake
        raise ProtocolViolation(f"bad WebSocket upgrade: {exc}") from None
    request = next((e for e in events if isinstance(e, Request)), None)
    if request is None:
        raise ProtocolViolation("bad WebSocket upgrade: no complete handshake request")
    offered = list(request.subprotocols)
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None and not offered and "channel.k8s.io" in supported:
        sock.sendall(ws.send(AcceptConnection()))
        return ws, "channel.k8s.io"
    if chosen is None:
        body = (f"none of the offered subprotocols {', '.join(offered) or '(none)'} is "
                f"supported; supported: {', '.join(supported)}\n").encode()  # fmt: skip
        headers = [(b"Content-Type", b"text/plain"), (b"Content-Length", str(len(body)).encode())]
        headers += [(b"X-Accepted-Stream-Protocol-Versions", p.encode()) for p in supported]
        sock.sendall(ws.send(RejectConnection(status_code=403, headers=headers, has_body=True)))
        sock.sendall(ws.send(RejectData(data=body)))
        raise Rejected(body.decode().strip())
    sock.sendall(ws.send(AcceptConnection(subprotocol=chosen)))
    return ws, chosen


class WebSocketChannels:
    """A remotecommand session's streams as WebSocket messages; sends are serialized."""

    def __init__(
        self, sock: socket.socket, ws: WSConnection, protocol: str, channels: frozenset[int]
    ) -> None:
        self._sock = sock
        self._ws = ws
        self._lock = threading.Lock()
        self._text = "base64" in protocol
        self._v5 = protocol.startswith("v5.")
        self.json_status = protocol.startswith(("v4.", "v5."))
        self._inbound = channels  # the channels a client may write to
        self._closed = False
        self._pending: list[tuple[int, bytes]] = []
        self._current: int | None = None  # channel of a message still arriving in parts
        self._text_parts: list[str] = []

    def send(self, channel: int, data: bytes) -> None:
        if self._text:
            payload: Message = TextMessage(data=chr(48 + channel) + base64.b64encode(data).decode())
        else:
            payload = BytesMessage(data=bytes([channel]) + data)
        with self._lock:
            if self._closed:
                return
            self._sock.sendall(self._ws.send(payload))

    def recv(self) -> tuple[int, bytes] | None:
        while not self._pending:
            try:
                data = self._sock.recv(_CHUNK)
            except OSError:
                return None
            with self._lock:
                if not data:
                    self._ws.receive_data(None)
                    return None
                self._ws.receive_data(data)
                ended = self._drain_events()
            if ended:
                return None
        return self._pending.pop(0)

    def _drain_events(self) -> bool:
        """Turn wsproto's events into pending channel data; True once the peer closed."""
        for event in self._ws.events():
            if isinstance(event, Ping):
                self._sock.sendall(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if not self._closed:
                    self._closed = True
                    self._sock.sendall(self._ws.send(event.response()))
                return True
            elif isinstance(event, TextMessage):
                self._text_parts.append(event.data)
                if event.message_finished:
                    text, self._text_parts = "".join(self._text_parts), []
                    self._message_text(text)
            elif isinstance(event, BytesMessage):
                self._message_bytes(bytes(event.data), event.message_finished)
        return False

    def _message_bytes(self, data: bytes, finished: bool) -> None:
        if self._current is None:
            if not data:
                return
            channel, data = data[0], data[1:]
            if self._v5 and channel == CLOSE_CHANNEL:
                if data:
                    self._check(data[0])
                    self._pending.append((data[0], b""))
                return
            self._check(channel)
            self._current = channel
        if data:
            self._pending.append((self._current, data))
        if finished:
            self._current = None

    def _message_text(self, text: str) -> None:
        if not text:
            return
        channel = ord(text[0]) - 48
        self._check(channel)
        try:
            data = base64.b64decode(text[1:], validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolViolation(f"channel {channel}: the message is not base64") from None
        if data:
            self._pending.append((channel, data))

    def _check(self, channel: int) -> None:
        if channel not in self._inbound:
            known = ", ".join(str(c) for c in sorted(self._inbound))
            raise ProtocolViolation(
                f"message on unknown channel {channel}; this session reads channels {known}"
            )

    def close(self, code: int = 1000, reason: str = "") -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # The peer may be gone already; closing is all that is left then.
            with contextlib.suppress(Exception):
                self._sock.sendall(self._ws.send(CloseConnection(code=code, reason=reason)))

    def abort(self, reason: str) -> None:
        self.close(1008, reason[:120])
