"""ttrpc (containerd/ttrpc), unary calls only: message framing, a client and a server.

A message is a 10-byte header (data length uint32, stream id uint32, type byte,
flags byte, big-endian) and its data: a ``ttrpc.Request`` (type 1) or a
``ttrpc.Response`` (type 2) protobuf. Clients use odd stream ids; a response carries
the id of its request. Data longer than 4 MiB is refused. NRI makes unary calls
only, so streams (type 3, or requests flagged as non-unary) are protocol errors.

This module sees bytes in and bytes out; ``nri.mux`` carries them. Any breach of
the protocol raises ``ProtocolError``, which ends the whole connection.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from api import ttrpc_pb2

log = logging.getLogger("peapod.nri")

HEADER = struct.Struct(">IIBB")
MAX_DATA = 4 << 20
REQUEST, RESPONSE, DATA = 1, 2, 3

# gRPC status codes as ttrpc carries them.
OK = 0
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
FAILED_PRECONDITION = 9
UNIMPLEMENTED = 12
INTERNAL = 13


class ProtocolError(Exception):
    """The peer broke the ttrpc protocol; the connection must end."""


class ConnectionClosed(Exception):
    """The connection ended before the call was answered."""


class CallTimedOut(Exception):
    """No answer within the call's timeout."""


class CallFailed(Exception):
    """The peer answered with a non-OK status (or a handler refuses with one)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Message:
    stream_id: int
    type: int
    flags: int
    data: bytes


def encode(stream_id: int, type_: int, data: bytes, flags: int = 0) -> bytes:
    """One message, header and data."""
    if len(data) > MAX_DATA:
        raise ProtocolError(f"message of {len(data)} bytes exceeds ttrpc's {MAX_DATA}")
    return HEADER.pack(len(data), stream_id, type_, flags) + data


class MessageReader:
    """Cuts a logical connection's byte stream into messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Take more bytes; return the messages now complete."""
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER.size:
            length, stream_id, type_, flags = HEADER.unpack_from(self._buf)
            if length > MAX_DATA:
                raise ProtocolError(
                    f"oversized message: {length} bytes, more than ttrpc's {MAX_DATA}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            out.append(Message(stream_id, type_, flags, bytes(self._buf[HEADER.size:end])))
            del self._buf[:end]
        return out


class _Pending:
    """One call waiting for its response."""

    __slots__ = ("done", "error", "response")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.response: ttrpc_pb2.Response | None = None
        self.error: Exception | None = None


class Client:
    """Makes unary calls over one logical connection; ``receive`` is its byte sink."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self._reader = MessageReader()
        self._ids = itertools.count(1, 2)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._closed: str = ""

    def call(self, service: str, method: str, payload: bytes, timeout: float) -> bytes:
        """The response payload; CallFailed, CallTimedOut or ConnectionClosed otherwise."""
        req = ttrpc_pb2.Request(service=service, method=method, payload=payload,
                                timeout_nano=int(timeout * 1e9))
        data = req.SerializeToString()
        if len(data) > MAX_DATA:
            raise CallFailed(8, f"{method} request of {len(data)} bytes exceeds ttrpc's "
                                f"{MAX_DATA}")  # 8: RESOURCE_EXHAUSTED, as ttrpc says
        slot = _Pending()
        with self._lock:
            if self._closed:
                raise ConnectionClosed(self._closed)
            stream_id = next(self._ids)
            self._pending[stream_id] = slot
        try:
            try:
                self._send(encode(stream_id, REQUEST, data))
            except Exception as exc:
                raise ConnectionClosed(str(exc) or "connection closed") from None
            if not slot.done.wait(timeout):
                raise CallTimedOut(f"{method} got no answer within {timeout:g} s")
        finally:
            with self._lock:
                self._pending.pop(stream_id, None)
        if slot.error is not None:
            raise slot.error
        resp = slot.response
        assert resp is not None
        if resp.HasField("status") and resp.status.code != OK:
            raise CallFailed(resp.status.code, resp.status.message)
        return resp.payload

    @property
    def busy(self) -> bool:
        """Whether a call is waiting for its answer."""
        with self._lock:
            return bool(self._pending)

    def receive(self, data: bytes) -> None:
        for msg in self._reader.feed(data):
            if msg.type != RESPONSE:
                raise ProtocolError(f"unexpected ttrpc message type {msg.type} on the "
                                    "plugin's service connection (only responses may come)")
            try:
                resp = ttrpc_pb2.Response.FromString(msg.data)
            except DecodeError as exc:
                raise ProtocolError(f"malformed ttrpc response: {exc}") from None
            with self._lock:
                slot = self._pending.get(msg.stream_id)
            if slot is None:
                continue  # the caller gave up on it (timeout)
            slot.response = resp
            slot.done.set()

    def close(self, reason: str) -> None:
        """Fail every call in flight and every later one with ConnectionClosed(reason)."""
        with self._lock:
            self._closed = self._closed or reason or "connection closed"
            pending = list(self._pending.values())
        for slot in pending:
            slot.error = ConnectionClosed(self._closed)
            slot.done.set()


Handler = Callable[[bytes], bytes]


class Server:
    """Serves unary calls on one logical connection; ``receive`` is its byte sink.

    ``handlers`` maps (service, method) to a function from request payload to response
    payload, which may raise CallFailed to answer with that status. ``run`` executes a
    handler call off the reading thread (a thread per call, say). A call of an unknown
    method is answered UNIMPLEMENTED and then ends the connection.
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        handlers: dict[tuple[str, str], Handler],
        run: Callable[[Callable[[], None]], None],
    ) -> None:
        self._send = send
        self._handlers = handlers
        self._run = run
        self._reader = MessageReader()

    def receive(self, data: bytes) -> None:
        for msg in self._reader.feed(data):
            if msg.type != REQUEST or msg.flags != 0:
                raise ProtocolError(
                    f"unexpected ttrpc message (type {msg.type}, flags {msg.flags}) on the "
                    "runtime's service connection (only unary requests may come)")
            if msg.stream_id % 2 == 0:
                raise ProtocolError(f"request with even stream id {msg.stream_id}")
            try:
                req = ttrpc_pb2.Request.FromString(msg.data)
            except DecodeError as exc:
                raise ProtocolError(f"malformed ttrpc request: {exc}") from None
            handler = self._handlers.get((req.service, req.method))
            if handler is None:
                self._reply(msg.stream_id, status=(UNIMPLEMENTED, f"{req.service}/{req.method} "
                                                   "is not a method peapod serves"))
                raise ProtocolError(f"called unknown method {req.service}/{req.method}")
            self._run(lambda h=handler, r=req, s=msg.stream_id: self._serve(h, r, s))

    def _serve(self, handler: Handler, req: ttrpc_pb2.Request, stream_id: int) -> None:
        try:
            payload = handler(req.payload)
        except CallFailed as exc:
            self._reply(stream_id, status=(exc.code, exc.message))
        except Exception as exc:
            log.exception("an NRI runtime-service handler failed", extra={"method": req.method})
            self._reply(stream_id, status=(INTERNAL, f"{req.method} failed in peapod: {exc}"))
        else:
            self._reply(stream_id, payload=payload)

    def _reply(self, stream_id: int, payload: bytes = b"",
               status: tuple[int, str] | None = None) -> None:
        resp = ttrpc_pb2.Response(payload=payload)
        if status is not None:
            resp.status.code, resp.status.message = status
        try:
            self._send(encode(stream_id, RESPONSE, resp.SerializeToString()))
        except Exception as exc:  # the connection is going away; its close says why
            log.debug("could not answer an NRI call", extra={"error": str(exc)})
