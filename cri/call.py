"""Turn a gRPC call's deadline and cancellation into a domain CallContext."""

from __future__ import annotations

import grpc

from base.cancel import CallContext


def call_context(context: grpc.ServicerContext, what: str) -> CallContext:
    """A CallContext that expires with the caller's deadline and is cancelled with the call."""
    ctx = CallContext.with_timeout(context.time_remaining(), what)
    context.add_callback(ctx.cancel)
    return ctx


def require(value: str, field: str, example: str) -> str:
    """Return ``value`` or raise InvalidArgument saying which field is empty."""
    from base.errors import InvalidArgument

    if not value:
        raise InvalidArgument(f"{field} is empty; give {example}")
    return value
