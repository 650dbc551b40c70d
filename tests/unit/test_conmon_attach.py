"""The attach client against a SOCK_SEQPACKET server playing conmon."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from base.errors import DeadlineExceeded, NotFound
from conmon.attach import MAX_STDIN_PACKET, STDERR, STDOUT, attach


class FakeConmon:
    """Accepts one client, sends two packets, collects stdin until EOF."""

    def __init__(self, path: Path) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dir_fd = os.open(path.parent, os.O_PATH)
        try:  # bind like conmon does, so long paths work too
            self.listener.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        finally:
            os.close(dir_fd)
        self.listener.listen(1)
        self.packets: list[bytes] = []
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.send(b"\x02hello")
            conn.send(b"\x03oops")
            while data := conn.recv(1 << 20):
                self.packets.append(data)
            self.release.wait(5)

    def close(self) -> None:
        self.release.set()
        self.thread.join()
        self.listener.close()


@pytest.mark.parametrize("deep", [False, True], ids=["short-path", "long-path"])
def test_attach_roundtrip(tmp_path: Path, deep: bool) -> None:
    d = tmp_path / ("x" * 60 if deep else "s") / ("y" * 60 if deep else "c")
    d.mkdir(parents=True)
    path = d / "attach"
    assert (len(str(path)) >= 108) == deep
    server = FakeConmon(path)
    try:
        with attach(str(path)) as conn:
            assert conn.recv(timeout=5) == (STDOUT, b"hello")
            assert conn.recv(timeout=5) == (STDERR, b"oops")
            data = os.urandom(MAX_STDIN_PACKET * 2 + 10)
            conn.send_stdin(data)
            conn.close_stdin()
            server.release.set()
            assert conn.recv(timeout=5) is None
    finally:
        server.close()
    assert b"".join(server.packets) == data
    assert [len(p) for p in server.packets] == [MAX_STDIN_PACKET, MAX_STDIN_PACKET, 10]


def test_recv_timeout(tmp_path: Path) -> None:
    server = FakeConmon(tmp_path / "attach")
    try:
        with attach(str(tmp_path / "attach")) as conn:
            conn.recv(5)
            conn.recv(5)
            with pytest.raises(DeadlineExceeded):
                conn.recv(timeout=0.1)
    finally:
        server.close()


def test_missing_socket(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="conmon"):
        attach(str(tmp_path / "nothing" / "attach"))
