"""NRI's transport: the multiplexer's frames and ttrpc calls over them, good and bad."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from api import ttrpc_pb2
from nri import mux, ttrpc
from nri.connection import Connection

SERVICE = "test.Echo"


class Closes:
    """Records on_close reasons."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.event = threading.Event()

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.event.set()

    def wait(self, timeout: float = 5.0) -> str:
        assert self.event.wait(timeout), "the connection did not close"
        return self.reasons[0]


def runtime_side(sock: socket.socket, handlers: dict | None = None) -> tuple[Connection, Closes]:
    closes = Closes()
    conn = Connection(sock, mux.PLUGIN_CONN, mux.RUNTIME_CONN, handlers or {}, closes)
    conn.start()
    return conn, closes


def plugin_side(sock: socket.socket, handlers: dict | None = None) -> tuple[Connection, Closes]:
    closes = Closes()
    conn = Connection(sock, mux.RUNTIME_CONN, mux.PLUGIN_CONN, handlers or {}, closes)
    conn.start()
    return conn, closes


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    for s in (a, b):
        s.close()


def frame(conn_id: int, payload: bytes) -> bytes:
    return struct.pack(">II", conn_id, len(payload)) + payload


def request(stream_id: int, method: str, payload: bytes = b"", service: str = SERVICE) -> bytes:
    data = ttrpc_pb2.Request(service=service, method=method, payload=payload).SerializeToString()
    return ttrpc.encode(stream_id, ttrpc.REQUEST, data)


def read_frames(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    sock.settimeout(5)
    out = []
    buf = b""
    while len(out) < count:
        while len(buf) < 8:
            buf += sock.recv(65536)
        conn_id, length = struct.unpack(">II", buf[:8])
        while len(buf) < 8 + length:
            buf += sock.recv(65536)
        out.append((conn_id, buf[8:8 + length]))
        buf = buf[8 + length:]
    return out


def test_calls_both_ways_with_a_message_spanning_many_frames(pair) -> None:
    big = bytes(range(256)) * 1000  # 256000 bytes: 63 frames
    runtime, _ = runtime_side(pair[0], {(SERVICE, "Echo"): lambda p: p[::-1]})
    plugin, _ = plugin_side(pair[1], {(SERVICE, "Echo"): lambda p: p.upper()})
    assert runtime.client.call(SERVICE, "Echo", b"abc", 2) == b"ABC"
    assert plugin.client.call(SERVICE, "Echo", big, 2) == big[::-1]
    runtime.close("done")
    plugin.close("done")


def test_a_message_goes_as_a_first_frame_of_4096_bytes_and_one_more(pair) -> None:
    runtime, _ = runtime_side(pair[0])
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            runtime.client.call(SERVICE, "X", b"y" * 10000, 0.5)
        except ttrpc.CallTimedOut as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    frames = read_frames(pair[1], 2)
    assert len(frames[0][1]) == 4096 and 10000 < 4096 + len(frames[1][1]) < 10100
    assert {c for c, _ in frames} == {mux.PLUGIN_CONN}
    msg = ttrpc.MessageReader().feed(b"".join(p for _, p in frames))[0]
    assert msg.type == ttrpc.REQUEST and msg.stream_id == 1
    req = ttrpc_pb2.Request.FromString(msg.data)
    assert (req.service, req.method, len(req.payload)) == (SERVICE, "X", 10000)
    assert req.timeout_nano == 500_000_000
    caller.join(5)
    assert outcome, "the unanswered call did not time out"
    runtime.close("done")


def test_a_message_split_anywhere_across_frames_is_reassembled(pair) -> None:
    got = threading.Event()
    runtime, _ = runtime_side(pair[0], {(SERVICE, "Ping"): lambda p: got.set() or b"pong"})
    data = request(1, "Ping", b"x" * 50)
    for i in range(0, len(data), 7):  # odd chunk sizes, header split too
        pair[1].sendall(frame(mux.RUNTIME_CONN, data[i:i + 7]))
    assert got.wait(5)
    (conn_id, payload), = read_frames(pair[1], 1)
    assert conn_id == mux.RUNTIME_CONN
    resp = ttrpc_pb2.Response.FromString(ttrpc.MessageReader().feed(payload)[0].data)
    assert resp.payload == b"pong" and resp.status.code == 0
    runtime.close("done")


def test_handler_refusal_reaches_the_caller_with_its_code(pair) -> None:
    def refuse(_: bytes) -> bytes:
        raise ttrpc.CallFailed(ttrpc.FAILED_PRECONDITION, "not now")

    _runtime, _ = runtime_side(pair[0], {(SERVICE, "No"): refuse})
    plugin, _ = plugin_side(pair[1])
    with pytest.raises(ttrpc.CallFailed) as info:
        plugin.client.call(SERVICE, "No", b"", 2)
    assert (info.value.code, info.value.message) == (ttrpc.FAILED_PRECONDITION, "not now")


def test_unknown_method_is_answered_unimplemented_then_the_connection_ends(pair) -> None:
    runtime, closes = runtime_side(pair[0])
    plugin, _ = plugin_side(pair[1])
    with pytest.raises((ttrpc.CallFailed, ttrpc.ConnectionClosed)) as info:
        plugin.client.call(SERVICE, "Nope", b"", 2)
    if isinstance(info.value, ttrpc.CallFailed):
        assert info.value.code == ttrpc.UNIMPLEMENTED
    assert "unknown method test.Echo/Nope" in closes.wait()
    assert runtime.closed


def test_frame_longer_than_any_message_is_malformed(pair) -> None:
    _runtime, closes = runtime_side(pair[0])
    pair[1].sendall(struct.pack(">II", mux.RUNTIME_CONN, mux.MAX_FRAME_IN + 1))
    assert "malformed frame" in closes.wait()


def test_message_over_4_mib_is_oversized(pair) -> None:
    _runtime, closes = runtime_side(pair[0])
    pair[1].sendall(frame(mux.RUNTIME_CONN, ttrpc.HEADER.pack((4 << 20) + 1, 1, 1, 0)))
    assert "oversized message" in closes.wait()


def test_garbage_request_is_malformed(pair) -> None:
    _runtime, closes = runtime_side(pair[0])
    pair[1].sendall(frame(mux.RUNTIME_CONN, ttrpc.encode(1, ttrpc.REQUEST, b"\xff\xff\xff")))
    assert "malformed ttrpc request" in closes.wait()


@pytest.mark.parametrize(("conn_id", "type_", "flags", "stream", "words"), [
    (mux.RUNTIME_CONN, ttrpc.DATA, 0, 1, "only unary requests"),
    (mux.RUNTIME_CONN, ttrpc.REQUEST, 2, 1, "only unary requests"),
    (mux.RUNTIME_CONN, ttrpc.REQUEST, 0, 2, "even stream id"),
    (mux.PLUGIN_CONN, ttrpc.REQUEST, 0, 1, "only responses"),
])
def test_messages_out_of_protocol_end_the_connection(pair, conn_id, type_, flags, stream,
                                                     words) -> None:
    _runtime, closes = runtime_side(pair[0])
    data = ttrpc_pb2.Request(service=SERVICE, method="Echo").SerializeToString()
    pair[1].sendall(frame(conn_id, ttrpc.encode(stream, type_, data, flags)))
    assert words in closes.wait()


def test_frames_for_unknown_connections_are_ignored(pair) -> None:
    runtime, closes = runtime_side(pair[0], {(SERVICE, "Echo"): lambda p: p})
    pair[1].sendall(frame(7, b"whatever") + frame(0, b"reserved"))
    pair[1].sendall(frame(mux.RUNTIME_CONN, request(1, "Echo", b"hi")))
    (_, payload), = read_frames(pair[1], 1)
    answer = ttrpc.MessageReader().feed(payload)[0].data
    assert ttrpc_pb2.Response.FromString(answer).payload == b"hi"
    assert not runtime.closed and not closes.reasons
    runtime.close("done")


def test_unanswered_call_times_out(pair) -> None:
    runtime, _ = runtime_side(pair[0])
    started = time.monotonic()
    with pytest.raises(ttrpc.CallTimedOut):
        runtime.client.call(SERVICE, "Slow", b"", 0.3)
    assert time.monotonic() - started < 2
    runtime.close("done")


def test_peer_closing_fails_the_call_in_flight_at_once(pair) -> None:
    runtime, closes = runtime_side(pair[0])
    threading.Timer(0.2, pair[1].close).start()
    started = time.monotonic()
    with pytest.raises(ttrpc.ConnectionClosed):
        runtime.client.call(SERVICE, "Never", b"", 10)
    assert time.monotonic() - started < 3
    assert "closed by the plugin" in closes.wait()
    with pytest.raises(ttrpc.ConnectionClosed):
        runtime.client.call(SERVICE, "After", b"", 1)


def test_late_response_after_a_timeout_is_dropped(pair) -> None:
    runtime, closes = runtime_side(pair[0])
    with pytest.raises(ttrpc.CallTimedOut):
        runtime.client.call(SERVICE, "Late", b"", 0.2)
    resp = ttrpc_pb2.Response(payload=b"late").SerializeToString()
    pair[1].sendall(frame(mux.PLUGIN_CONN, ttrpc.encode(1, ttrpc.RESPONSE, resp)))
    time.sleep(0.2)
    assert not runtime.closed and not closes.reasons
    runtime.close("done")
    assert closes.wait() == "done"


def test_close_is_reported_once_with_the_first_reason(pair) -> None:
    runtime, closes = runtime_side(pair[0])
    runtime.close("first")
    runtime.close("second")
    assert closes.wait() == "first"
    time.sleep(0.1)
    assert closes.reasons == ["first"]
