"""Domain errors shared by every peapod package.

Domain code raises these; ``cri.grpc_status`` is the single place that turns
them into gRPC status codes. Nothing here imports grpc.
"""

from __future__ import annotations


class PeapodError(Exception):
    """Base of all errors peapod reports to a caller."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        # A short machine-readable cause for metrics labels, e.g. "NOT_FOUND".
        self.reason = reason


class InvalidArgument(PeapodError):
    """The request itself is malformed or names something impossible."""


class NotFound(PeapodError):
    """The named object does not exist."""


class AlreadyExists(PeapodError):
    """An object with the same identity already exists."""


class FailedPrecondition(PeapodError):
    """The object is not in a state that allows the operation."""


class DeadlineExceeded(PeapodError):
    """The caller's deadline (or a configured timeout) ran out."""


class Cancelled(PeapodError):
    """The caller cancelled the call."""


class Unauthenticated(PeapodError):
    """Credentials were missing or rejected (e.g. by a registry)."""


class PermissionDenied(PeapodError):
    """The operation is forbidden by policy (e.g. a blocked registry)."""


class ResourceExhausted(PeapodError):
    """A limit was hit (disk, rate limit, too many requests)."""


class Unavailable(PeapodError):
    """A dependency (registry, network plugin) could not be reached."""


class DataLoss(PeapodError):
    """Content failed an integrity check (e.g. a digest mismatch)."""


class Internal(PeapodError):
    """An unexpected failure inside peapod or a tool it runs."""


class Unimplemented(PeapodError):
    """The operation is not supported by peapod."""
