"""The streaming HTTP/1.1 server: token URLs upgraded to WebSocket or SPDY/3.1 sessions.

One thread accepts; each connection gets a thread (at most ``max_sessions``) that
reads the request head, consumes the token (404 when unknown, used or expired) and
runs the session over the upgraded connection. ``stop`` shuts every connection
down, which ends each session (and kills its command) within a second.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from base.errors import FailedPrecondition, PeapodError
from cri.config import StreamingConfig
from cri.streaming import http, spdy, tls, websocket, ws_portforward
from cri.streaming.attach import run_attach
from cri.streaming.channels import RESIZE, STDIN, Channels, ProtocolViolation
from cri.streaming.portforward import Dial, SpdyPortForward
from cri.streaming.remotecommand import run_exec
from cri.streaming.requests import ATTACH, EXEC, PORTFORWARD, StreamRequest
from cri.streaming.spdy import SpdyConnection
from cri.streaming.tokens import TokenCache
from cri.streaming.ws_pipe import TUNNEL_PROTOCOL, WsBytePipe
from sandbox.netns_dial import dial_localhost

if TYPE_CHECKING:
    from wsproto import WSConnection

    from oci.container.manager import ContainerManager
    from sandbox.manager import PodManager

log = logging.getLogger("peapod.streaming")

HEAD_TIMEOUT = 10.0  # seconds a client may take to send its request head
STOP_WAIT = 1.0
_KINDS = (EXEC, ATTACH, PORTFORWARD)
# Protocols a session runs over, as SessionObserver hears them.
SPDY, WEBSOCKET, SPDY_OVER_WEBSOCKET = "spdy", "websocket", "spdy-over-websocket"
# Why a connection got no session.
CAPACITY, TOKEN, REQUEST = "capacity", "token", "request"


class SessionObserver(Protocol):
    """Told when sessions start and end, and when a connection is turned away."""

    def session_started(self, kind: str, protocol: str) -> None: ...
    def session_ended(self, kind: str, protocol: str) -> None: ...
    def refused(self, reason: str) -> None: ...


class _NoObserver:
    def session_started(self, kind: str, protocol: str) -> None:
        pass

    def session_ended(self, kind: str, protocol: str) -> None:
        pass

    def refused(self, reason: str) -> None:
        pass


class StreamServer:
    """Serves the URLs Exec, Attach and PortForward hand out."""

    def __init__(
        self, cfg: StreamingConfig, containers: ContainerManager, pods: PodManager,
        observer: SessionObserver | None = None,
    ) -> None:
        self.cfg = cfg
        self.observer: SessionObserver = observer or _NoObserver()
        self.containers = containers
        self.pods = pods
        self.tokens = TokenCache(cfg.token_ttl, cfg.max_pending)
        self._slots = threading.BoundedSemaphore(cfg.max_sessions)
        self._tls = tls.server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._acceptor: threading.Thread | None = None
        self.base_url = ""

    # ---------------------------------------------------------------- life
    def start(self) -> str:
        """Listen and serve; the base URL (with the real port)."""
        family = socket.AF_INET6 if ":" in self.cfg.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.cfg.address, self.cfg.port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise FailedPrecondition(
                f"streaming server cannot listen on {self.cfg.address}:{self.cfg.port}: "
                f"{exc.strerror}"
            ) from None
        self._listener = sock
        port = sock.getsockname()[1]
        host = f"[{self.cfg.address}]" if family == socket.AF_INET6 else self.cfg.address
        if ipaddress.ip_address(self.cfg.address).is_unspecified:
            host = "[::1]" if family == socket.AF_INET6 else "127.0.0.1"
        self.base_url = f"{'https' if self._tls else 'http'}://{host}:{port}"
        self._acceptor = threading.Thread(target=self._accept, name="stream-accept", daemon=True)
        self._acceptor.start()
        log.info("streaming server listening", extra={"url": self.base_url})
        return self.base_url

    def stop(self) -> None:
        """Stop accepting and end every session (each within about a second)."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        if self._acceptor is not None:
            self._acceptor.join(STOP_WAIT)
        with self._lock:
            conns = dict(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + STOP_WAIT * 2
        for t in conns.values():
            t.join(max(0.0, deadline - time.monotonic()))

    def url(self, req: StreamRequest) -> str:
        """A fresh single-use URL for ``req`` (ResourceExhausted when too many wait)."""
        return f"{self.base_url}/{req.kind}/{self.tokens.insert(req)}"

    @property
    def session_count(self) -> int:
        with self._lock:
            return len(self._conns)

    # ---------------------------------------------------------------- serving
    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                self.observer.refused(CAPACITY)
                with contextlib.suppress(OSError):
                    _answer(conn, 503, f"{self.cfg.max_sessions} streams are open; retry later")
                conn.close()
                continue
            t = threading.Thread(target=self._connection, args=(conn,), name="stream",
                                 daemon=True)  # fmt: skip
            with self._lock:
                self._conns[conn] = t
            t.start()

    def _connection(self, conn: socket.socket) -> None:
        try:
            # Frames are small separate writes (replies, status, FINs): no Nagle delay.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                self._serve_tls(conn)
            else:
                conn.settimeout(HEAD_TIMEOUT)
                self._serve(conn)
        except (OSError, ValueError) as exc:
            log.debug("streaming connection ended", extra={"error": str(exc)})
        finally:
            with self._lock:
                self._conns.pop(conn, None)
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()

    def _serve_tls(self, conn: socket.socket) -> None:
        """Handshake, then serve the session on a socketpair a pump thread relays over TLS.

        ``conn`` stays registered as a duplicate of the TCP socket so ``stop`` can shut
        it down, which ends the handshake or the pump and with it the session.
        """
        assert self._tls is not None
        try:
            tls_sock = tls.handshake(self._tls, conn.dup(), tls.HANDSHAKE_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.info("streaming TLS handshake failed", extra={"error": str(exc)})
            return
        outer, inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pump = threading.Thread(target=tls.TlsPump(tls_sock, inner).run, name="stream-tls",
                                daemon=True)  # fmt: skip
        pump.start()
        try:
            outer.settimeout(HEAD_TIMEOUT)
            self._serve(outer)
        finally:
            with contextlib.suppress(OSError):
                outer.shutdown(socket.SHUT_RDWR)
            outer.close()
            pump.join(tls.DRAIN_TIMEOUT + STOP_WAIT)

    def _serve(self, conn: socket.socket) -> None:
        try:
            head = http.read_head(conn)
        except http.BadRequest as exc:
            self.observer.refused(REQUEST)
            _answer(conn, 400, str(exc))
            return
        parts = head.target.split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] not in _KINDS:
            self.observer.refused(REQUEST)
            _answer(conn, 404, "no such streaming path")
            return
        if head.method not in ("GET", "POST"):
            self.observer.refused(REQUEST)
            _answer(conn, 405, "use GET or POST", [("Allow", "GET, POST")])
            return
        req = self.tokens.consume(parts[1])
        if req is None or req.kind != parts[0]:
            self.observer.refused(TOKEN)
            _answer(conn, 404, "unknown, already used or expired streaming token")
            return
        upgrade = [v.lower() for v in head.values("upgrade")]
        conn.settimeout(self.cfg.idle_timeout)
        if "websocket" in upgrade:
            self._websocket(conn, head, req)
        elif "spdy/3.1" in upgrade:
            self._spdy(conn, head, req)
        else:
            self.observer.refused(REQUEST)
            _answer(conn, 400, "expected an upgrade to SPDY/3.1 or websocket (header Upgrade)")

    @contextlib.contextmanager
    def _session(self, kind: str, protocol: str) -> Iterator[None]:
        """Report the session's start and, however it ends, its end."""
        self.observer.session_started(kind, protocol)
        try:
            yield
        finally:
            self.observer.session_ended(kind, protocol)

    def _remotecommand(self, req: StreamRequest, ch: Channels) -> None:
        if req.kind == ATTACH:
            run_attach(self.containers, req, ch)
        else:
            run_exec(self.containers, req, ch)

    def _dialer(self, pod_id: str) -> Dial:
        """Connects to ``localhost:<port>`` in the pod's network namespace (host: loopback)."""
        pod = self.pods.get(pod_id)
        netns = "" if pod.host_network else pod.ns_paths.get("net", "")
        if not pod.host_network and not netns:
            raise FailedPrecondition(f"pod sandbox {pod.id} has no network namespace")
        return lambda port: dial_localhost(netns, port)

    def _portforward(self, conn: SpdyConnection, req: StreamRequest) -> None:
        try:
            dial = self._dialer(req.target)
        except PeapodError as exc:
            log.info("port-forward refused", extra={"error": str(exc)})
            conn.goaway(spdy.GOAWAY_OK, 0)
            return
        SpdyPortForward(conn, dial).run()

    def _ws_portforward(self, conn: socket.socket, ws: WSConnection, proto: str,
                        ports: tuple[int, ...], req: StreamRequest) -> None:  # fmt: skip
        data = frozenset(2 * i for i in range(len(ports)))
        ch = websocket.WebSocketChannels(conn, ws, proto, data)
        try:
            dial = self._dialer(req.target)
        except PeapodError as exc:
            ch.abort(str(exc))
            return
        ws_portforward.WsPortForward(conn, ch, ports, dial).run()

    def _websocket(self, conn: socket.socket, head: http.RequestHead, req: StreamRequest) -> None:
        supported = websocket.REMOTECOMMAND_PROTOCOLS
        if req.kind == PORTFORWARD:
            supported = (TUNNEL_PROTOCOL, *ws_portforward.PROTOCOLS)
        try:
            ports: tuple[int, ...] = ()
            offered = {p.strip() for v in head.values("sec-websocket-protocol")
                       for p in v.split(",")}  # fmt: skip
            if req.kind == PORTFORWARD and TUNNEL_PROTOCOL not in offered:
                ports = ws_portforward.requested_ports(head.target, req.ports)
            ws, proto = websocket.handshake(conn, head.raw, supported)
        except websocket.Rejected:
            return
        except ProtocolViolation as exc:
            _answer(conn, 400, str(exc))
            return
        if req.kind == PORTFORWARD and proto == TUNNEL_PROTOCOL:
            with self._session(req.kind, SPDY_OVER_WEBSOCKET):
                self._portforward(SpdyConnection(WsBytePipe(conn, ws)), req)
            return
        with self._session(req.kind, WEBSOCKET):
            if req.kind == PORTFORWARD:
                self._ws_portforward(conn, ws, proto, ports, req)
                return
            inbound = frozenset({STDIN, RESIZE} if req.tty else {STDIN})
            ch = websocket.WebSocketChannels(conn, ws, proto, inbound)
            self._remotecommand(req, ch)

    def _spdy(self, conn: socket.socket, head: http.RequestHead, req: StreamRequest) -> None:
        supported = spdy.REMOTECOMMAND_PROTOCOLS
        if req.kind == PORTFORWARD:
            supported = (spdy.PORTFORWARD_PROTOCOL,)
        offered = head.values("x-stream-protocol-version")
        if not offered:
            _answer(conn, 400, "missing X-Stream-Protocol-Version; supported: "
                    + ", ".join(supported))  # fmt: skip
            return
        chosen = next((p for p in offered if p in supported), None)
        if chosen is None:
            _answer(conn, 403, f"none of the offered protocols {', '.join(offered)} is "
                    f"supported; supported: {', '.join(supported)}",
                    [("X-Accepted-Stream-Protocol-Versions", p) for p in supported])  # fmt: skip
            return
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                      f"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {chosen}\r\n\r\n"
                      ).encode())  # fmt: skip
        with self._session(req.kind, SPDY):
            sc = SpdyConnection(conn)
            if req.kind == PORTFORWARD:
                self._portforward(sc, req)
                return
            ch = spdy.SpdyChannels(sc, chosen)
            resize = req.tty and chosen not in ("v2.channel.k8s.io", "channel.k8s.io")
            try:
                ch.wait_streams(1 + req.stdin + req.stdout + req.stderr + resize)
            except ProtocolViolation as exc:
                ch.abort(str(exc))
                return
            self._remotecommand(req, ch)


_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            501: "Not Implemented", 503: "Service Unavailable"}  # fmt: skip


def _answer(
    conn: socket.socket, code: int, message: str, headers: list[tuple[str, str]] | None = None
) -> None:
    conn.sendall(http.error_response(code, _REASONS[code], message, headers or []))
