"""The NRI socket: its mode, stale and foreign sockets, and leaving nothing behind."""

from __future__ import annotations

import socket
import stat
import threading
from pathlib import Path

from nri.listener import Listener


def test_serves_with_its_mode_and_removes_socket_and_the_dir_it_made(tmp_path: Path) -> None:
    path = tmp_path / "made" / "nri.sock"
    got: list[socket.socket] = []
    accepted = threading.Event()
    listener = Listener(str(path), 0o660, lambda s: (got.append(s), accepted.set()))
    assert listener.start() and listener.serving and listener.problem == ""
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
        assert accepted.wait(5)
    got[0].close()
    listener.close()
    assert not path.exists() and not path.parent.exists()


def test_a_stale_socket_is_replaced_and_a_dir_it_did_not_make_stays(tmp_path: Path) -> None:
    path = tmp_path / "nri.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    listener = Listener(str(path), 0o600, lambda s: s.close())
    assert listener.start()
    listener.close()
    assert not path.exists() and tmp_path.is_dir()


def test_a_live_socket_of_another_process_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "nri.sock"
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    other.listen(1)
    try:
        listener = Listener(str(path), 0o600, lambda s: s.close())
        assert not listener.start()
        assert "served by another process" in listener.problem
        listener.close()
        assert path.exists()  # still the other's
    finally:
        other.close()


def test_a_file_that_is_no_socket_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "nri.sock"
    path.write_text("x")
    listener = Listener(str(path), 0o600, lambda s: s.close())
    assert not listener.start() and "is not a socket" in listener.problem
    assert path.read_text() == "x"


def test_close_leaves_a_socket_someone_else_bound_since(tmp_path: Path) -> None:
    path = tmp_path / "nri.sock"
    listener = Listener(str(path), 0o600, lambda s: s.close())
    assert listener.start()
    path.unlink()  # another runtime takes the path over (containerd does that)
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(path))
    try:
        listener.close()
        assert path.exists()
    finally:
        other.close()
