"""The notify protocol on a socket the test binds, and the watchdog's rate and health gate."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.sd_notify import Notifier
from cri.watchdog import Watchdog


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    yield str(path), sock
    sock.close()


def fields(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())


def test_from_environment_takes_the_variables_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_environment()
    assert n.address == "/run/systemd/notify" and n.watchdog_interval == 1.5
    assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & set(os.environ)


@pytest.mark.parametrize(("usec", "pid", "interval"), [
    ("3000000", "1", 0.0),  # the watchdog is some other process's
    ("soon", "", 0.0),
    ("", "", 0.0),
    ("200000", "", 0.1),
])  # fmt: skip
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str, pid: str, interval: float
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/x")
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    monkeypatch.setenv("WATCHDOG_PID", pid)
    assert Notifier.from_environment().watchdog_interval == interval


def test_without_a_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    n = Notifier.from_environment()
    assert not n.enabled and n.watchdog_interval == 0 and n.ready("x") is False


def test_messages_on_a_path_socket(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    n = Notifier(path)
    assert n.ready("serving")
    assert fields(sock) == {"READY": "1", "STATUS": "serving", "MAINPID": str(os.getpid())}
    assert n.reloading()
    got = fields(sock)
    assert got["RELOADING"] == "1" and int(got["MONOTONIC_USEC"]) > 0
    assert n.stopping("bye") and fields(sock) == {"STOPPING": "1", "STATUS": "bye"}
    assert n.watchdog() and fields(sock) == {"WATCHDOG": "1"}


def test_abstract_socket() -> None:
    name = f"peapod-unit-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).watchdog()
        assert fields(sock) == {"WATCHDOG": "1"}


def test_an_absent_listener_is_logged_not_raised(tmp_path: Path) -> None:
    assert Notifier(str(tmp_path / "nobody")).ready("x") is False


def pings(sock: socket.socket, seconds: float) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if fields(sock) == {"WATCHDOG": "1"}:
                out.append(time.monotonic())
        except TimeoutError:
            break
    return out


def test_watchdog_pings_at_half_the_usec_while_the_check_passes(
    listener: tuple[str, socket.socket],
) -> None:
    path, sock = listener
    healthy = threading.Event()
    healthy.set()
    checks: list[float] = []

    def check(timeout: float) -> bool:
        checks.append(timeout)
        return healthy.is_set()

    dog = Watchdog(Notifier(path, watchdog_usec=200_000), check)
    dog.start()
    try:
        got = pings(sock, 1.0)
        assert 8 <= len(got) <= 12, got  # every 0.1 s
        assert set(checks) == {0.05}  # a check may take half the interval
        healthy.clear()
        time.sleep(0.15)  # a check under way may still ping
        assert pings(sock, 0.5) == []
        healthy.set()
        assert len(pings(sock, 0.5)) >= 3
    finally:
        dog.stop()
    assert pings(sock, 0.3) == []


def test_no_watchdog_thread_without_watchdog_usec(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    dog = Watchdog(Notifier(path), lambda _t: True)
    dog.start()
    assert pings(sock, 0.3) == []
    dog.stop()
