"""Parsing conmon's sync-pipe messages over real socketpairs."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from base.errors import DeadlineExceeded, Internal
from conmon.sync_pipe import (
    SyncMessage,
    SyncReader,
    parse_sync_message,
    runtime_error_text,
)


def test_parse_pid_exit_code_and_failure() -> None:
    assert parse_sync_message(b'{"pid": 1234}') == SyncMessage("pid", 1234)
    assert parse_sync_message(b'{"exit_code": 3}') == SyncMessage("exit_code", 3)
    failed = parse_sync_message(b'{"pid": -1, "message": "boom \\"x\\"\\n"}')
    assert failed.failed and failed.message == 'boom "x"\n'
    assert not parse_sync_message(b'{"data": 0}').failed


@pytest.mark.parametrize("bad", [b"", b"nope", b"[1]", b'{"pid": "1"}', b'{"x": 1}', b"\xff"])
def test_parse_rejects_garbage(bad: bytes) -> None:
    with pytest.raises(Internal):
        parse_sync_message(bad)


def test_reader_reassembles_split_writes_and_keeps_the_rest() -> None:
    parent, child = socket.socketpair()
    with parent, child:
        reader = SyncReader(parent)

        def write() -> None:
            for piece in (b'{"pi', b'd": 4', b'2}\n{"exit_code"', b": 0}\n"):
                child.sendall(piece)
                time.sleep(0.01)

        t = threading.Thread(target=write)
        t.start()
        assert reader.read(time.monotonic() + 5, "pid") == SyncMessage("pid", 42)
        assert reader.read(time.monotonic() + 5, "exit") == SyncMessage("exit_code", 0)
        t.join()


def test_reader_eof_and_unterminated_last_message() -> None:
    parent, child = socket.socketpair()
    with parent:
        child.sendall(b'{"pid": 7}')
        child.close()
        reader = SyncReader(parent)
        assert reader.read(time.monotonic() + 1, "pid") == SyncMessage("pid", 7)
        assert reader.read(time.monotonic() + 1, "pid") is None


def test_reader_deadline() -> None:
    parent, child = socket.socketpair()
    with parent, child:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="the pid"):
            SyncReader(parent).read(t0 + 0.2, "the pid")
        assert 0.15 < time.monotonic() - t0 < 2


def test_runtime_error_text_extracts_logfmt_messages() -> None:
    raw = (
        'time="2026-01-01T00:00:00Z" level=warning msg="first \\"a\\""\n'
        'time="2026-01-01T00:00:00Z" level=error msg="runc create failed: stat /x: no such file"\n'
    )
    assert runtime_error_text(raw) == 'first "a"; runc create failed: stat /x: no such file'
    assert runtime_error_text("  plain text\n") == "plain text"
