"""A bearer-token front for a plain registry, in the style of Docker Hub's token auth.

`TokenProxy` runs an HTTP server on 127.0.0.1 in a thread. It serves a token
endpoint at `/token` (basic auth, or an OAuth2 password grant by POST) and
forwards every `/v2/...` request to a backing registry once a valid bearer
token for the repository is presented; otherwise it answers 401 with a
`WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge. Every
request seen is recorded so tests can assert the flow.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .background import Background
from .images import PushedImage
from .registry import Registry

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_REPO_PATH = re.compile(r"^/v2/(?P<repo>.+?)/(?:manifests|blobs|tags|referrers)/")
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class SeenRequest:
    """One request the proxy answered, recorded just before its status line was sent."""

    kind: str  # "token" or "registry"
    method: str
    path: str  # path and query as sent
    authorization: str  # the raw Authorization header, "" if none
    status: int

    @property
    def auth_scheme(self) -> str:
        """Lower-case scheme of the Authorization header ("basic", "bearer" or "")."""
        return self.authorization.split(" ", 1)[0].lower() if self.authorization else ""


@dataclass(frozen=True)
class IssuedToken:
    """A token the proxy handed out."""

    token: str
    username: str  # "" for anonymous
    scopes: dict[str, frozenset[str]]  # scope resource ("repository:busybox") -> actions
    expires_at: float = field(compare=False)  # time.monotonic() deadline


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: TokenProxy) -> None:
        self.proxy = proxy
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.sockets_lock:
                self.open_sockets.discard(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60
    _record_pending = False  # set by _dispatch, cleared once the request is recorded

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def send_response(self, code: int, message: str | None = None) -> None:
        """Record the request before any of the answer reaches the client, then answer."""
        if self._record_pending:
            self._record_pending = False
            path = urlsplit(self.path).path
            self.server.proxy._record(
                SeenRequest(
                    "token" if path == "/token" else "registry",
                    self.command,
                    self.path,
                    self.headers.get("Authorization", ""),
                    code,
                )
            )
        super().send_response(code, message)

    def _dispatch(self) -> None:
        proxy = self.server.proxy
        self._record_pending = True
        try:
            body = self._read_body()
            if body is None:
                self._send_json(400, {"error": "chunked request bodies not supported"})
            elif urlsplit(self.path).path == "/token":
                proxy._handle_token(self, body)
            else:
                proxy._handle_registry(self, body)
        except (OSError, http.client.HTTPException):  # client gone, or backend broke mid-answer
            self.close_connection = True

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return None
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> int:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return status


class TokenProxy(Background):
    """Bearer-token auth in front of a plain registry at `backend_host` ("127.0.0.1:PORT")."""

    def __init__(
        self,
        backend_host: str,
        *,
        username: str = "peapod",
        password: str | None = None,
        service: str = "peapod-test",
        expires_in: int = 300,
        allow_anonymous: bool = False,
    ) -> None:
        self.backend_host = backend_host
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.service = service
        self.expires_in = expires_in
        self.allow_anonymous = allow_anonymous
        self._lock = threading.Lock()
        self._seen: list[SeenRequest] = []
        self._tokens: dict[str, IssuedToken] = {}
        self._issued: list[IssuedToken] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port."""
        if self._server is None:
            raise RuntimeError("token proxy not started")
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry part of image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the proxy."""
        return f"http://{self.host}"

    @property
    def realm(self) -> str:
        """The token endpoint URL advertised in challenges."""
        return f"{self.url}/token"

    # -- what happened -------------------------------------------------------

    @property
    def requests(self) -> list[SeenRequest]:
        """A copy of every request answered so far, in order."""
        with self._lock:
            return list(self._seen)

    @property
    def issued_tokens(self) -> list[IssuedToken]:
        """A copy of every token handed out so far, in order."""
        with self._lock:
            return list(self._issued)

    def clear(self) -> None:
        """Forget recorded requests and issued-token history (tokens stay valid)."""
        with self._lock:
            self._seen.clear()
            self._issued.clear()

    def expire_tokens(self) -> None:
        """Invalidate every token issued so far, so clients must fetch new ones."""
        with self._lock:
            self._tokens.clear()

    def _record(self, seen: SeenRequest) -> None:
        with self._lock:
            self._seen.append(seen)

    # -- token endpoint ------------------------------------------------------

    def _basic_user(self, header: str) -> tuple[str, str] | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return (user, password) if sep else None

    def _handle_token(self, req: _Handler, body: bytes) -> int:
        query = parse_qs(urlsplit(req.path).query)
        user: tuple[str, str] | None
        if req.command == "POST":
            form = parse_qs(body.decode(errors="replace"))
            query = {**query, **form}
            if query.get("grant_type", [""])[0] != "password":
                return req._send_json(400, {"error": "unsupported_grant_type"})
            user = (query.get("username", [""])[0], query.get("password", [""])[0])
        elif req.command == "GET":
            auth = req.headers.get("Authorization", "")
            user = self._basic_user(auth) if auth else None
        else:
            return req._send_json(405, {"error": "method not allowed"})
        service = query.get("service", [""])[0]
        if service != self.service:
            return req._send_json(400, {"error": f"unknown service {service!r}"})
        if user is None and not self.allow_anonymous:
            return req._send_json(
                401,
                {"error": "credentials required"},
                {"WWW-Authenticate": 'Basic realm="peapod-test-token"'},
            )
        if user is not None and user != (self.username, self.password):
            return req._send_json(
                401,
                {"error": "invalid credentials"},
                {"WWW-Authenticate": 'Basic realm="peapod-test-token"'},
            )
        allowed = {"pull", "push", "*"} if user is not None else {"pull"}
        scopes: dict[str, frozenset[str]] = {}
        for raw in query.get("scope", []):
            for scope in raw.split():
                parts = scope.split(":")
                if len(parts) < 3:
                    continue
                resource = ":".join(parts[:-1])
                actions = frozenset(parts[-1].split(",")) & allowed
                scopes[resource] = scopes.get(resource, frozenset()) | actions
        token = secrets.token_urlsafe(24)
        issued = IssuedToken(
            token=token,
            username=user[0] if user else "",
            scopes=scopes,
            expires_at=time.monotonic() + self.expires_in,
        )
        with self._lock:
            self._tokens[token] = issued
            self._issued.append(issued)
        return req._send_json(
            200,
            {
                "token": token,
                "access_token": token,
                "expires_in": self.expires_in,
                "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )

    # -- registry proxying ---------------------------------------------------

    def _required(self, method: str, path: str) -> tuple[str | None, str]:
        """Return (resource, action) a request needs; resource None means any valid token."""
        if path in ("/v2", "/v2/"):
            return None, ""
        if path == "/v2/_catalog":
            return "registry:catalog", "*"
        match = _REPO_PATH.match(path)
        repo = match.group("repo") if match else path.removeprefix("/v2/")
        return f"repository:{repo}", "pull" if method in ("GET", "HEAD") else "push"

    def _authorized(self, header: str, resource: str | None, action: str) -> bool:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        with self._lock:
            issued = self._tokens.get(token.strip())
        if issued is None or issued.expires_at < time.monotonic():
            return False
        return resource is None or action in issued.scopes.get(resource, frozenset())

    def _challenge(self, resource: str | None, action: str) -> str:
        challenge = f'Bearer realm="{self.realm}",service="{self.service}"'
        if resource is not None:
            actions = "pull" if action == "pull" else ("pull,push" if action == "push" else action)
            challenge += f',scope="{resource}:{actions}"'
        return challenge

    def _handle_registry(self, req: _Handler, body: bytes) -> int:
        path = urlsplit(req.path).path
        if not path.startswith("/v2"):
            return req._send_json(404, {"error": "not found"})
        resource, action = self._required(req.command, path)
        if not self._authorized(req.headers.get("Authorization", ""), resource, action):
            return req._send_json(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                {
                    "WWW-Authenticate": self._challenge(resource, action),
                    "Docker-Distribution-Api-Version": "registry/2.0",
                },
            )
        return self._forward(req, body)

    def _forward(self, req: _Handler, body: bytes) -> int:
        conn = http.client.HTTPConnection(self.backend_host, timeout=60)
        try:
            conn.putrequest(req.command, req.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", self.host)
            for key, value in req.headers.items():
                low = key.lower()
                if low in _HOP_BY_HOP or low in ("host", "authorization", "content-length"):
                    continue
                conn.putheader(key, value)
            if body or req.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            try:
                conn.endheaders(body or None)
                resp = conn.getresponse()
            except OSError as exc:
                return req._send_json(502, {"error": f"backend {self.backend_host}: {exc}"})
            req.send_response(resp.status, resp.reason)
            length = resp.getheader("Content-Length")
            for key, value in resp.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    req.send_header(key, value)
            if req.command == "HEAD":
                if length is not None:
                    req.send_header("Content-Length", length)
                req.end_headers()
                return resp.status
            if length is None:
                data = resp.read()
                req.send_header("Content-Length", str(len(data)))
                req.end_headers()
                req.wfile.write(data)
                return resp.status
            req.send_header("Content-Length", length)
            req.end_headers()
            while chunk := resp.read(_CHUNK):
                req.wfile.write(chunk)
            return resp.status
        finally:
            conn.close()

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> TokenProxy:
        """Listen on a free loopback port and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("token proxy already started")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"token-proxy-{self.port}",
            daemon=True,
        )
        self._track()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open client connections and join the server thread."""
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        self._untrack()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with server.sockets_lock:
            open_sockets = list(server.open_sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with server.sockets_lock:
                if not server.open_sockets:
                    break
            time.sleep(0.01)


@dataclass(frozen=True)
class TokenRegistry:
    """A TokenProxy, the plain Registry behind it and the busybox image reachable through it."""

    proxy: TokenProxy
    backend: Registry
    busybox: PushedImage  # busybox:latest, referenced through the proxy's host

    @property
    def host(self) -> str:
        """The proxy's `127.0.0.1:PORT`: what clients should pull from."""
        return self.proxy.host

    @property
    def username(self) -> str:
        """User the token endpoint accepts."""
        return self.proxy.username

    @property
    def password(self) -> str:
        """That user's password."""
        return self.proxy.password

    @property
    def auth(self) -> tuple[str, str]:
        """(username, password)."""
        return (self.username, self.password)

    @property
    def realm(self) -> str:
        """The token endpoint URL."""
        return self.proxy.realm

    @property
    def service(self) -> str:
        """The service name in challenges."""
        return self.proxy.service
