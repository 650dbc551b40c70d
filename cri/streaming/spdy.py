"""SPDY/3.1 framing and a remotecommand session's streams over it.

Frames are big-endian: control ``1|version(15)|type(16)|flags(8)|length(24)``, data
``0|stream-id(31)|flags(8)|length(24)``. Header blocks are zlib-compressed with the
SPDY/3 dictionary, one zlib stream per direction. Kubernetes peers never send or honour
WINDOW_UPDATE, so back-pressure is TCP's: each send blocks while the client does not read.
A frame over ``MAX_FRAME`` bytes or a header block inflating past ``MAX_HEADERS`` ends the
session with GOAWAY(PROTOCOL_ERROR) and a message on the error stream when there is one.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import zlib
from typing import Protocol

from cri.streaming.channels import NAMES, ProtocolViolation
from cri.streaming.spdy_dictionary import DICTIONARY

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1, 2, 3, 4, 6, 7, 8, 9)  # fmt: skip
FLAG_FIN = 1
RST_PROTOCOL_ERROR, RST_CANCEL = 1, 5
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR = 0, 1
MAX_FRAME = 1 << 20
MAX_HEADERS = 1 << 20
_OUT_CHUNK = 32 * 1024
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
REMOTECOMMAND_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io",
                           "v2.channel.k8s.io", "channel.k8s.io")  # fmt: skip


def encode_headers(pairs: list[tuple[str, str]]) -> bytes:
    """An uncompressed header block."""
    out = [struct.pack(">I", len(pairs))]
    for k, v in pairs:
        kb, vb = k.encode(), v.encode()
        out += [struct.pack(">I", len(kb)), kb, struct.pack(">I", len(vb)), vb]
    return b"".join(out)


def decode_headers(block: bytes) -> dict[str, str]:
    """Parse an uncompressed header block; ProtocolViolation when malformed."""
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        if count > 1000:
            raise ProtocolViolation(f"header block has {count} pairs (at most 1000)")
        pos, out = 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", block, pos)
            name = block[pos + 4 : pos + 4 + n].decode()
            pos += 4 + n
            (m,) = struct.unpack_from(">I", block, pos)
            value = block[pos + 4 : pos + 4 + m].decode()
            pos += 4 + m
            if pos > len(block) or not name or name != name.lower() or name in out:
                raise ProtocolViolation(f"malformed header block (name {name[:40]!r})")
            out[name] = value
        return out
    except (struct.error, UnicodeDecodeError):
        raise ProtocolViolation("malformed header block") from None


class ByteStream(Protocol):
    """What SPDY runs over: a TCP/TLS socket, or a WebSocket tunnel's byte pipe."""

    def recv(self, size: int) -> bytes: ...

    def sendall(self, data: bytes) -> None: ...


class SpdyConnection:
    """One SPDY/3.1 connection (server side): frame reading and serialized writing."""

    def __init__(self, sock: socket.socket | ByteStream) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                         DICTIONARY)  # fmt: skip
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._buf = bytearray()
        self.closed = False

    # ---- reading
    def _read(self, n: int) -> bytes | None:
        while len(self._buf) < n:
            try:
                data = self.sock.recv(max(65536, n - len(self._buf)))
            except OSError:
                return None
            if not data:
                return None
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def read_frame(self) -> tuple[bool, int, int, bytes] | None:
        """``(control, type or stream id, flags, payload)``; None at end of connection."""
        head = self._read(8)
        if head is None:
            return None
        word, flags_len = struct.unpack(">II", head)
        flags, length = flags_len >> 24, flags_len & 0xFFFFFF
        control = bool(word & 0x80000000)
        if control and (word >> 16) & 0x7FFF != 3:
            raise ProtocolViolation(f"unsupported SPDY version {(word >> 16) & 0x7FFF} (want 3)")
        if length > MAX_FRAME:
            raise ProtocolViolation(f"SPDY frame of {length} bytes exceeds {MAX_FRAME}")
        payload = self._read(length) if length else b""
        if payload is None:
            return None
        return control, (word & 0xFFFF) if control else (word & 0x7FFFFFFF), flags, payload

    def inflate(self, block: bytes) -> dict[str, str]:
        try:
            raw = self._inflate.decompress(block, MAX_HEADERS)
        except zlib.error as exc:
            raise ProtocolViolation(f"header block does not decompress: {exc}") from None
        if self._inflate.unconsumed_tail:
            raise ProtocolViolation(f"header block inflates past {MAX_HEADERS} bytes")
        return decode_headers(raw)

    # ---- writing
    def _control(self, kind: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8003, kind, (flags << 24) | len(payload)) + payload

    def send_control(self, kind: int, flags: int, payload: bytes) -> None:
        with self._lock:
            if not self.closed:
                self.sock.sendall(self._control(kind, flags, payload))

    def syn_reply(self, stream_id: int) -> None:
        with self._lock:
            block = self._deflate.compress(encode_headers([])) + self._deflate.flush(
                zlib.Z_SYNC_FLUSH)  # fmt: skip
            if not self.closed:
                self.sock.sendall(self._control(SYN_REPLY, 0, struct.pack(">I", stream_id) + block))

    def data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        view = memoryview(data)
        with self._lock:
            while not self.closed:
                chunk, view = view[:_OUT_CHUNK], view[_OUT_CHUNK:]
                last = not view
                flags = FLAG_FIN if fin and last else 0
                self.sock.sendall(struct.pack(">II", stream_id, (flags << 24) | len(chunk)) + chunk)
                if last:
                    return

    def reset(self, stream_id: int, status: int) -> None:
        with contextlib.suppress(OSError):
            self.send_control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def syn_stream(self, payload: bytes, last: int) -> tuple[int, dict[str, str]]:
        """A client SYN_STREAM's id and headers; ids must be odd and increasing."""
        if len(payload) < 10:
            raise ProtocolViolation("SYN_STREAM frame too short")
        stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
        if stream_id <= last or stream_id % 2 == 0:
            raise ProtocolViolation(f"bad stream id {stream_id}")
        return stream_id, self.inflate(payload[10:])

    def goaway(self, status: int, last_stream: int) -> None:
        with self._lock:
            if not self.closed:
                with contextlib.suppress(OSError):
                    self.sock.sendall(self._control(GOAWAY, 0, struct.pack(">II", last_stream,
                                                                           status)))  # fmt: skip
                self.closed = True


class SpdyChannels:
    """remotecommand's streams (by ``streamtype``) over a SPDY connection."""

    def __init__(self, conn: SpdyConnection, protocol: str) -> None:
        self.conn = conn
        self.json_status = protocol.startswith(("v4.", "v5."))
        self._by_channel: dict[int, int] = {}
        self._by_stream: dict[int, int] = {}
        self._pending: list[tuple[int, bytes]] = []
        self._last = 0

    def wait_streams(self, expected: int, timeout: float = 30.0) -> None:
        """Read until the client opened ``expected`` streams; ProtocolViolation on timeout."""
        deadline = time.monotonic() + timeout
        sock = self.conn.sock
        assert isinstance(sock, socket.socket)
        idle = sock.gettimeout()
        sock.settimeout(timeout)
        try:
            while len(self._by_channel) < expected:
                if time.monotonic() > deadline or not self._step():
                    raise ProtocolViolation(
                        f"the client opened {len(self._by_channel)} of {expected} streams")
        except TimeoutError:
            raise ProtocolViolation(
                f"the client opened {len(self._by_channel)} of {expected} streams in "
                f"{timeout:g}s") from None  # fmt: skip
        finally:
            sock.settimeout(idle)

    def _step(self) -> bool:
        """Handle one frame; False at end of connection."""
        frame = self.conn.read_frame()
        if frame is None:
            return False
        control, kind, flags, payload = frame
        if not control:
            channel = self._by_stream.get(kind)
            if channel is not None:
                if payload:
                    self._pending.append((channel, payload))
                if flags & FLAG_FIN:
                    self._pending.append((channel, b""))
            return True
        if kind == SYN_STREAM:
            stream_id, headers = self.conn.syn_stream(payload, self._last)
            self._last = stream_id
            channel = NAMES.get(headers.get("streamtype", ""))
            if channel is None or channel in self._by_channel:
                self.conn.send_control(RST_STREAM, 0, struct.pack(">II", stream_id,
                                                                  RST_PROTOCOL_ERROR))  # fmt: skip
                return True
            self._by_channel[channel] = stream_id
            self._by_stream[stream_id] = channel
            self.conn.syn_reply(stream_id)
        elif kind == PING and len(payload) == 4:
            self.conn.send_control(PING, 0, payload)
        elif kind == GOAWAY:
            return False
        return True

    def recv(self) -> tuple[int, bytes] | None:
        while not self._pending:
            if not self._step():
                return None
        return self._pending.pop(0)

    def send(self, channel: int, data: bytes) -> None:
        stream_id = self._by_channel.get(channel)
        if stream_id is not None and data:
            self.conn.data(stream_id, data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            for channel in (1, 2, 3):
                if channel in self._by_channel:
                    self.conn.data(self._by_channel[channel], b"", fin=True)
        self.conn.goaway(GOAWAY_OK, self._last)

    def abort(self, reason: str) -> None:
        with contextlib.suppress(OSError):
            self.send(3, reason.encode())
        self.conn.goaway(GOAWAY_PROTOCOL_ERROR, self._last)
