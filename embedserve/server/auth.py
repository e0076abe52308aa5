"""Bearer-token authentication as a gRPC interceptor (health checks stay open)."""

from __future__ import annotations

import hmac

import grpc

OPEN_METHODS = ("/grpc.health.v1.Health/",)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` for a configured token."""

    def __init__(self, tokens: frozenset[str], on_reject=None) -> None:
        """``on_reject(rpc_name)`` is called for each refused call (metrics)."""
        self._tokens = [t.encode() for t in tokens]
        self._on_reject = on_reject

    def _accepts(self, header: str | None) -> bool:
        if not header or not header.lower().startswith("bearer "):
            return False
        given = header[7:].strip().encode()
        # compare against every token in constant time, so timing leaks nothing
        return any([hmac.compare_digest(given, t) for t in self._tokens])

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if details.method.startswith(OPEN_METHODS):
            return await continuation(details)
        header = dict(details.invocation_metadata or ()).get("authorization")
        if self._accepts(header):
            return await continuation(details)
        message = "missing bearer token" if not header else "invalid bearer token"
        if self._on_reject is not None:
            self._on_reject(details.method.rsplit("/", 1)[-1])
        handler = await continuation(details)
        return _deny(handler, message)


def _deny(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as ``handler`` that only aborts."""

    async def abort(request_or_iterator, context: grpc.aio.ServicerContext):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    request_streaming = handler is not None and handler.request_streaming
    response_streaming = handler is not None and handler.response_streaming
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(request_streaming, response_streaming)]
    return make(abort)
