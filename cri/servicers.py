"""Build the two CRI servicers from the handler tables.

Every rpc of the proto gets a method: the registered handler, or one that
answers UNIMPLEMENTED with a message saying so. Errors are mapped to status
codes by ``cri.interceptor``. A handler may answer with a reply already in wire
format (``cri.convert.wire.Encoded``); it is sent as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc

from api import api_pb2, api_pb2_grpc
from base.errors import Unimplemented
from cri.convert import wire

Handler = Callable[[Any, Any, grpc.ServicerContext], Any]


def _unimplemented(service: str, rpc: str, streaming: bool) -> Callable[..., Any]:
    message = (
        f"{service}.{rpc} is not implemented by peapod yet; see the README's API status table"
    )

    if streaming:

        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            raise Unimplemented(message)
            yield  # pragma: no cover - makes this a generator

        return stream

    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        raise Unimplemented(message)

    return unary


def _bound(handler: Handler, services: Any) -> Callable[..., Any]:
    def method(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        return handler(services, request, context)

    method.__doc__ = handler.__doc__
    return method


def build(service: str, handlers: dict[str, Handler], services: Any) -> Any:
    """An instance of the generated servicer for ``service`` wired to ``handlers``."""
    descriptor = api_pb2.DESCRIPTOR.services_by_name[service]
    unknown = set(handlers) - {m.name for m in descriptor.methods}
    if unknown:
        raise ValueError(f"handlers for rpcs not in {service}: {sorted(unknown)}")
    attrs: dict[str, Any] = {}
    for method in descriptor.methods:
        handler = handlers.get(method.name)
        attrs[method.name] = (
            _bound(handler, services)
            if handler is not None
            else _unimplemented(service, method.name, method.server_streaming)
        )
    base = getattr(api_pb2_grpc, f"{service}Servicer")
    return type(f"Peapod{service}", (base,), attrs)()


def register(
    server: grpc.Server,
    runtime_handlers: dict[str, Handler],
    image_handlers: dict[str, Handler],
    services: Any,
) -> None:
    """Add both CRI services to ``server``; handlers get ``services`` as first argument."""
    _add(server, "RuntimeService", build("RuntimeService", runtime_handlers, services))
    _add(server, "ImageService", build("ImageService", image_handlers, services))


def method_handlers(service: str, servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    """What the generated ``add_<service>Servicer_to_server`` registers, but with
    response serializers that pass an ``Encoded`` reply through."""
    descriptor = api_pb2.DESCRIPTOR.services_by_name[service]
    out = {}
    for method in descriptor.methods:
        if method.client_streaming:
            raise ValueError(f"{service}.{method.name} streams requests; not supported")
        request = getattr(api_pb2, method.input_type.name)
        reply = getattr(api_pb2, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        out[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=wire.serializer(reply),
        )
    return out


def _add(server: grpc.Server, service: str, servicer: Any) -> None:
    name = api_pb2.DESCRIPTOR.services_by_name[service].full_name
    handlers = method_handlers(service, servicer)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)
