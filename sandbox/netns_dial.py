"""TCP connections to ``localhost:<port>`` inside a pod's network namespace, without forking.

A short-lived thread enters the namespace (setns on the pinned nsfs file), creates
and connects the socket, and exits; the socket stays in that namespace and works
from any thread. An empty namespace path dials the daemon's own (host) loopback.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading

from base.errors import FailedPrecondition, Unavailable

CLONE_NEWNET = 0x40000000
_LOOPBACKS = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
_libc = ctypes.CDLL(None, use_errno=True)


def dial_localhost(netns_path: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A connected socket to ``localhost:port`` in ``netns_path`` ("" = host).

    Tries 127.0.0.1, then ::1. Unavailable (with the reason) when nothing listens.
    """
    result: list[socket.socket | Exception] = []

    def work() -> None:
        try:
            if netns_path:
                enter_netns(netns_path)
            result.append(_connect(port, timeout))
        except Exception as exc:  # handed to the caller below
            result.append(exc)

    t = threading.Thread(target=work, name="netns-dial", daemon=True)
    t.start()
    t.join()
    out = result[0] if result else FailedPrecondition("the dialing thread died")
    if isinstance(out, Exception):
        raise out
    return out


def enter_netns(path: str) -> None:
    """Move the calling thread into the network namespace pinned at ``path``.

    Only for a thread that exits afterwards (or stays there): the thread does not
    come back to the host namespace. FailedPrecondition naming the cause.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise FailedPrecondition(f"cannot open network namespace {path}: {exc.strerror}") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise FailedPrecondition(f"cannot enter network namespace {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _connect(port: int, timeout: float) -> socket.socket:
    reasons = []
    for family, host in _LOOPBACKS:
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError as exc:
            sock.close()
            reasons.append(f"{host}: {exc.strerror or exc}")
            continue
        sock.settimeout(None)
        return sock
    raise Unavailable(f"cannot connect to localhost:{port} ({'; '.join(reasons)})")
