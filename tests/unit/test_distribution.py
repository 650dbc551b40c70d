"""RegistryClient against in-process fake registries (http.server on 127.0.0.1)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from base.cancel import CallContext
from base.errors import (
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from oci.image import distribution, manifest
from oci.image.distribution import RegistryClient
from oci.image.registry_auth import Credentials, error_detail, parse_challenges

REPO = "team/app"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- a tiny scriptable HTTP server --------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stall: bool = False  # send headers and body, then stop sending until the server stops
    content_length: int | None = None  # announce another length; -1: none, end by closing
    close: bool = False  # drop the connection afterwards without announcing it


App = Callable[[Req], Reply]


class FakeServer:
    """A threaded HTTP/1.1 server whose answers come from ``app``.

    ``tls`` serves HTTPS. On a plain server, ``tls_hello`` says what to do when a
    client starts a TLS handshake: "reject" (answer 400 and close, as Go does) or
    "silent" (say nothing until the client gives up).
    """

    def __init__(
        self, app: App, tls: ssl.SSLContext | None = None, tls_hello: str = "reject"
    ) -> None:
        self.app = app
        self.tls = tls
        self.tls_hello = tls_hello
        self.requests: list[Req] = []
        self.connections = 0
        self.stopping = threading.Event()
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def setup(self) -> None:
                self.skip = False
                with outer._lock:
                    outer._live.add(self.request)
                if outer.tls is not None:
                    raw = self.request
                    try:
                        self.request = outer.tls.wrap_socket(raw, server_side=True)
                    except OSError:
                        self.skip = True
                    with outer._lock:
                        outer._live.discard(raw)
                        outer._live.add(self.request)
                elif outer.tls_hello != "none":
                    try:
                        first = self.request.recv(1, socket.MSG_PEEK)
                    except OSError:
                        first = b""
                    if first == b"\x16":
                        self.skip = True
                        if outer.tls_hello == "reject":
                            self.request.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
                        else:
                            outer.stopping.wait(10)
                if not self.skip:
                    with outer._lock:
                        outer.connections += 1  # connections that got to speak HTTP
                super().setup()

            def handle(self) -> None:
                if not self.skip:
                    super().handle()

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with outer._lock:
                        outer._live.discard(self.request)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Req(
                    self.command, parts.path, urllib.parse.parse_qs(parts.query), self.headers, body
                )
                with outer._lock:
                    outer.requests.append(req)
                reply = outer.app(req)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                declared = len(reply.body) if reply.content_length is None else reply.content_length
                if declared >= 0:
                    self.send_header("Content-Length", str(declared))
                self.end_headers()
                self.wfile.write(reply.body)
                self.wfile.flush()
                if reply.stall:
                    outer.stopping.wait(10)
                    self.close_connection = True
                if reply.close or reply.content_length is not None:
                    self.close_connection = True

            do_GET = _serve
            do_POST = _serve

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = False
            block_on_close = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}{path}"

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        with self._lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.httpd.server_close()
        self._thread.join(5)


# ---- fake registry, token server, blob storage -------------------------------------------------


def errors_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message, "detail": None}]}).encode()


class RegistryApp:
    """Enough of the distribution API to pull: manifests, blobs, Basic or Bearer auth."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], tuple[str, bytes, dict[str, str]]] = {}
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.auth: str | None = None  # "basic" or "bearer"
        self.users = {"alice": "secret"}
        self.realm = ""
        self.tokens: set[str] = set()
        self.blob_redirect: str | None = None  # base URL blobs redirect to
        self.override: Callable[[Req], Reply | None] | None = None

    def add_manifest(
        self, repo: str, tag: str, body: bytes, ctype: str = manifest.OCI_MANIFEST
    ) -> str:
        digest = sha(body)
        self.manifests[(repo, tag)] = (ctype, body, {"Docker-Content-Digest": digest})
        self.manifests[(repo, digest)] = (ctype, body, {"Docker-Content-Digest": digest})
        return digest

    def add_blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        self.blobs[(repo, digest)] = data
        return digest

    def _authorized(self, req: Req) -> bool:
        header = req.headers.get("Authorization") or ""
        if self.auth == "basic":
            expected = {
                "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
                for u, p in self.users.items()
            }
            return header in expected
        if self.auth == "bearer":
            return header.startswith("Bearer ") and header[7:] in self.tokens
        return True

    def _challenge(self, repo: str) -> Reply:
        if self.auth == "basic":
            value = 'Basic realm="fake"'
        else:
            value = (
                f'Bearer realm="{self.realm}",service="fake-registry",'
                f'scope="repository:{repo}:pull"'
            )
        return Reply(
            401,
            {"WWW-Authenticate": value, "Content-Type": "application/json"},
            errors_body("UNAUTHORIZED", "authentication required"),
        )

    def __call__(self, req: Req) -> Reply:
        if self.override is not None:
            reply = self.override(req)
            if reply is not None:
                return reply
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/([^/]+)", req.path)
        if not m:
            return Reply(404, body=errors_body("NOT_FOUND", "no route"))
        repo, kind, ref = m.groups()
        if not self._authorized(req):
            return self._challenge(repo)
        if kind == "manifests":
            if (repo, ref) not in self.manifests:
                return Reply(404, body=errors_body("MANIFEST_UNKNOWN", "manifest unknown"))
            ctype, body, extra = self.manifests[(repo, ref)]
            return Reply(200, {"Content-Type": ctype, **extra}, body)
        if (repo, ref) not in self.blobs:
            return Reply(404, body=errors_body("BLOB_UNKNOWN", "blob unknown to registry"))
        if self.blob_redirect:
            return Reply(307, {"Location": f"{self.blob_redirect}/storage/{ref}?sig=1"})
        return Reply(200, {"Content-Type": "application/octet-stream"}, self.blobs[(repo, ref)])


class TokenApp:
    """A token server: GET with optional Basic auth, POST with a refresh token."""

    def __init__(self, registry: RegistryApp, need_login: bool = False) -> None:
        self.registry = registry
        self.need_login = need_login
        self.issued = 0

    def __call__(self, req: Req) -> Reply:
        header = req.headers.get("Authorization") or ""
        if req.method == "POST":
            form = urllib.parse.parse_qs(req.body.decode())
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [
                "refresh-ok"
            ]:
                return Reply(401, body=b'{"details":"invalid refresh token"}')
            return self._issue("access_token")
        if header:
            good = "Basic " + base64.b64encode(b"alice:secret").decode()
            if header != good:
                return Reply(401, body=b'{"details":"incorrect username or password"}')
        elif self.need_login:
            return Reply(401, body=b'{"details":"login required"}')
        return self._issue("token")

    def _issue(self, key: str) -> Reply:
        self.issued += 1
        token = f"tok-{self.issued}"
        self.registry.tokens.add(token)
        return Reply(
            200,
            {"Content-Type": "application/json"},
            json.dumps({key: token, "expires_in": 300}).encode(),
        )


class StorageApp:
    """Blob storage that registries redirect to."""

    def __init__(self, registry: RegistryApp) -> None:
        self.registry = registry

    def __call__(self, req: Req) -> Reply:
        digest = req.path.rsplit("/", 1)[-1]
        for (_, d), data in self.registry.blobs.items():
            if d == digest:
                return Reply(200, {"Content-Type": "application/octet-stream"}, data)
        return Reply(404)


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    distribution._schemes.clear()
    yield
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra:
            break
        time.sleep(0.02)
    assert not extra, f"threads left running: {extra}"


@pytest.fixture
def servers() -> Iterator[Callable[..., FakeServer]]:
    started: list[FakeServer] = []

    def start(app: App, **kw: Any) -> FakeServer:
        server = FakeServer(app, **kw)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., RegistryClient]]:
    made: list[RegistryClient] = []

    def make(
        endpoint: str, insecure: bool = True, credentials: Credentials | None = None, **kw: Any
    ) -> RegistryClient:
        client = RegistryClient(endpoint, insecure, credentials, **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def reg(servers: Callable[..., FakeServer]) -> tuple[RegistryApp, FakeServer]:
    app = RegistryApp()
    return app, servers(app)


def ctx(seconds: float = 10) -> CallContext:
    return CallContext.with_timeout(seconds, "test pull")


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": manifest.OCI_MANIFEST}).encode()


# ---- manifests ----------------------------------------------------------------------------------


def test_fetch_manifest_by_tag_and_digest(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    digest = app.add_manifest(REPO, "v1", MANIFEST)
    client = clients(server.host)
    got = client.fetch_manifest(REPO, "v1", ctx())
    assert (got.media_type, got.body, got.digest) == (manifest.OCI_MANIFEST, MANIFEST, digest)
    again = client.fetch_manifest(REPO, digest, ctx())
    assert again.digest == digest
    accept = server.requests[0].headers["Accept"]
    for media_type in manifest.ACCEPT:
        assert media_type in accept
    assert server.requests[0].headers["User-Agent"] == "peapod"
    assert server.connections == 1, "the keep-alive connection should be reused"


def test_manifest_digest_computed_without_header(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.manifests[(REPO, "v1")] = ("application/json", MANIFEST, {})
    got = clients(server.host).fetch_manifest(REPO, "v1", ctx())
    assert got.digest == sha(MANIFEST)
    assert got.media_type == manifest.OCI_MANIFEST  # from the document, not the generic header


def test_manifest_by_digest_mismatch(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    wanted = sha(b"something else")
    app.manifests[(REPO, wanted)] = (manifest.OCI_MANIFEST, MANIFEST, {})
    with pytest.raises(DataLoss) as info:
        clients(server.host).fetch_manifest(REPO, wanted, ctx())
    assert info.value.reason == "DIGEST_MISMATCH"


def test_manifest_header_digest_mismatch(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.manifests[(REPO, "v1")] = (
        manifest.OCI_MANIFEST,
        MANIFEST,
        {"Docker-Content-Digest": sha(b"x")},
    )
    with pytest.raises(DataLoss) as info:
        clients(server.host).fetch_manifest(REPO, "v1", ctx())
    assert info.value.reason == "DIGEST_MISMATCH"
    assert "Docker-Content-Digest" in info.value.message


def test_manifest_not_found_names_image_and_registry(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, server = reg
    with pytest.raises(NotFound) as info:
        clients(server.host).fetch_manifest(REPO, "nope", ctx())
    msg = info.value.message
    assert info.value.reason == "NOT_FOUND"
    assert f"{server.host}/{REPO}:nope" in msg and "manifest unknown" in msg
    assert "MANIFEST_UNKNOWN" in msg


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (403, PermissionDenied, "DENIED"),
        (429, ResourceExhausted, "TOOMANYREQUESTS"),
        (500, Unavailable, "UNKNOWN"),
        (503, Unavailable, "UNKNOWN"),
        (400, InvalidArgument, "UNKNOWN"),
    ],
)
def test_status_mapping(
    reg: tuple[RegistryApp, FakeServer],
    clients: Callable[..., RegistryClient],
    status: int,
    error: type[Exception],
    reason: str,
) -> None:
    app, server = reg
    app.override = lambda req: Reply(status, body=errors_body("SOMETHING", f"says {status}"))
    with pytest.raises(error) as info:
        clients(server.host).fetch_manifest(REPO, "v1", ctx())
    assert info.value.reason == reason
    assert f"says {status}" in info.value.message
    assert server.host in info.value.message


def test_invalid_arguments_rejected_before_any_request(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, server = reg
    client = clients(server.host)
    with pytest.raises(InvalidArgument):
        client.fetch_manifest("Team/App", "v1", ctx())
    with pytest.raises(InvalidArgument):
        client.fetch_manifest(REPO, "sha256:abc", ctx())
    with pytest.raises(InvalidArgument):
        client.fetch_blob(REPO, "md5:" + "a" * 32, Path("/nonexistent"), ctx())
    assert server.requests == []


# ---- blobs --------------------------------------------------------------------------------------


def test_fetch_blob_streams_and_verifies(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app, server = reg
    data = bytes(range(256)) * 4000  # > one chunk
    digest = app.add_blob(REPO, data)
    seen: list[int] = []
    dest = tmp_path / "blob"
    n = clients(server.host).fetch_blob(REPO, digest, dest, ctx(), len(data), seen.append)
    assert n == len(data) and sum(seen) == len(data) and len(seen) > 1
    assert dest.read_bytes() == data


def test_blob_digest_mismatch_removes_partial_file(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app, server = reg
    digest = sha(b"the real content")
    app.blobs[(REPO, digest)] = b"tampered content"
    dest = tmp_path / "blob"
    with pytest.raises(DataLoss) as info:
        clients(server.host).fetch_blob(REPO, digest, dest, ctx())
    assert info.value.reason == "DIGEST_MISMATCH"
    assert not dest.exists()


def test_blob_size_mismatch(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app, server = reg
    digest = app.add_blob(REPO, b"12345")
    dest = tmp_path / "blob"
    with pytest.raises(DataLoss) as info:
        clients(server.host).fetch_blob(REPO, digest, dest, ctx(), expected_size=4)
    assert info.value.reason == "DIGEST_MISMATCH"
    assert not dest.exists()


def test_blob_longer_than_declared_without_length(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app, server = reg
    data = b"x" * 100
    digest = app.add_blob(REPO, data)
    app.override = lambda req: (
        Reply(200, body=data, content_length=-1) if "/blobs/" in req.path else None
    )
    dest = tmp_path / "blob"
    client = clients(server.host)
    with pytest.raises(DataLoss) as info:
        client.fetch_blob(REPO, digest, dest, ctx(), expected_size=50)
    assert "more than the 50 bytes" in info.value.message
    assert not dest.exists()
    assert client.fetch_blob(REPO, digest, dest, ctx(), expected_size=100) == 100


def test_blob_not_found(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    _, server = reg
    dest = tmp_path / "blob"
    dest.write_bytes(b"someone else's file")
    with pytest.raises(NotFound) as info:
        clients(server.host).fetch_blob(REPO, sha(b"missing"), dest, ctx())
    assert info.value.reason == "NOT_FOUND" and "BLOB_UNKNOWN" in info.value.message
    assert dest.exists(), "a file the client never opened must be left alone"


def test_blob_connection_closed_early(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app, server = reg
    data = b"y" * 1000
    digest = app.add_blob(REPO, data)
    app.override = lambda req: (
        Reply(200, body=data[:300], content_length=len(data)) if "/blobs/" in req.path else None
    )
    dest = tmp_path / "blob"
    client = clients(server.host)
    with pytest.raises(Unavailable) as info:
        client.fetch_blob(REPO, digest, dest, ctx())
    assert "closed the connection" in info.value.message
    assert not dest.exists()
    app.override = None
    assert client.fetch_blob(REPO, digest, dest, ctx()) == len(data)
    assert server.connections == 2, "a fresh connection is used after a failure"


def test_blob_cancel_midway(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app, server = reg
    digest = app.add_blob(REPO, b"z" * (3 * distribution.CHUNK_SIZE))
    call = ctx()
    dest = tmp_path / "blob"
    with pytest.raises(Cancelled) as info:
        clients(server.host).fetch_blob(REPO, digest, dest, call, on_bytes=lambda n: call.cancel())
    assert info.value.reason == "CANCELLED"
    assert not dest.exists()


def test_redirect_to_other_host_drops_authorization(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app = RegistryApp()
    app.auth = "basic"
    storage = servers(StorageApp(app))
    registry = servers(app)
    app.blob_redirect = storage.url("")
    data = b"layer bytes" * 1000
    digest = app.add_blob(REPO, data)
    dest = tmp_path / "blob"
    client = clients(registry.host, credentials=Credentials("alice", "secret"))
    assert client.fetch_blob(REPO, digest, dest, ctx(), len(data)) == len(data)
    assert dest.read_bytes() == data
    [fetched] = storage.requests
    assert fetched.query == {"sig": ["1"]}
    assert fetched.headers.get("Authorization") is None
    assert fetched.headers["User-Agent"] == "peapod"
    assert registry.requests[-1].headers["Authorization"].startswith("Basic ")


def test_redirect_on_same_host_keeps_authorization(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.auth = "basic"
    digest = app.add_manifest(REPO, "v1", MANIFEST)
    moved = f"/v2/{REPO}/manifests/v1"
    app.override = lambda req: (
        Reply(302, {"Location": moved}) if req.path.endswith("/old") else None
    )
    client = clients(server.host, credentials=Credentials("alice", "secret"))
    assert client.fetch_manifest(REPO, "old", ctx()).digest == digest
    last = server.requests[-1]
    assert last.path == moved and last.headers["Authorization"].startswith("Basic ")


def test_too_many_redirects(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.override = lambda req: Reply(302, {"Location": req.path})
    with pytest.raises(Unavailable, match="redirects"):
        clients(server.host).fetch_manifest(REPO, "v1", ctx())


# ---- authentication -----------------------------------------------------------------------------


def test_basic_auth(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.auth = "basic"
    app.add_manifest(REPO, "v1", MANIFEST)
    auth = base64.b64encode(b"alice:secret").decode()
    client = clients(server.host, credentials=Credentials(auth=auth))
    client.fetch_manifest(REPO, "v1", ctx())
    client.fetch_manifest(REPO, "v1", ctx())
    # anonymous first, then Basic; the second fetch sends Basic straight away
    assert [r.headers.get("Authorization") is not None for r in server.requests] == [
        False,
        True,
        True,
    ]


def test_basic_auth_missing_credentials(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.auth = "basic"
    app.add_manifest(REPO, "v1", MANIFEST)
    with pytest.raises(Unauthenticated) as info:
        clients(server.host).fetch_manifest(REPO, "v1", ctx())
    assert info.value.reason == "UNAUTHORIZED"
    assert "none were given" in info.value.message and REPO in info.value.message


def test_basic_auth_wrong_credentials(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.auth = "basic"
    app.add_manifest(REPO, "v1", MANIFEST)
    with pytest.raises(Unauthenticated) as info:
        clients(server.host, credentials=Credentials("alice", "wrong")).fetch_manifest(
            REPO, "v1", ctx()
        )
    assert "rejected the given credentials" in info.value.message
    assert server.host in info.value.message


def test_bad_auth_field(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, server = reg
    with pytest.raises(InvalidArgument, match="auth field"):
        clients(server.host, credentials=Credentials(auth="!!not base64!!"))


def bearer_setup(
    servers: Callable[..., FakeServer], need_login: bool = False
) -> tuple[RegistryApp, TokenApp, FakeServer, FakeServer]:
    app = RegistryApp()
    app.auth = "bearer"
    tokens = TokenApp(app, need_login)
    token_server = servers(tokens)
    registry = servers(app)
    app.realm = token_server.url("/token")
    app.add_manifest(REPO, "v1", MANIFEST)
    return app, tokens, registry, token_server


def test_bearer_anonymous_token_is_cached(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, tokens, registry, token_server = bearer_setup(servers)
    client = clients(registry.host)
    client.fetch_manifest(REPO, "v1", ctx())
    client.fetch_manifest(REPO, "v1", ctx())
    assert tokens.issued == 1
    [asked] = token_server.requests
    assert asked.query["service"] == ["fake-registry"]
    assert asked.query["scope"] == [f"repository:{REPO}:pull"]
    assert asked.headers.get("Authorization") is None
    assert [r.headers.get("Authorization") for r in registry.requests] == [
        None,
        "Bearer tok-1",
        "Bearer tok-1",
    ]


def test_bearer_with_credentials(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, _, registry, token_server = bearer_setup(servers, need_login=True)
    clients(registry.host, credentials=Credentials("alice", "secret")).fetch_manifest(
        REPO, "v1", ctx()
    )
    [asked] = token_server.requests
    assert asked.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:secret").decode()
    assert asked.query["account"] == ["alice"]


def test_bearer_wrong_credentials(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, _, registry, token_server = bearer_setup(servers)
    with pytest.raises(Unauthenticated) as info:
        clients(registry.host, credentials=Credentials("alice", "nope")).fetch_manifest(
            REPO, "v1", ctx()
        )
    msg = info.value.message
    assert info.value.reason == "UNAUTHORIZED"
    assert "rejected the given credentials" in msg and "incorrect username or password" in msg
    assert token_server.host in msg and registry.host in msg


def test_bearer_login_required_without_credentials(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, _, registry, _ = bearer_setup(servers, need_login=True)
    with pytest.raises(Unauthenticated, match="refused anonymous access"):
        clients(registry.host).fetch_manifest(REPO, "v1", ctx())


def test_bearer_token_not_accepted_by_registry(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, _, registry, _ = bearer_setup(servers)
    app.override = lambda req: app._challenge(REPO)  # no token is ever good enough
    with pytest.raises(Unauthenticated) as info:
        clients(registry.host).fetch_manifest(REPO, "v1", ctx())
    assert "no credentials were given" in info.value.message
    assert len(registry.requests) == 2


def test_identity_token_uses_refresh_grant(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, _, registry, token_server = bearer_setup(servers)
    clients(registry.host, credentials=Credentials(identity_token="refresh-ok")).fetch_manifest(
        REPO, "v1", ctx()
    )
    [asked] = token_server.requests
    form = urllib.parse.parse_qs(asked.body.decode())
    assert asked.method == "POST"
    assert form["grant_type"] == ["refresh_token"] and form["service"] == ["fake-registry"]
    assert form["scope"] == [f"repository:{REPO}:pull"]


def test_registry_token_sent_directly(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, _, registry, token_server = bearer_setup(servers)
    app.tokens.add("given-token")
    clients(registry.host, credentials=Credentials(registry_token="given-token")).fetch_manifest(
        REPO, "v1", ctx()
    )
    assert token_server.requests == []
    assert registry.requests[-1].headers["Authorization"] == "Bearer given-token"


def test_parse_challenges() -> None:
    got = parse_challenges(
        [
            'Bearer realm="https://auth.example/token",service="reg, \\"x\\"",'
            'scope="repository:a/b:pull"',
            "Basic realm=simple, Negotiate",
        ]
    )
    assert [c.scheme for c in got] == ["bearer", "basic", "negotiate"]
    assert got[0].params == {
        "realm": "https://auth.example/token",
        "service": 'reg, "x"',
        "scope": "repository:a/b:pull",
    }
    assert got[1].params == {"realm": "simple"}


def test_error_detail() -> None:
    assert error_detail(errors_body("DENIED", "no way")) == "DENIED: no way"
    assert error_detail(b'{"details":"bad password"}') == "bad password"
    assert error_detail(b"<html>oops</html>") == ""
    assert error_detail(b"") == ""


# ---- network failures and deadlines -------------------------------------------------------------


def test_connection_refused(clients: Callable[..., RegistryClient]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = sock.getsockname()[1]
    try:
        with pytest.raises(Unavailable) as info:
            clients(f"127.0.0.1:{port}", insecure=False).fetch_manifest(REPO, "v1", ctx())
    finally:
        sock.close()
    assert info.value.reason == "CONNECTION_REFUSED"
    assert f"127.0.0.1:{port}" in info.value.message


def test_dns_failure(
    clients: Callable[..., RegistryClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_such_host(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(Unavailable) as info:
        clients("registry.invalid", insecure=False).fetch_manifest(REPO, "v1", ctx())
    assert info.value.reason == "DNS" and "registry.invalid" in info.value.message


def test_tls_against_plain_http_server(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, server = reg
    with pytest.raises(Unavailable) as info:
        clients(server.host, insecure=False).fetch_manifest(REPO, "v1", ctx())
    assert info.value.reason == "TLS"
    assert "insecure in registries.conf" in info.value.message


def test_insecure_falls_back_to_http_and_remembers(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.add_manifest(REPO, "v1", MANIFEST)
    clients(server.host).fetch_manifest(REPO, "v1", ctx())
    assert distribution._schemes[server.host] == "http"
    before = server.connections
    clients(server.host).fetch_manifest(REPO, "v1", ctx())
    assert server.connections == before + 1, "a second client must not probe TLS again"


def test_insecure_stale_scheme_memory_is_reprobed(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    app.add_manifest(REPO, "v1", MANIFEST)
    distribution._schemes[server.host] = "https"  # e.g. the port used to serve TLS
    assert clients(server.host).fetch_manifest(REPO, "v1", ctx()).body == MANIFEST
    assert distribution._schemes[server.host] == "http"


def test_insecure_probe_gives_up_on_a_silent_handshake(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app = RegistryApp()
    app.add_manifest(REPO, "v1", MANIFEST)
    server = servers(app, tls_hello="silent")
    start = time.monotonic()
    clients(server.host, tls_probe_timeout=0.3).fetch_manifest(REPO, "v1", ctx())
    assert time.monotonic() - start < 2


def test_hung_blob_ends_at_deadline(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app, server = reg
    digest = app.add_blob(REPO, b"q" * 10000)
    app.override = lambda req: (
        Reply(200, body=b"q" * 100, content_length=10000, stall=True)
        if "/blobs/" in req.path
        else None
    )
    client = clients(server.host)
    call = ctx(0.6)
    dest = tmp_path / "blob"
    with pytest.raises(DeadlineExceeded) as info:
        client.fetch_blob(REPO, digest, dest, call)
    late = -call.remaining()  # type: ignore[operator]
    assert info.value.reason == "TIMEOUT"
    assert -0.05 <= late < 0.2, f"ended {late:+.3f}s relative to the deadline"
    assert not dest.exists()


def test_hung_server_before_headers_ends_at_deadline(
    servers: Callable[..., FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    release = threading.Event()

    def hang(req: Req) -> Reply:
        release.wait(10)
        return Reply(500)

    server = servers(hang)
    try:
        client = clients(server.host)
        distribution._schemes[server.host] = "http"
        call = ctx(0.5)
        with pytest.raises(DeadlineExceeded) as info:
            client.fetch_manifest(REPO, "v1", call)
        late = -call.remaining()  # type: ignore[operator]
        assert info.value.reason == "TIMEOUT" and -0.05 <= late < 0.2
    finally:
        release.set()


def test_read_timeout_cap_without_deadline(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    app, server = reg
    digest = app.add_blob(REPO, b"q" * 10000)
    app.override = lambda req: Reply(200, body=b"q" * 100, content_length=10000, stall=True)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        clients(server.host, read_timeout=0.3).fetch_blob(
            REPO, digest, tmp_path / "b", CallContext()
        )
    assert time.monotonic() - start < 1.5
    assert "did not respond in time" in info.value.message


def test_expired_context_sends_nothing(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, server = reg
    call = ctx(0)
    with pytest.raises(DeadlineExceeded) as info:
        clients(server.host).fetch_manifest(REPO, "v1", call)
    assert info.value.reason == "TIMEOUT"
    assert server.requests == []


def test_stale_keepalive_connection_is_redialled(
    reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    app, server = reg
    digest = app.add_manifest(REPO, "v1", MANIFEST)
    ctype, body, headers = app.manifests[(REPO, "v1")]
    app.override = lambda req: Reply(200, {"Content-Type": ctype, **headers}, body, close=True)
    client = clients(server.host)
    assert client.fetch_manifest(REPO, "v1", ctx()).digest == digest
    time.sleep(0.05)  # let the server's close reach us
    assert client.fetch_manifest(REPO, "v1", ctx()).digest == digest
    assert len(server.requests) == 2
    assert server.connections == 2


# ---- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_reg(
    servers: Callable[..., FakeServer], tls_files: tuple[Path, Path]
) -> tuple[RegistryApp, FakeServer]:
    cert, key = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    app = RegistryApp()
    app.add_manifest(REPO, "v1", MANIFEST)
    return app, servers(app, tls=context)


def test_tls_verified_with_certs_d(
    tls_reg: tuple[RegistryApp, FakeServer],
    tls_files: tuple[Path, Path],
    clients: Callable[..., RegistryClient],
    tmp_path: Path,
) -> None:
    _, server = tls_reg
    certs = tmp_path / "certs.d" / server.host
    certs.mkdir(parents=True)
    shutil.copy(tls_files[0], certs / "ca.crt")
    got = clients(server.host, insecure=False, ca_dir=tmp_path / "certs.d").fetch_manifest(
        REPO, "v1", ctx()
    )
    assert got.body == MANIFEST


def test_tls_untrusted_certificate(
    tls_reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient], tmp_path: Path
) -> None:
    _, server = tls_reg
    with pytest.raises(Unavailable) as info:
        clients(server.host, insecure=False, ca_dir=tmp_path).fetch_manifest(REPO, "v1", ctx())
    assert info.value.reason == "TLS"
    assert "not trusted" in info.value.message and str(tmp_path) in info.value.message


def test_insecure_uses_tls_without_verification(
    tls_reg: tuple[RegistryApp, FakeServer], clients: Callable[..., RegistryClient]
) -> None:
    _, server = tls_reg
    assert clients(server.host).fetch_manifest(REPO, "v1", ctx()).body == MANIFEST
    assert distribution._schemes[server.host] == "https"


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a 64 KiB tmpfs (root only)."""
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_blob_disk_full_is_resource_exhausted(
    reg: tuple[RegistryApp, FakeServer],
    clients: Callable[..., RegistryClient],
    full_dir: Path,
) -> None:
    """ENOSPC while saving a blob names the blob and the full disk, not 'internal error'."""
    app, server = reg
    data = bytes(range(256)) * 2000  # 512 KB > the 64 KiB filesystem
    digest = app.add_blob(REPO, data)
    dest = full_dir / "blob"
    with pytest.raises(ResourceExhausted) as info:
        clients(server.host).fetch_blob(REPO, digest, dest, ctx(), len(data))
    assert digest in info.value.message and "space" in info.value.message
    assert info.value.reason == "NO_SPACE"
    assert not dest.exists()
