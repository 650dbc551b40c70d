"""A WebSocket connection as a plain byte pipe: the ``SPDY/3.1+portforward.k8s.io`` tunnel.

The client sends SPDY's byte stream in binary messages of arbitrary size, with no
channel byte; the server answers the same way. Pings are answered here.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from wsproto import WSConnection
from wsproto.events import BytesMessage, CloseConnection, Ping

TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
_CHUNK = 64 * 1024


class WsBytePipe:
    """``recv``/``sendall`` over WebSocket binary messages; b"" once the peer closed."""

    def __init__(self, sock: socket.socket, ws: WSConnection) -> None:
        self._sock = sock
        self._ws = ws
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._ended = False

    def recv(self, size: int) -> bytes:
        while not self._buf and not self._ended:
            data = self._sock.recv(_CHUNK)
            with self._lock:
                self._ws.receive_data(data or None)
                for event in self._ws.events():
                    if isinstance(event, BytesMessage):
                        self._buf += event.data
                    elif isinstance(event, Ping):
                        self._sock.sendall(self._ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self._ended = True
                        with contextlib.suppress(Exception):
                            self._sock.sendall(self._ws.send(event.response()))
            if not data:
                self._ended = True
        out = bytes(self._buf[:size])
        del self._buf[:size]
        return out

    def sendall(self, data: bytes) -> None:
        with self._lock:
            if self._ended:
                raise BrokenPipeError("the WebSocket is closed")
            self._sock.sendall(self._ws.send(BytesMessage(data=data)))
