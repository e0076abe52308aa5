"""Requests whose bytes are not a valid message get INVALID_ARGUMENT, on every service.

gRPC decodes a request with the method's deserializer before any servicer code
runs, and turns a decode failure into UNKNOWN that no wrapper or metric sees.
This interceptor swaps in a deserializer that never raises: it hands the
servicer an ``Undecodable`` in place of the message. Our own services see it in
the ``rpc`` wrapper (``embedserve.server.base``), which answers INVALID_ARGUMENT
and counts it like any other error; for the services we do not write (health,
reflection) the interceptor answers and counts it itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc

from embedserve.errors import InvalidArgument


@dataclass(frozen=True)
class Undecodable:
    """What the servicer receives in place of a request that failed to decode."""

    method: str
    size: int
    reason: str

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"the request ({self.size} bytes) is not a valid {self.method} message: {self.reason[:200]}"
        )


def _safe(deserializer: Callable[[bytes], object] | None, method: str) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as err:  # DecodeError, or anything a foreign deserializer raises
            return Undecodable(method, len(data), f"{type(err).__name__}: {err}")

    return decode


class RequestDecoding(grpc.aio.ServerInterceptor):
    """Wraps every method handler once (cached by method name; unknown methods are not cached)."""

    def __init__(self, own_services: tuple[str, ...], on_undecodable: Callable[[str], None]) -> None:
        """``own_services``: full names whose servicers use the ``rpc`` wrapper;
        ``on_undecodable(method_name)`` counts a refusal answered here."""
        self._own = tuple(f"/{name}/" for name in own_services)
        self._count = on_undecodable
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        method = details.method
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler) -> grpc.RpcMethodHandler:
        name = method.rsplit("/", 1)[-1]
        decode = _safe(handler.request_deserializer, name)
        if method.startswith(self._own):
            return handler._replace(request_deserializer=decode)
        kind = ("stream_" if handler.request_streaming else "unary_") + (
            "stream" if handler.response_streaming else "unary"
        )
        behavior = getattr(handler, kind)
        streaming, count = handler.request_streaming, self._count

        async def refuse(request: Undecodable, context) -> None:
            count(name)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.error().message)

        async def checked_stream(request_iterator, context) -> AsyncIterator[object]:
            async for request in request_iterator:
                if isinstance(request, Undecodable):
                    await refuse(request, context)
                yield request

        async def checked(request, context):
            if streaming:
                request = checked_stream(request, context)
            elif isinstance(request, Undecodable):
                await refuse(request, context)
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):  # an async-generator servicer: relay what it yields
                async for response in result:
                    await context.write(response)
                return None
            return await result

        return handler._replace(request_deserializer=decode, **{kind: checked})
