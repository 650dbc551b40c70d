"""Port-forward over WebSocket channel pairs (``v4.channel.k8s.io`` and the older forms).

Port i of the session owns channel 2i (data, both ways) and 2i+1 (errors, to the
client). Each is dialled when the session starts; the server's first message on both
channels is the port as 2-byte little-endian. A port that cannot be dialled gets the
reason on its error channel. Copies block while their reader is slow (back-pressure);
the session closes once every pod-side connection has ended, or when the client goes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from urllib.parse import parse_qs

from base.errors import PeapodError
from cri.streaming.channels import ProtocolViolation
from cri.streaming.portforward import Dial
from cri.streaming.websocket import WebSocketChannels

PROTOCOLS = (
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
)
_READ = 64 * 1024
_JOIN = 1.0


def requested_ports(target: str, fallback: tuple[int, ...]) -> tuple[int, ...]:
    """Ports from ``?port=`` / ``?ports=`` (repeated or comma-separated), else ``fallback``.

    Raises ProtocolViolation for a port outside 1..65535 or when none is given.
    """
    query = parse_qs(target.partition("?")[2])
    raw = [p for key in ("port", "ports") for v in query.get(key, []) for p in v.split(",")]
    ports = []
    for item in raw:
        item = item.strip()
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise ProtocolViolation(f"invalid port {item!r}: want 1-65535")
        ports.append(int(item))
    ports = ports or list(fallback)
    if not ports:
        raise ProtocolViolation("no port to forward: give ?ports=N[,M...]")
    return tuple(ports)


class WsPortForward:
    """Serves one channel-pair port-forward session until both sides are done."""

    def __init__(self, conn: socket.socket, ch: WebSocketChannels, ports: tuple[int, ...],
                 dial: Dial) -> None:  # fmt: skip
        self.conn = conn
        self.ch = ch
        self.ports = ports
        self.dial = dial
        self._socks: dict[int, socket.socket] = {}  # data channel -> pod-side connection
        self._live = 0
        self._lock = threading.Lock()
        self._client_done = threading.Event()

    def run(self) -> None:
        threads = []
        try:
            for i, port in enumerate(self.ports):
                prefix = struct.pack("<H", port)
                self.ch.send(2 * i, prefix)
                self.ch.send(2 * i + 1, prefix)
            for i, port in enumerate(self.ports):
                sock = self._connect(i, port)
                if sock is not None:
                    t = threading.Thread(target=self._from_pod, args=(2 * i, sock),
                                         name="portforward", daemon=True)  # fmt: skip
                    threads.append(t)
            self._live = len(threads)
            if not threads:
                return
            for t in threads:
                t.start()
            self._from_client()
        except ProtocolViolation as exc:
            self.ch.abort(str(exc))
        except OSError:
            pass
        finally:
            self._client_done.set()
            for sock in self._socks.values():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            for t in threads:
                t.join(_JOIN)
            for sock in self._socks.values():
                sock.close()
            self.ch.close()

    def _connect(self, i: int, port: int) -> socket.socket | None:
        try:
            sock = self.dial(port)
        except PeapodError as exc:
            self.ch.send(2 * i + 1, f"error forwarding port {port} to pod: {exc}".encode())
            return None
        self._socks[2 * i] = sock
        return sock

    def _from_client(self) -> None:
        """Client bytes to the pod side; blocks while the pod side does not read."""
        while (item := self.ch.recv()) is not None:
            channel, data = item
            sock = self._socks.get(channel)
            if sock is None:
                continue
            try:
                if data:
                    sock.sendall(data)
                else:  # a v5-style close of the channel: half-close the pod side
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                continue

    def _from_pod(self, channel: int, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(_READ)
            except OSError:
                data = b""
            if not data:
                break
            try:
                self.ch.send(channel, data)
            except OSError:
                break
        with self._lock:
            self._live -= 1
            last = self._live == 0
        if last:  # every pod side ended: close, and stop reading if the client does not
            self.ch.close()
            if not self._client_done.wait(_JOIN):
                with contextlib.suppress(OSError):
                    self.conn.shutdown(socket.SHUT_RD)
