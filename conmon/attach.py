"""Client for conmon's attach socket (a SOCK_SEQPACKET unix socket).

Every packet from conmon is one read of the container's output: the first
byte names the stream (2 stdout, 3 stderr), the rest is data. Bytes sent to
conmon go to the container's stdin (when it was created with ``-i``); shutting
down the write side closes that stdin unless conmon was told to leave it open.
conmon drops a client that does not read fast enough.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket

from base.errors import DeadlineExceeded, FailedPrecondition, NotFound
from conmon.paths import SUN_PATH_MAX

STDIN = 1
STDOUT = 2
STDERR = 3
# conmon reads at most this much per packet from a client.
MAX_STDIN_PACKET = 32768
_MAX_PACKET = 8192 + 1


class AttachConnection:
    """One attach session; use as a context manager or call ``close()``."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, timeout: float | None = None) -> tuple[int, bytes] | None:
        """The next ``(stream, data)`` packet, or None once conmon closed it.

        Raises DeadlineExceeded if nothing arrives within ``timeout`` seconds.
        """
        while True:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                raise DeadlineExceeded(f"no output on the attach socket within {timeout}s")
            try:
                packet = self._sock.recv(_MAX_PACKET * 4)
            except ConnectionResetError:
                return None
            if not packet:
                return None
            if len(packet) > 1:
                return packet[0], packet[1:]

    def send_stdin(self, data: bytes) -> None:
        """Write ``data`` to the container's stdin."""
        view = memoryview(data)
        for off in range(0, len(view), MAX_STDIN_PACKET):
            self._sock.sendall(view[off : off + MAX_STDIN_PACKET])

    def close_stdin(self) -> None:
        """Signal end of input (conmon then closes stdin unless told not to)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def shutdown(self) -> None:
        """Wake a ``recv`` blocked in another thread (it then returns None)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> AttachConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach(socket_path: str, timeout: float = 5.0) -> AttachConnection:
    """Connect to conmon's attach socket at ``socket_path``.

    Paths too long for a socket address are reached through /proc/self/fd.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    dir_fd = -1
    try:
        sock.settimeout(timeout)
        address = socket_path
        if len(os.fsencode(socket_path)) >= SUN_PATH_MAX:
            dir_fd = os.open(os.path.dirname(socket_path), os.O_PATH | os.O_CLOEXEC)
            address = f"/proc/self/fd/{dir_fd}/{os.path.basename(socket_path)}"
        sock.connect(address)
        sock.settimeout(None)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        sock.close()
        raise NotFound(
            f"no attach socket at {socket_path} ({e.strerror}); is the container's conmon running?"
        ) from None
    except OSError as e:
        sock.close()
        raise FailedPrecondition(f"cannot attach via {socket_path}: {e}") from None
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)
    return AttachConnection(sock)
