"""One plugin connection carrying two logical connections (containerd/nri's multiplexer).

Every frame on the socket is a connection id (uint32, big-endian), a payload length
(uint32) and the payload. Connection 1 carries the plugin's service (peapod is the
ttrpc client), connection 2 the runtime's (peapod serves it). Each logical connection
is a byte stream: a ttrpc message may span several frames.

peapod writes each ttrpc message as the Go side's buffered writer does: a first frame
of at most ``FRAME_OUT`` (4 KiB) bytes, then the rest in one frame. Those are the shapes
the Go reader takes: it reads a message's start into a 4 KiB buffer (a longer frame
there fails with ENOMEM) and its rest straight into the message, and it queues at most
256 frames per logical connection (a flood of small frames would overflow that and end
the connection). Frames peapod reads may be as long as the Go side writes (a whole
ttrpc message and its header); anything longer is a malformed frame and ends the
connection, as does any error a consumer raises. One reader thread per
connection; writers share a lock, and a send that makes no progress for
``SEND_TIMEOUT`` seconds ends the connection, so nothing waits forever.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable

log = logging.getLogger("peapod.nri")

PLUGIN_CONN = 1  # the plugin's service: peapod calls
RUNTIME_CONN = 2  # the runtime's service: the plugin calls
HEADER = struct.Struct(">II")  # connection id, payload length
MAX_FRAME_IN = 10 + (4 << 20)  # a ttrpc header and its largest message
FRAME_OUT = 4096  # the Go reader's buffer: a message's first frame must fit in it
SEND_TIMEOUT = 10.0


class MuxClosed(Exception):
    """The connection is closed; ``reason`` says why."""


class Mux:
    """The frame layer of one plugin connection.

    ``sinks`` maps each logical connection id to the consumer of its bytes; frames for
    other ids are dropped, as upstream does. ``on_close`` is called once, with the
    reason, when the connection ends for any cause.
    """

    def __init__(
        self,
        sock: socket.socket,
        sinks: dict[int, Callable[[bytes], None]],
        on_close: Callable[[str], None],
        thread_name: str = "nri-mux",
    ) -> None:
        self.sock = sock
        self.sinks = sinks
        self.on_close = on_close
        self.reason = ""
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._closed = False
        seconds = int(SEND_TIMEOUT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", seconds, int((SEND_TIMEOUT - seconds) * 1e6)))
        self._reader = threading.Thread(target=self._read_loop, name=thread_name, daemon=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def start(self) -> None:
        """Start reading frames."""
        self._reader.start()

    def send(self, conn_id: int, data: bytes) -> None:
        """Write one message, ``data``, to logical connection ``conn_id``; MuxClosed if that
        fails. Its first FRAME_OUT bytes go in one frame, the rest in as few as may be."""
        frames = bytearray()
        view = memoryview(data)
        start, size = 0, FRAME_OUT
        while start < len(data):
            chunk = view[start:start + size]
            frames += HEADER.pack(conn_id, len(chunk))
            frames += chunk
            start, size = start + len(chunk), MAX_FRAME_IN
        if self._closed:
            raise MuxClosed(self.reason)
        try:
            with self._send_lock:
                self.sock.sendall(frames)
        except OSError as exc:
            reason = f"writing to the plugin failed: {exc.strerror or exc}"
            self.close(reason)
            raise MuxClosed(self.reason) from None

    def close(self, reason: str) -> None:
        """End the connection (idempotent); the first reason is kept."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            self.reason = reason
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader, which closes the socket
        if not self._reader.is_alive() and self._reader.ident is None:
            self.sock.close()  # never started: nobody else will
        try:
            self.on_close(reason)
        except Exception:
            log.exception("handling a closed NRI connection failed")

    def _read_exact(self, size: int) -> bytes | None:
        """``size`` bytes, or None at end of stream."""
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = self.sock.recv_into(view[got:])
            if n == 0:
                return None
            got += n
        return bytes(buf)

    def _read_loop(self) -> None:
        reason = "connection closed by the plugin"
        try:
            while not self._closed:
                head = self._read_exact(HEADER.size)
                if head is None:
                    break
                conn_id, length = HEADER.unpack(head)
                if length > MAX_FRAME_IN:
                    reason = (f"malformed frame: {length} bytes for connection {conn_id}, "
                              f"more than the {MAX_FRAME_IN} a frame may carry")
                    break
                payload = self._read_exact(length) if length else b""
                if payload is None:
                    reason = "connection closed by the plugin in the middle of a frame"
                    break
                sink = self.sinks.get(conn_id)
                if sink is not None and payload:
                    sink(payload)
        except ConnectionResetError:
            reason = "connection closed by the plugin (reset)"
        except OSError as exc:
            reason = f"reading from the plugin failed: {exc.strerror or exc}"
        except Exception as exc:  # a sink refused what the plugin sent
            reason = str(exc) or type(exc).__name__
        self.close(reason)
        self.sock.close()
