"""Port-forward over SPDY (``portforward.k8s.io``): one TCP connection per stream pair.

For each local connection the client opens an ``error`` and a ``data`` stream with
the same ``requestid`` and a ``port`` header. Once both exist the pod-side
connection is dialled; on failure the reason goes on the error stream. Bytes are
copied both ways with half-close: the client's FIN on data shuts the pod side's
write half, the pod side's EOF ends the data stream. Each copy blocks while its
reader is slow, so memory stays bounded. Ending the connection ends every forward.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

from base.errors import PeapodError
from cri.streaming.channels import ProtocolViolation
from cri.streaming.spdy import (
    FLAG_FIN,
    GOAWAY,
    GOAWAY_OK,
    GOAWAY_PROTOCOL_ERROR,
    PING,
    RST_PROTOCOL_ERROR,
    RST_STREAM,
    SYN_STREAM,
    SpdyConnection,
)

log = logging.getLogger("peapod.streaming")

Dial = Callable[[int], socket.socket]
_READ = 32 * 1024
_JOIN = 1.0


class _Forward:
    """One pod-side TCP connection and its data/error stream pair."""

    def __init__(self, sock: socket.socket, data_id: int, error_id: int) -> None:
        self.sock = sock
        self.data_id = data_id
        self.error_id = error_id
        self.client_done = False
        self.pod_done = False
        self.lock = threading.Lock()

    def end(self, which: str) -> bool:
        """Mark one direction finished; True when both are (then the socket is closed)."""
        with self.lock:
            setattr(self, which, True)
            both = self.client_done and self.pod_done
        if both:
            self.sock.close()
        return both


class SpdyPortForward:
    """Serves one port-forward connection until the client or the daemon ends it."""

    def __init__(self, conn: SpdyConnection, dial: Dial) -> None:
        self.conn = conn
        self.dial = dial
        self._last = 0
        self._halves: dict[str, dict[str, int]] = {}  # requestid -> streamtype -> stream id
        self._by_data: dict[int, _Forward] = {}
        self._threads: list[threading.Thread] = []

    def run(self) -> None:
        try:
            while (frame := self.conn.read_frame()) is not None:
                if not self._frame(*frame):
                    break
            self.conn.goaway(GOAWAY_OK, self._last)
        except ProtocolViolation as exc:
            log.debug("port-forward protocol error", extra={"error": str(exc)})
            self.conn.goaway(GOAWAY_PROTOCOL_ERROR, self._last)
        except OSError:
            pass
        finally:
            for fwd in list(self._by_data.values()):
                with contextlib.suppress(OSError):
                    fwd.sock.shutdown(socket.SHUT_RDWR)
            for t in self._threads:
                t.join(_JOIN)
            for fwd in self._by_data.values():
                fwd.sock.close()

    def _frame(self, control: bool, kind: int, flags: int, payload: bytes) -> bool:
        if not control:
            fwd = self._by_data.get(kind)
            if fwd is not None:
                self._to_pod(fwd, payload, bool(flags & FLAG_FIN))
            return True
        if kind == SYN_STREAM:
            stream_id, headers = self.conn.syn_stream(payload, self._last)
            self._last = stream_id
            self._open(stream_id, headers)
        elif kind == RST_STREAM and len(payload) >= 4:
            fwd = self._by_data.pop(struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF, None)
            if fwd is not None:
                with contextlib.suppress(OSError):
                    fwd.sock.shutdown(socket.SHUT_RDWR)
        elif kind == PING and len(payload) == 4:
            self.conn.send_control(PING, 0, payload)
        elif kind == GOAWAY:
            return False
        return True

    def _open(self, stream_id: int, headers: dict[str, str]) -> None:
        kind, port, request = headers.get("streamtype"), headers.get("port", ""), headers.get(
            "requestid", "")  # fmt: skip
        if kind not in ("data", "error") or not port.isdigit() or not 1 <= int(port) <= 65535:
            self.conn.reset(stream_id, RST_PROTOCOL_ERROR)
            return
        if not request:  # old clients: the error stream's id, the data stream's id - 2
            request = str(stream_id if kind == "error" else stream_id - 2)
        self.conn.syn_reply(stream_id)
        half = self._halves.setdefault(request, {})
        if kind in half or len(self._halves) > 1000:
            self.conn.reset(stream_id, RST_PROTOCOL_ERROR)
            return
        half[kind] = stream_id
        if len(half) == 2:
            del self._halves[request]
            self._connect(int(port), half["data"], half["error"])

    def _connect(self, port: int, data_id: int, error_id: int) -> None:
        try:
            sock = self.dial(port)
        except PeapodError as exc:
            text = f"error forwarding port {port} to pod: {exc}"
            with contextlib.suppress(OSError):
                self.conn.data(error_id, text.encode(), fin=True)
                self.conn.data(data_id, b"", fin=True)
            return
        fwd = _Forward(sock, data_id, error_id)
        self._by_data[data_id] = fwd
        t = threading.Thread(target=self._from_pod, args=(fwd,), name="portforward", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _to_pod(self, fwd: _Forward, data: bytes, fin: bool) -> None:
        """Client bytes to the pod side (blocking: a slow pod reader stalls the client)."""
        try:
            if data:
                fwd.sock.sendall(data)
            if fin:
                fwd.sock.shutdown(socket.SHUT_WR)
        except OSError:
            fin = True
        if fin and fwd.end("client_done"):
            self._by_data.pop(fwd.data_id, None)

    def _from_pod(self, fwd: _Forward) -> None:
        while True:
            try:
                data = fwd.sock.recv(_READ)
            except OSError:
                data = b""
            try:
                self.conn.data(fwd.data_id, data, fin=not data)
                if not data:
                    self.conn.data(fwd.error_id, b"", fin=True)
            except OSError:
                data = b""
            if not data:
                break
        if fwd.end("pod_done"):
            self._by_data.pop(fwd.data_id, None)
