"""A client for the OCI distribution (Docker registry v2) pull API over http.client.

``RegistryClient`` fetches manifests and streams blobs from one registry
endpoint. It speaks TLS (system CAs plus ``<ca_dir>/<endpoint>/*.crt``, the
/etc/containers/certs.d layout) unless the endpoint is marked insecure, in
which case it tries TLS without verification and falls back to plain HTTP.
Authentication (anonymous, Basic, Bearer tokens) is in ``oci.image.registry_auth``.

Every blocking step is bounded by the caller's ``CallContext``: socket
timeouts come from ``ctx.timeout(cap)`` and the context is checked between
chunks, so a stalled registry ends at the caller's deadline.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from base.cancel import CallContext
from base.errors import (
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    PeapodError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from oci.image.manifest import ACCEPT, MAX_MANIFEST_BYTES, detect_media_type
from oci.image.reference import parse_digest, validate_path, validate_tag
from oci.image.registry_auth import Authenticator, Credentials, error_detail
from oci.image.registry_errors import network_error, status_error, unauthorized

CHUNK_SIZE = 256 * 1024
MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 * 1024
MAX_TOKEN_BODY = 1024 * 1024
IDLE_CONNECTIONS_PER_HOST = 4
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)

# Which scheme worked for each insecure endpoint, shared by all clients.
_schemes: dict[str, str] = {}
_schemes_lock = threading.Lock()


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest as the registry served it, with its verified digest."""

    media_type: str
    body: bytes
    digest: str


class _Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    @property
    def netloc(self) -> str:
        """host[:port] as in certs.d directory names (default port omitted)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _origin_of(url: str) -> _Origin:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unavailable(
            f"cannot fetch {url!r}: only http and https URLs are supported", reason="UNKNOWN"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return _Origin(parts.scheme, parts.hostname, port)


def _target_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _check(ctx: CallContext) -> None:
    """ctx.check(), filling in the metrics reason."""
    try:
        ctx.check()
    except Cancelled as err:
        err.reason = err.reason or "CANCELLED"
        raise
    except DeadlineExceeded as err:
        err.reason = err.reason or "TIMEOUT"
        raise


def _timeout(ctx: CallContext, cap: float) -> float:
    """ctx.timeout(cap) as a positive number, filling in the metrics reason."""
    _check(ctx)
    value = ctx.timeout(cap)
    return cap if value is None else max(value, 0.001)


def _save_error(exc: OSError, what: str, dest: Path) -> PeapodError:
    """The error for a blob that cannot be written to ``dest`` (disk full, I/O error)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(
            f"{what}: no space left saving it under {dest.parent}: {exc.strerror}; "
            "free space on the image store's filesystem and pull again",
            reason="NO_SPACE",
        )
    return Internal(f"{what}: cannot save it under {dest.parent}: {exc}", reason="BLOB_WRITE")


def _nothing() -> None:
    return None


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _Response:
    """An HTTP response whose body has not been read yet, holding its connection."""

    def __init__(
        self,
        client: RegistryClient,
        origin: _Origin,
        conn: http.client.HTTPConnection,
        sock: socket.socket,
        resp: http.client.HTTPResponse,
        url: str,
        unwatch: Callable[[], None],
    ) -> None:
        self.client = client
        self._unwatch = unwatch
        self.origin = origin
        self.conn = conn
        self.sock = sock
        self.resp = resp
        self.url = url
        self.status = resp.status
        self.headers = resp.headers
        self._done = False

    def chunks(self, ctx: CallContext, what: str) -> Generator[bytes, None, None]:
        """The body in pieces; the connection goes back to the pool at the end."""
        try:
            while True:
                self.sock.settimeout(_timeout(ctx, self.client.read_timeout))
                data = self.resp.read1(CHUNK_SIZE)
                if not data:
                    break
                yield data
            left = self.resp.length
            if left:
                raise http.client.IncompleteRead(b"", left)
        except (OSError, http.client.HTTPException) as err:
            self.discard()
            raise self.client._net_error(err, ctx, what, self.origin) from None
        except BaseException:
            self.discard()
            raise
        self.release()

    def read_all(self, ctx: CallContext, limit: int, what: str) -> bytes:
        """The whole body; DataLoss if it exceeds ``limit`` bytes."""
        buf = bytearray()
        gen = self.chunks(ctx, what)
        try:
            for chunk in gen:
                buf += chunk
                if len(buf) > limit:
                    raise DataLoss(
                        f"{what}: the response from {self.origin.netloc} is larger than "
                        f"{limit} bytes",
                        reason="BAD_MANIFEST",
                    )
        finally:
            gen.close()
        return bytes(buf)

    def drain(self, ctx: CallContext, what: str) -> bytes:
        """Read a small body (error or redirect), tolerating failures."""
        try:
            return self.read_all(ctx, MAX_ERROR_BODY, what)
        except (DataLoss, Unavailable):
            return b""

    def release(self) -> None:
        """Return the connection for reuse (body fully read)."""
        if self._done:
            return
        self._done = True
        self._unwatch()
        reusable = not self.resp.will_close
        self.resp.close()
        if reusable:
            self.client._checkin(self.origin, self.conn)
        else:
            self.conn.close()

    def discard(self) -> None:
        """Close the connection; it must not be reused."""
        if self._done:
            return
        self._unwatch()
        self._done = True
        self.resp.close()
        self.conn.close()
        self.sock.close()


class RegistryClient:
    """Pulls manifests and blobs from one registry endpoint (host[:port])."""

    def __init__(
        self,
        endpoint: str,
        insecure: bool,
        credentials: Credentials | None,
        ca_dir: Path | None = None,
        user_agent: str = "peapod",
        *,
        connect_timeout: float = 30.0,
        read_timeout: float = 60.0,
        tls_probe_timeout: float = 5.0,
    ) -> None:
        self.endpoint = endpoint.lower()
        self.insecure = insecure
        self.ca_dir = ca_dir
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.tls_probe_timeout = tls_probe_timeout
        self.auth = Authenticator(endpoint, credentials, self._fetch_simple, user_agent)
        self._lock = threading.Lock()
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._ssl: dict[tuple[str, bool], ssl.SSLContext] = {}
        self._scheme: str | None = None if insecure else "https"

    # ---- public API -----------------------------------------------------------------------

    def fetch_manifest(self, repository: str, reference: str, ctx: CallContext) -> FetchedManifest:
        """GET a manifest by tag or digest and verify its digest."""
        validate_path(repository, f"{self.endpoint}/{repository}")
        by_digest = ":" in reference
        if by_digest:
            algo, hexpart = parse_digest(reference, f"{self.endpoint}/{repository}@{reference}")
            what = f"image {self.endpoint}/{repository}@{reference}"
        else:
            validate_tag(reference, f"{self.endpoint}/{repository}:{reference}")
            what = f"image {self.endpoint}/{repository}:{reference}"
        _check(ctx)
        resp = self._registry_get(
            f"/v2/{repository}/manifests/{reference}",
            repository,
            {"Accept": ", ".join(ACCEPT)},
            ctx,
            what,
        )
        if resp.status != 200:
            raise self._status_error(resp, ctx, what, repository, "manifest")
        body = resp.read_all(ctx, MAX_MANIFEST_BYTES, what)
        media_type = detect_media_type(body, resp.headers.get("Content-Type"))
        if by_digest:
            actual = hashlib.new(algo, body).hexdigest()
            if actual != hexpart:
                raise DataLoss(
                    f"{what}: the registry served a manifest whose digest is {algo}:{actual}, "
                    "not the one requested; the registry or a proxy is corrupting content",
                    reason="DIGEST_MISMATCH",
                )
            return FetchedManifest(media_type, body, reference)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        header = (resp.headers.get("Docker-Content-Digest") or "").strip()
        if header:
            try:
                halgo, hhex = parse_digest(header)
            except InvalidArgument:
                halgo = ""
            if halgo:
                if hashlib.new(halgo, body).hexdigest() != hhex:
                    raise DataLoss(
                        f"{what}: the manifest body does not match the Docker-Content-Digest "
                        f"{header} the registry sent; retry, or check proxies in between",
                        reason="DIGEST_MISMATCH",
                    )
                digest = header
        return FetchedManifest(media_type, body, digest)

    def fetch_blob(
        self,
        repository: str,
        digest: str,
        dest: Path,
        ctx: CallContext,
        expected_size: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Stream a blob into ``dest``, verifying size and digest; returns the byte count.

        ``dest`` is removed again if anything fails after it was opened.
        """
        validate_path(repository, f"{self.endpoint}/{repository}")
        algo, hexpart = parse_digest(digest, f"{self.endpoint}/{repository}@{digest}")
        what = f"blob {digest} of {self.endpoint}/{repository}"
        _check(ctx)
        resp = self._registry_get(f"/v2/{repository}/blobs/{digest}", repository, {}, ctx, what)
        if resp.status != 200:
            raise self._status_error(resp, ctx, what, repository, "blob")
        length_header = resp.headers.get("Content-Length")
        if (
            expected_size is not None
            and length_header
            and length_header.isdigit()
            and int(length_header) != expected_size
        ):
            resp.discard()
            raise DataLoss(
                f"{what}: the registry sends {length_header} bytes but the manifest says "
                f"{expected_size}; the image or the registry is inconsistent",
                reason="DIGEST_MISMATCH",
            )
        written = 0
        hasher = hashlib.new(algo)
        opened = False
        gen = resp.chunks(ctx, what)
        try:
            with open(dest, "wb") as out:
                opened = True
                for chunk in gen:
                    written += len(chunk)
                    if expected_size is not None and written > expected_size:
                        raise DataLoss(
                            f"{what}: the registry sent more than the {expected_size} bytes "
                            "the manifest declares",
                            reason="DIGEST_MISMATCH",
                        )
                    hasher.update(chunk)
                    out.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            if expected_size is not None and written != expected_size:
                raise DataLoss(
                    f"{what}: got {written} bytes but the manifest declares {expected_size}",
                    reason="DIGEST_MISMATCH",
                )
            actual = hasher.hexdigest()
            if actual != hexpart:
                raise DataLoss(
                    f"{what}: downloaded content has digest {algo}:{actual}; the registry or "
                    "a proxy is serving corrupt data",
                    reason="DIGEST_MISMATCH",
                )
        except BaseException as exc:
            gen.close()
            resp.discard()
            if opened:
                dest.unlink(missing_ok=True)
            if isinstance(exc, OSError):  # network errors arrive as PeapodError: this is dest
                raise _save_error(exc, what, dest) from None
            raise
        return written

    def close(self) -> None:
        """Close idle pooled connections."""
        with self._lock:
            pools = list(self._idle.values())
            self._idle.clear()
        for pool in pools:
            for conn in pool:
                conn.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests with auth and redirects -------------------------------------------------

    def _registry_get(
        self, path: str, repository: str, headers: dict[str, str], ctx: CallContext, what: str
    ) -> _Response:
        auth = self.auth.header(repository, ctx)
        for attempt in (0, 1):
            sent = dict(headers)
            if auth:
                sent["Authorization"] = auth
            resp = self._send_registry(path, sent, ctx, what)
            if resp.status != 401:
                return resp
            challenges = resp.headers.get_all("WWW-Authenticate") or []
            detail = error_detail(resp.drain(ctx, what))
            if attempt == 1 or not challenges:
                raise self._unauthorized(what, repository, detail)
            auth = self.auth.on_challenge(challenges, repository, ctx)
        raise AssertionError("unreachable")

    def _send_registry(
        self, path: str, headers: dict[str, str], ctx: CallContext, what: str
    ) -> _Response:
        """GET ``path`` on the endpoint; for an insecure endpoint whose scheme was
        remembered from earlier, a network failure re-probes the scheme once."""
        base, fresh = self._base_url(ctx, what)
        try:
            return self._send("GET", base + path, headers, None, ctx, what)
        except Unavailable:
            self._forget_scheme()
            if fresh:
                raise
        base, _ = self._base_url(ctx, what)
        return self._send("GET", base + path, headers, None, ctx, what)

    def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        ctx: CallContext,
        what: str,
    ) -> _Response:
        """One request, following redirects; Authorization is not sent to other hosts."""
        headers = dict(headers)
        headers.setdefault("User-Agent", self.user_agent)
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._roundtrip(method, url, headers, body, ctx, what)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECT_STATUSES or not location:
                return resp
            resp.drain(ctx, what)
            new_url = urllib.parse.urljoin(url, location)
            if _origin_of(new_url) != _origin_of(url):
                headers.pop("Authorization", None)
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                headers.pop("Content-Type", None)
            url = new_url
        raise Unavailable(
            f"{what}: more than {MAX_REDIRECTS} redirects (last to {url})", reason="UNKNOWN"
        )

    def _fetch_simple(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None, ctx: CallContext
    ) -> tuple[int, Mapping[str, str], bytes]:
        """A whole small request, for the token server."""
        what = f"token request for registry {self.endpoint}"
        resp = self._send(method, url, headers, body, ctx, what)
        data = resp.read_all(ctx, MAX_TOKEN_BODY, what)
        return resp.status, dict(resp.headers.items()), data

    # ---- connections ----------------------------------------------------------------------

    def _roundtrip(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        ctx: CallContext,
        what: str,
    ) -> _Response:
        origin = _origin_of(url)
        target = _target_of(url)
        for attempt in (0, 1):
            conn, reused = self._checkout(origin) if attempt == 0 else (None, False)
            unwatch: Callable[[], None] = _nothing
            try:
                if conn is None:
                    conn = self._connect(origin, ctx, what)
                sock = conn.sock
                assert sock is not None
                # A caller who gives up interrupts a blocked read at once.
                unwatch = ctx.on_cancel(lambda s=sock: _shutdown(s))
                sock.settimeout(_timeout(ctx, self.read_timeout))
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
            except _STALE_CONNECTION as err:
                unwatch()
                if conn is not None:
                    conn.close()
                if reused and not ctx.cancelled:
                    continue  # the server dropped an idle keep-alive connection: redial
                raise self._net_error(err, ctx, what, origin) from None
            except (OSError, http.client.HTTPException) as err:
                unwatch()
                if conn is not None:
                    conn.close()
                raise self._net_error(err, ctx, what, origin) from None
            except BaseException:
                unwatch()
                if conn is not None:
                    conn.close()
                raise
            return _Response(self, origin, conn, sock, resp, url, unwatch)
        raise AssertionError("unreachable")

    def _connect(
        self, origin: _Origin, ctx: CallContext, what: str, cap: float | None = None
    ) -> http.client.HTTPConnection:
        timeout = _timeout(ctx, self.connect_timeout if cap is None else cap)
        conn: http.client.HTTPConnection
        if origin.scheme == "https":
            context = self._ssl_context(origin)
            conn = http.client.HTTPSConnection(
                origin.host, origin.port, timeout=timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(origin.host, origin.port, timeout=timeout)
        try:
            conn.connect()
        except OSError as err:
            conn.close()
            raise self._net_error(err, ctx, what, origin) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkout(self, origin: _Origin) -> tuple[http.client.HTTPConnection | None, bool]:
        with self._lock:
            pool = self._idle.get(origin)
            if pool:
                return pool.pop(), True
        return None, False

    def _checkin(self, origin: _Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            pool = self._idle.setdefault(origin, [])
            if len(pool) < IDLE_CONNECTIONS_PER_HOST and conn.sock is not None:
                pool.append(conn)
                return
        conn.close()

    def _ssl_context(self, origin: _Origin) -> ssl.SSLContext:
        netloc = origin.netloc
        verify = not (self.insecure and netloc == self.endpoint)
        key = (netloc, verify)
        with self._lock:
            cached = self._ssl.get(key)
        if cached is not None:
            return cached
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        certs = self.ca_dir / netloc if self.ca_dir is not None else None
        if certs is not None and certs.is_dir():
            try:
                for ca in sorted(certs.glob("*.crt")):
                    context.load_verify_locations(cafile=str(ca))
                for cert in sorted(certs.glob("*.cert")):
                    keyfile = cert.with_suffix(".key")
                    if keyfile.exists():
                        context.load_cert_chain(str(cert), str(keyfile))
            except (OSError, ssl.SSLError) as err:
                raise Unavailable(
                    f"cannot load TLS certificates for {netloc} from {certs}: {err}; "
                    "fix or remove the files there",
                    reason="TLS",
                ) from None
        with self._lock:
            self._ssl[key] = context
        return context

    # ---- insecure registries: https or http? ----------------------------------------------

    def _base_url(self, ctx: CallContext, what: str) -> tuple[str, bool]:
        """The endpoint's base URL, and whether its scheme is settled (not a memory)."""
        if not self.insecure:
            return f"https://{self.endpoint}", True
        fresh = False
        scheme = self._scheme
        if scheme is None:
            with _schemes_lock:
                scheme = _schemes.get(self.endpoint)
        if scheme is None:
            scheme, fresh = self._probe(ctx, what), True
        self._scheme = scheme
        return f"{scheme}://{self.endpoint}", fresh

    def _probe(self, ctx: CallContext, what: str) -> str:
        """Try a TLS handshake with an insecure endpoint; plain HTTP if it fails."""
        origin = _origin_of(f"https://{self.endpoint}")
        try:
            conn = self._connect(origin, ctx, what, cap=self.tls_probe_timeout)
        except DeadlineExceeded:
            _check(ctx)  # the caller's deadline: give up
            scheme = "http"  # only the probe cap ran out: likely a plain-HTTP server
        except Unavailable as err:
            if err.reason == "DNS":
                raise
            scheme = "http"
        else:
            self._checkin(origin, conn)
            scheme = "https"
        with _schemes_lock:
            _schemes[self.endpoint] = scheme
        return scheme

    def _forget_scheme(self) -> None:
        if not self.insecure:
            return
        self._scheme = None
        with _schemes_lock:
            _schemes.pop(self.endpoint, None)

    # ---- errors ---------------------------------------------------------------------------

    def _net_error(
        self, err: BaseException, ctx: CallContext, what: str, origin: _Origin
    ) -> PeapodError:
        """Map a socket/TLS/HTTP exception to a domain error."""
        return network_error(err, ctx, what, origin.netloc, origin.host, self.ca_dir)

    def _status_error(
        self, resp: _Response, ctx: CallContext, what: str, repository: str, kind: str
    ) -> PeapodError:
        """Map a non-success HTTP status to a domain error, quoting the registry's message."""
        detail = error_detail(resp.drain(ctx, what))
        return status_error(resp.status, detail, what, self.endpoint, repository, kind,
                            self.auth.has_credentials)  # fmt: skip

    def _unauthorized(self, what: str, repository: str, detail: str) -> Unauthenticated:
        return unauthorized(what, self.endpoint, repository, detail, self.auth.has_credentials)
