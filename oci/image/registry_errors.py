"""What a registry failure means to the caller: the domain error for a network failure
or an HTTP status, with a message that says what to check."""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path

from base.cancel import CallContext
from base.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PeapodError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)


def network_error(
    err: BaseException, ctx: CallContext, what: str, host: str, hostname: str,
    ca_dir: Path | None,
) -> PeapodError:
    """A socket/TLS/HTTP exception talking to ``host`` (host[:port]) as a domain error."""
    if ctx.cancelled:
        return Cancelled(f"{what}: cancelled by the caller", reason="CANCELLED")
    if isinstance(err, TimeoutError):
        left = ctx.remaining()
        if left is not None and left <= 0.05:
            return DeadlineExceeded(
                f"{what}: the caller's deadline passed while waiting for {host}",
                reason="TIMEOUT",
            )
        return DeadlineExceeded(
            f"{what}: {host} did not respond in time; the registry or the network is stalled",
            reason="TIMEOUT",
        )
    if isinstance(err, socket.gaierror):
        return Unavailable(
            f"{what}: cannot resolve registry host {hostname!r} ({err.strerror}); check "
            "the name and the node's DNS",
            reason="DNS",
        )
    if isinstance(err, ConnectionRefusedError):
        return Unavailable(
            f"{what}: connection to {host} refused; is the registry running on that port?",
            reason="CONNECTION_REFUSED",
        )
    if isinstance(err, ssl.SSLCertVerificationError):
        where = f"{ca_dir}/{host}/ca.crt" if ca_dir else "the system trust store"
        return Unavailable(
            f"{what}: the TLS certificate of {host} is not trusted ({err.verify_message}); "
            f"add its CA to {where}, or mark it insecure in registries.conf",
            reason="TLS",
        )
    if isinstance(err, ssl.SSLError):
        return Unavailable(
            f"{what}: TLS with {host} failed ({err.reason or err}); mark it insecure in "
            "registries.conf if it serves plain HTTP",
            reason="TLS",
        )
    if isinstance(err, http.client.IncompleteRead):
        return Unavailable(
            f"{what}: {host} closed the connection before sending the whole body "
            f"({err.expected} bytes missing); retry",
            reason="UNKNOWN",
        )
    return Unavailable(f"{what}: talking to {host} failed: {err}", reason="UNKNOWN")

def status_error(
    status: int, detail: str, what: str, registry: str, repository: str, kind: str,
    has_credentials: bool,
) -> PeapodError:
    """A non-success HTTP status as a domain error, quoting the registry's ``detail``."""
    says = f" (registry says: {detail})" if detail else ""
    if status == 401:
        return unauthorized(what, registry, repository, detail, has_credentials)
    if status == 403:
        return PermissionDenied(
            f"{what}: registry {registry} denied access to {repository}{says}; check that "
            "the credentials grant pull access",
            reason="DENIED",
        )
    if status == 404:
        if kind == "manifest":
            msg = (
                f"{what}: manifest unknown; registry {registry} has no such image{says}; "
                "check the repository name and tag"
            )
        else:
            msg = (
                f"{what}: blob unknown to registry {registry}{says}; the image may have been "
                "deleted or be mid-upload; retry or re-push it"
            )
        return NotFound(msg, reason="NOT_FOUND")
    if status == 429:
        return ResourceExhausted(
            f"{what}: registry {registry} is rate-limiting pulls (HTTP 429){says}; retry "
            "later or authenticate for a higher limit",
            reason="TOOMANYREQUESTS",
        )
    if status >= 500:
        return Unavailable(
            f"{what}: registry {registry} failed with HTTP {status}{says}; retry later",
            reason="UNKNOWN",
        )
    if status == 400:
        return InvalidArgument(
            f"{what}: registry {registry} rejected the request (HTTP 400){says}",
            reason="UNKNOWN",
        )
    return Unavailable(
        f"{what}: registry {registry} answered unexpected HTTP {status}{says}",
        reason="UNKNOWN",
    )


def unauthorized(
    what: str, registry: str, repository: str, detail: str, has_credentials: bool
) -> Unauthenticated:
    """HTTP 401 after authenticating: wrong credentials, or none for a private repository."""
    says = f" (registry says: {detail})" if detail else ""
    if has_credentials:
        msg = (
            f"{what}: registry {registry} rejected the given credentials for "
            f"{repository}{says}; check the image pull secret and that it grants pull access"
        )
    else:
        msg = (
            f"{what}: registry {registry} requires authentication for {repository} and "
            f"no credentials were given{says}; the repository may not exist, or it is "
            "private and needs an image pull secret"
        )
    return Unauthenticated(msg, reason="UNAUTHORIZED")
