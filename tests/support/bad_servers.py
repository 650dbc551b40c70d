"""Misbehaving endpoints for timeout and connection-error tests."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Literal

from .background import Background


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """Yield a loopback port nothing listens on; connecting to it is refused.

    The port stays bound (but not listening) for the duration, so nobody else can
    take it and turn the refusal into an answer.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


class HangingServer(Background):
    """A TCP server on 127.0.0.1 that never finishes answering.

    mode "silent": accept connections, never read nor write.
    mode "headers": read the request head, send a status line and headers
    announcing `content_length` bytes, send `body_prefix`, then stall.
    `connections` counts accepted connections; `requests` holds request heads read.
    """

    def __init__(
        self,
        *,
        mode: Literal["silent", "headers"] = "silent",
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_length: int = 1 << 20,
        body_prefix: bytes = b"",
    ) -> None:
        if mode not in ("silent", "headers"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.status = status
        self.headers = {
            "Content-Type": "application/octet-stream",
            "Docker-Distribution-Api-Version": "registry/2.0",
            **(headers or {}),
        }
        self.content_length = content_length
        self.body_prefix = body_prefix
        self.connections = 0
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self.port = 0

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL, `http://127.0.0.1:PORT`."""
        return f"http://{self.host}"

    def start(self) -> HangingServer:
        """Listen on a free loopback port and accept in a background thread."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.1)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._track()
        self._spawn(self._accept_loop)
        return self

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._conns.append(conn)
            if self.mode == "headers":
                self._spawn(self._answer_headers, conn)

    def _answer_headers(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        head = b""
        while b"\r\n\r\n" not in head and not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            head += chunk
        if self._stop.is_set():
            return
        with self._lock:
            self.requests.append(head.split(b"\r\n\r\n", 1)[0])
        lines = [f"HTTP/1.1 {self.status} Stalled"]
        lines += [f"{key}: {value}" for key, value in self.headers.items()]
        lines.append(f"Content-Length: {self.content_length}")
        try:
            conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + self.body_prefix)
        except OSError:
            return
        self._stop.wait()

    def stop(self) -> None:
        """Close every socket and join the server's threads; safe to call more than once."""
        self._stop.set()
        self._untrack()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        while True:  # joining the accept loop may reveal threads it spawned meanwhile
            with self._lock:
                threads, self._threads = self._threads, []
            if not threads:
                break
            for thread in threads:  # every thread polls the stop flag at least every 0.1 s
                thread.join(timeout=5)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
