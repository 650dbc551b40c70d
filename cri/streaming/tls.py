"""TLS for streaming connections: checked set-up, a bounded handshake, one owning thread.

OpenSSL must not run SSL_read and SSL_write on one connection from two threads at once,
and sessions read and write their socket from different threads. So one thread owns the
SSL socket (non-blocking, poll) and pumps plaintext to and from one end of a socketpair;
the session runs unchanged on the other end. Each direction buffers at most ``BUF``
bytes and stops reading its source while full, so a slow side stalls the other one.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from base.errors import FailedPrecondition

HANDSHAKE_TIMEOUT = 10.0  # seconds a client may take to complete the TLS handshake
DRAIN_TIMEOUT = 5.0  # seconds to flush what is buffered once either side has ended
BUF = 65536
_CHUNK = 16384


def server_context(cert: str, key: str, client_ca: str) -> ssl.SSLContext | None:
    """The server's context (None without ``cert``); FailedPrecondition naming a bad file."""
    if not cert:
        if key or client_ca:
            raise FailedPrecondition("streaming.tls_key and tls_client_ca need tls_cert")
        return None
    for option, path in (("tls_cert", cert), ("tls_key", key), ("tls_client_ca", client_ca)):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise FailedPrecondition(f"streaming.{option} {path}: {exc.strerror}") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cert)
    except ssl.SSLError as exc:
        raise FailedPrecondition(f"streaming.tls_cert {cert}: no PEM certificate ({exc})") from None
    try:
        ctx.load_cert_chain(cert, key or None)
    except ssl.SSLError as exc:
        raise FailedPrecondition(
            f"streaming.tls_key {key or cert}: no PEM private key matching the certificate "
            f"in {cert} ({exc})"
        ) from None
    if client_ca:
        try:
            ctx.load_verify_locations(client_ca)
        except ssl.SSLError as exc:
            raise FailedPrecondition(
                f"streaming.tls_client_ca {client_ca}: no PEM certificate ({exc})"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def handshake(ctx: ssl.SSLContext, raw: socket.socket, timeout: float) -> ssl.SSLSocket:
    """Wrap ``raw`` (which it takes over) and finish the handshake within ``timeout`` in all."""
    raw.setblocking(False)
    tls = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                tls.do_handshake()
                return tls
            except ssl.SSLWantReadError:
                events = select.POLLIN
            except ssl.SSLWantWriteError:
                events = select.POLLOUT
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"TLS handshake not done within {timeout:g} s")
            poller = select.poll()
            poller.register(tls, events)
            poller.poll(left * 1000)
    except BaseException:
        tls.close()
        raise


class TlsPump:
    """Copies plaintext between an SSL socket and a plain socket, from one thread."""

    def __init__(self, tls: ssl.SSLSocket, inner: socket.socket) -> None:
        self.tls, self.inner = tls, inner
        self.to_inner = bytearray()
        self.to_tls = bytearray()
        self.tls_open = True  # still reading from the TLS client
        self.inner_open = True  # still reading from the session
        self.deadline: float | None = None

    def run(self) -> None:
        """Pump until either side ends (then drain for at most DRAIN_TIMEOUT); close both."""
        self.inner.setblocking(False)
        try:
            self._loop()
        finally:
            with contextlib.suppress(OSError):
                self.inner.close()
            with contextlib.suppress(OSError):
                self.tls.close()

    def _loop(self) -> None:
        poller = select.poll()
        while True:
            tls_ev, inner_ev, progress = self._step()
            if not self.inner_open and not self.to_tls:
                with contextlib.suppress(ssl.SSLError, OSError):
                    self.tls.unwrap()  # close_notify; the peer's answer is not awaited
                return
            if not self.tls_open and not self.to_inner:
                return
            if self.deadline is None and not (self.tls_open and self.inner_open):
                self.deadline = time.monotonic() + DRAIN_TIMEOUT
            if progress:
                continue
            left = None if self.deadline is None else self.deadline - time.monotonic()
            if (left is not None and left <= 0) or not (tls_ev or inner_ev):
                return
            for sock, ev in ((self.tls, tls_ev), (self.inner, inner_ev)):
                if ev:
                    poller.register(sock, ev)
                else:
                    with contextlib.suppress(KeyError):
                        poller.unregister(sock)
            poller.poll(None if left is None else left * 1000)

    def _step(self) -> tuple[int, int, bool]:
        """One attempt at each transfer; the poll events each socket waits for, any progress."""
        tls_ev = inner_ev = 0
        progress = False
        if self.tls_open and len(self.to_inner) < BUF:
            try:
                data = self.tls.recv(_CHUNK)
            except ssl.SSLWantReadError:
                tls_ev |= select.POLLIN
            except ssl.SSLWantWriteError:
                tls_ev |= select.POLLOUT
            except OSError:  # includes SSLError: a broken or reset client
                self.tls_open, progress = False, True
                self.to_tls.clear()
                self.inner_open = False
            else:
                self.to_inner += data
                self.tls_open = bool(data)
                progress = True
        if self.to_inner:
            try:
                n = self.inner.send(self.to_inner)
            except BlockingIOError:
                inner_ev |= select.POLLOUT
            except OSError:  # the session stopped reading
                self.to_inner.clear()
                self.tls_open = False
            else:
                del self.to_inner[:n]
                progress = True
        if self.inner_open and len(self.to_tls) < BUF:
            try:
                data = self.inner.recv(_CHUNK)
            except BlockingIOError:
                inner_ev |= select.POLLIN
            except OSError:
                self.inner_open, progress = False, True
            else:
                self.to_tls += data
                self.inner_open = bool(data)
                progress = True
        if self.to_tls:
            try:
                n = self.tls.send(bytes(self.to_tls[:_CHUNK]))
            except ssl.SSLWantWriteError:
                tls_ev |= select.POLLOUT
            except ssl.SSLWantReadError:
                tls_ev |= select.POLLIN
            except OSError:  # the client is gone: nothing more can reach it
                self.to_tls.clear()
                self.tls_open = self.inner_open = False
                self.to_inner.clear()
            else:
                del self.to_tls[:n]
                progress = True
        return tls_ev, inner_ev, progress
