"""The server interceptor: metrics, logging and error mapping for every rpc."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from base.errors import PeapodError
from cri.grpc_status import status_for
from cri.metrics import Metrics

log = logging.getLogger("peapod.rpc")


class CallInterceptor(grpc.ServerInterceptor):
    """Times each call, counts it and its errors, and maps domain errors to status codes."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # The rpcs are registered once, so each method's wrapped handler is made once.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        wrapped = self._wrap(method.rsplit("/", 1)[-1], handler)
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, operation: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(operation, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(operation, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(self, operation: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        record = self._recorder(operation)

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            try:
                return behavior(request, context)
            except BaseException as exc:
                self._fail(operation, exc, context)
            finally:
                record(start, context)

        return call

    def _wrap_stream(self, operation: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        record = self._recorder(operation)

        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            start = time.perf_counter()
            try:
                yield from behavior(request, context)
            except BaseException as exc:
                self._fail(operation, exc, context)
            finally:
                record(start, context)

        return call

    def _fail(self, operation: str, exc: BaseException, context: grpc.ServicerContext) -> None:
        if isinstance(exc, GeneratorExit):
            raise exc
        if _is_abort(exc, context):
            raise exc  # the handler already set the status
        code, message = status_for(exc)
        if isinstance(exc, PeapodError):
            log.info(
                "rpc failed", extra={"rpc": operation, "code": code.name, "error": message}
            )
        else:
            log.error("rpc crashed", exc_info=exc, extra={"rpc": operation})
        context.abort(code, message)

    def _recorder(self, operation: str) -> Callable[[float, grpc.ServicerContext], None]:
        """Records one call of ``operation`` (its metric children looked up once)."""
        m = self._metrics
        count = m.operations.labels(operation)
        latency = m.operation_latency.labels(operation)

        def record(start: float, context: grpc.ServicerContext) -> None:
            elapsed = time.perf_counter() - start
            count.inc()
            latency.observe(elapsed)
            code = context.code()
            if code is not None and code != grpc.StatusCode.OK:
                m.operation_errors.labels(operation, code.name).inc()
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "rpc done",
                    extra={
                        "rpc": operation,
                        "ms": round(elapsed * 1000, 3),
                        "code": (code or grpc.StatusCode.OK).name,
                    },
                )

        return record


def _is_abort(exc: BaseException, context: grpc.ServicerContext) -> bool:
    # grpc's sync server signals context.abort() with a bare Exception().
    code = context.code()
    return type(exc) is Exception and not exc.args and code not in (None, grpc.StatusCode.OK)
