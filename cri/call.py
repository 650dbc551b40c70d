"""Turn a gRPC call's deadline and cancellation into a domain CallContext; check ids."""

from __future__ import annotations

import grpc

from base.cancel import CallContext
from base.errors import InvalidArgument, NotFound
from base.text import control_char, shorten

# Ids peapod hands out are 64 hex digits; a longer "id" (or prefix) names nothing.
MAX_ID_LEN = 64


def call_context(context: grpc.ServicerContext, what: str) -> CallContext:
    """A CallContext that expires with the caller's deadline and is cancelled with the call."""
    ctx = CallContext.with_timeout(context.time_remaining(), what)
    context.add_callback(ctx.cancel)
    return ctx


def require(value: str, field: str, example: str) -> str:
    """Return ``value`` or raise InvalidArgument saying which field is empty."""
    if not value:
        raise InvalidArgument(f"{field} is empty; give {example}")
    return value


def object_id(value: str, field: str, example: str) -> str:
    """An id (or id prefix) from a request; NotFound at once if no object can have it."""
    require(value, field, example)
    if len(value) > MAX_ID_LEN or control_char(value):
        raise NotFound(f"{field} {shorten(value)} names nothing: ids are {MAX_ID_LEN} hex digits")
    return value


def possible_id(value: str, field: str, example: str) -> bool:
    """Whether ``value`` could name an object (InvalidArgument if empty).

    For the idempotent rpcs (stop, remove), where an unknown id is a success.
    """
    try:
        object_id(value, field, example)
    except NotFound:
        return False
    return True
