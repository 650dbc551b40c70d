"""The one place that maps domain errors to gRPC status codes."""

from __future__ import annotations

import grpc

from base import errors

# The longest message a caller gets: status details travel in HTTP/2 trailers, which
# clients cap (16 KiB by default), and a message quoting input whole would hit that.
MESSAGE_LIMIT = 4096

_CODES: list[tuple[type[errors.PeapodError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Cancelled, grpc.StatusCode.CANCELLED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DataLoss, grpc.StatusCode.DATA_LOSS),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.Internal, grpc.StatusCode.INTERNAL),
]


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC code and message (at most MESSAGE_LIMIT characters) for ``exc``.

    A longer message keeps its start and its end, where the outcome is often said.
    """
    code, message = _status(exc)
    if len(message) > MESSAGE_LIMIT:
        half = MESSAGE_LIMIT // 2 - 40
        message = f"{message[:half]} ... ({len(message)} characters) ... {message[-half:]}"
    return code, message


def _status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, errors.PeapodError):
        for cls, code in _CODES:
            if isinstance(exc, cls):
                return code, exc.message
        return grpc.StatusCode.UNKNOWN, exc.message
    return grpc.StatusCode.INTERNAL, f"internal error in peapod: {type(exc).__name__}: {exc}"
