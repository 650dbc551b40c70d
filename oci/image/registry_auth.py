"""Registry authentication: credentials, WWW-Authenticate challenges, bearer tokens.

Implements the client side of the distribution auth flow: a request goes out
anonymously; a 401 carries a ``WWW-Authenticate`` challenge; ``Basic`` means
"send the username and password", ``Bearer realm=..,service=..,scope=..``
means "get a token from the realm and send that". Tokens are cached per
(realm, service, scope) until they expire. HTTP itself is done by a caller-
supplied ``fetch`` function so this module stays free of connection handling.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from base.cancel import CallContext
from base.errors import (
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from base.text import check_text, control_char

# (method, url, headers, body, ctx) -> (status, response headers, body)
TokenFetch = Callable[
    [str, str, dict[str, str], bytes | None, CallContext], tuple[int, Mapping[str, str], bytes]
]

MIN_TOKEN_LIFETIME = 60  # seconds; the token spec's default and minimum
MAX_CREDENTIAL = 4096  # bytes of a username or password
MAX_TOKEN = 64 << 10  # characters of a token (JWTs run to a few KiB)
_TOKEN = re.compile(r"[\x21-\x7e]*")
_EXPIRY_MARGIN = 5


@dataclass
class Credentials:
    """Registry credentials as the CRI AuthConfig carries them."""

    username: str = ""
    password: str = ""
    auth: str = ""  # base64 of "username:password"
    identity_token: str = ""  # OAuth2 refresh token for the token server
    registry_token: str = ""  # a bearer token to send as-is

    def validate(self) -> Credentials:
        """Return self if every field can be sent; InvalidArgument naming the field if not.

        Username and password may be any UTF-8 text without control characters (HTTP
        Basic sends them base64-encoded; ':' cannot be in a username). ``auth`` must be
        base64 and the tokens printable ASCII: they go into headers as they are.
        """
        check_text(self.username, "the registry credentials' username", MAX_CREDENTIAL)
        if ":" in self.username:
            raise InvalidArgument("the registry credentials' username must not contain ':'")
        check_text(self.password, "the registry credentials' password", MAX_CREDENTIAL)
        for name, value in (("auth", self.auth), ("identity_token", self.identity_token),
                            ("registry_token", self.registry_token)):  # fmt: skip
            if len(value) > MAX_TOKEN or not _TOKEN.fullmatch(value):
                raise InvalidArgument(
                    f"the registry credentials' {name} field must be printable ASCII of at "
                    f"most {MAX_TOKEN} characters"
                )
        self.basic()  # checks that auth decodes to a pair
        return self

    def basic(self) -> tuple[str, str] | None:
        """(username, password) from the explicit fields or the ``auth`` field, if any."""
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            try:
                decoded = base64.b64decode(self.auth.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument(
                    "the registry credentials' auth field is not base64 of 'username:password'"
                ) from None
            user, sep, password = decoded.partition(":")
            if not sep or control_char(decoded):
                raise InvalidArgument(
                    "the registry credentials' auth field decodes to no 'username:password' pair"
                )
            return user, password
        return None

    @property
    def given(self) -> bool:
        """Whether any credential was supplied."""
        return bool(
            self.username
            or self.password
            or self.auth
            or self.identity_token
            or self.registry_token
        )


def basic_header(username: str, password: str) -> str:
    """An ``Authorization`` value for HTTP Basic."""
    raw = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge: lowercase scheme and its parameters."""

    scheme: str
    params: dict[str, str]


def _skip(text: str, i: int, chars: str) -> int:
    while i < len(text) and text[i] in chars:
        i += 1
    return i


def parse_challenges(headers: list[str]) -> list[Challenge]:
    """Parse ``WWW-Authenticate`` header values (RFC 7235) into challenges."""
    out: list[Challenge] = []
    for header in headers:
        i = 0
        current: Challenge | None = None
        while True:
            i = _skip(header, i, " \t,")
            if i >= len(header):
                break
            start = i
            while i < len(header) and header[i] not in " \t,=":
                i += 1
            token = header[start:i]
            j = _skip(header, i, " \t")
            if j < len(header) and header[j] == "=" and current is not None:
                j = _skip(header, j + 1, " \t")
                if j < len(header) and header[j] == '"':
                    value, j = _quoted(header, j + 1)
                else:
                    end = j
                    while end < len(header) and header[end] not in " \t,":
                        end += 1
                    value, j = header[j:end], end
                current.params[token.lower()] = value
                i = j
            elif j < len(header) and header[j] == "=":
                i = j + 1  # a parameter before any scheme: ignore it
            else:
                current = Challenge(token.lower(), {})
                out.append(current)
                i = j
    return out


def _quoted(text: str, i: int) -> tuple[str, int]:
    chars = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(chars), i + 1
        chars.append(c)
        i += 1
    return "".join(chars), i


def error_detail(body: bytes) -> str:
    """The human-readable part of a registry or token-server error body ("" if none)."""
    if not body:
        return ""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    parts: list[str] = []
    if isinstance(doc, dict):
        errors = doc.get("errors")
        if isinstance(errors, list):
            for err in errors:
                if not isinstance(err, dict):
                    continue
                message = err.get("message")
                code = err.get("code")
                if isinstance(message, str) and message:
                    parts.append(f"{code}: {message}" if isinstance(code, str) else message)
                elif isinstance(code, str):
                    parts.append(code)
        for key in ("details", "error_description", "message", "error"):
            value = doc.get(key)
            if not parts and isinstance(value, str) and value:
                parts.append(value)
        return "; ".join(parts)[:500]
    text = body[:300].decode("utf-8", "replace").strip()
    if text and "<" not in text and text.isprintable():
        return text
    return ""


def scope_for(repository: str) -> str:
    """The token scope for pulling ``repository``."""
    return f"repository:{repository}:pull"


class Authenticator:
    """Chooses the Authorization header for one registry, fetching tokens as needed."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        fetch: TokenFetch,
        user_agent: str = "peapod",
    ) -> None:
        self.registry = registry
        self.credentials = credentials or Credentials()
        self._basic = self.credentials.basic()
        self._fetch = fetch
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}

    @property
    def has_credentials(self) -> bool:
        return self.credentials.given

    def header(self, repository: str, ctx: CallContext) -> str | None:
        """The header to send up front, once the registry's scheme is known; else None."""
        with self._lock:
            challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return basic_header(*self._basic) if self._basic else None
        return self._bearer(challenge, repository, ctx, refresh=False)

    def on_challenge(self, headers: list[str], repository: str, ctx: CallContext) -> str:
        """Answer a 401: the Authorization header to retry with, or raise Unauthenticated."""
        challenges = parse_challenges(headers)
        by_scheme = {c.scheme: c for c in challenges}
        chosen = by_scheme.get("bearer") or by_scheme.get("basic")
        if chosen is None:
            offered = ", ".join(sorted(by_scheme)) or "none"
            raise Unauthenticated(
                f"registry {self.registry} asks for an authentication scheme peapod does not "
                f"support ({offered}) to pull {repository}",
                reason="UNAUTHORIZED",
            )
        with self._lock:
            self._challenge = chosen
        if chosen.scheme == "basic":
            if self._basic is None:
                given = (
                    "only a token was given, which Basic auth cannot use"
                    if self.has_credentials
                    else "none were given"
                )
                raise Unauthenticated(
                    f"registry {self.registry} requires a username and password to pull "
                    f"{repository}, and {given}; add an image pull secret with them",
                    reason="UNAUTHORIZED",
                )
            return basic_header(*self._basic)
        return self._bearer(chosen, repository, ctx, refresh=True)

    def _bearer(
        self, challenge: Challenge, repository: str, ctx: CallContext, refresh: bool
    ) -> str:
        if self.credentials.registry_token:
            return f"Bearer {self.credentials.registry_token}"
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        scope = scope_for(repository)
        key = (realm, service, scope)
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(key)
            if refresh:
                self._tokens.pop(key, None)
            elif cached and cached[1] > now:
                return f"Bearer {cached[0]}"
        scopes = [scope]
        asked = challenge.params.get("scope", "")
        if asked and asked != scope and f"repository:{repository}:" in asked:
            scopes.append(asked)
        token, lifetime = self._fetch_token(realm, service, scopes, repository, ctx)
        expiry = time.monotonic() + max(lifetime, MIN_TOKEN_LIFETIME) - _EXPIRY_MARGIN
        with self._lock:
            self._tokens[key] = (token, expiry)
        return f"Bearer {token}"

    def _fetch_token(
        self, realm: str, service: str, scopes: list[str], repository: str, ctx: CallContext
    ) -> tuple[str, int]:
        parsed = urllib.parse.urlsplit(realm)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise Unavailable(
                f"registry {self.registry} sent a bearer challenge with an unusable realm "
                f"{realm!r}; cannot get a token to pull {repository}",
                reason="UNKNOWN",
            )
        headers = {"User-Agent": self._user_agent, "Accept": "application/json"}
        if self.credentials.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": self.credentials.identity_token,
                "service": service,
                "scope": " ".join(scopes),
                "client_id": self._user_agent,
            }
            body = urllib.parse.urlencode(form).encode()
            post_headers = dict(headers, **{"Content-Type": "application/x-www-form-urlencoded"})
            status, _, data = self._fetch("POST", realm, post_headers, body, ctx)
            if status not in (404, 405) or self._basic is None:
                return self._token_from(status, data, parsed.netloc, repository)
        query = [("service", service)] if service else []
        query += [("scope", s) for s in scopes]
        if self._basic is not None:
            headers["Authorization"] = basic_header(*self._basic)
            if self._basic[0]:
                query.append(("account", self._basic[0]))
        sep = "&" if parsed.query else "?"
        url = realm + (sep + urllib.parse.urlencode(query) if query else "")
        status, _, data = self._fetch("GET", url, headers, None, ctx)
        return self._token_from(status, data, parsed.netloc, repository)

    def _token_from(self, status: int, data: bytes, host: str, repository: str) -> tuple[str, int]:
        detail = error_detail(data)
        says = f" (token server says: {detail})" if detail else ""
        if status == 401:
            if self.has_credentials:
                msg = (
                    f"the token server {host} for registry {self.registry} rejected the given "
                    f"credentials{says}; check the image pull secret for {repository}"
                )
            else:
                msg = (
                    f"the token server {host} for registry {self.registry} refused anonymous "
                    f"access{says}; {repository} needs an image pull secret"
                )
            raise Unauthenticated(msg, reason="UNAUTHORIZED")
        if status == 403:
            raise PermissionDenied(
                f"the token server {host} for registry {self.registry} denied pull access to "
                f"{repository}{says}",
                reason="DENIED",
            )
        if status == 429:
            raise ResourceExhausted(
                f"the token server {host} for registry {self.registry} is rate-limiting "
                f"requests{says}; retry later",
                reason="TOOMANYREQUESTS",
            )
        if status != 200:
            raise Unavailable(
                f"the token server {host} for registry {self.registry} answered HTTP {status}"
                f"{says}; retry later",
                reason="UNKNOWN",
            )
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            doc = None
        token = None
        lifetime = MIN_TOKEN_LIFETIME
        if isinstance(doc, dict):
            token = doc.get("token") or doc.get("access_token")
            raw_life = doc.get("expires_in")
            if isinstance(raw_life, int) and not isinstance(raw_life, bool):
                lifetime = raw_life
        if not isinstance(token, str) or not token:
            raise Unavailable(
                f"the token server {host} for registry {self.registry} returned no token "
                f"for {repository}",
                reason="UNKNOWN",
            )
        return token, lifetime
