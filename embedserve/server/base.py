"""What every service shares: the server's parts, and the wrapper that maps errors to status codes."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from embedserve.config import ServerConfig
from embedserve.errors import EmbedServeError, NotFound, Unavailable
from embedserve.labelling.labeller import Labeller
from embedserve.models import Model, ModelRegistry
from embedserve.server.decoding import Undecodable
from embedserve.server.metrics import Metrics
from embedserve.server.pools import Pools
from embedserve.server.status import status_code
from embedserve.store import Collection, Store

log = logging.getLogger("embedserve.server")

# a status message travels in a trailer: keep it far below gRPC's metadata limit, whatever a
# message quotes (errors quote client values short, see embedserve.errors.quote; this is the net)
MAX_STATUS_CHARS = 2000


@dataclass
class Parts:
    """The server's components, handed to every service."""

    config: ServerConfig
    registry: ModelRegistry
    store: Store
    metrics: Metrics
    pools: Pools
    labeller: Labeller
    ready: bool = False
    in_flight: int = 0  # calls of our services being handled now (the rpc wrapper counts them)

    def model(self, name: str) -> Model:
        return self.registry.get(name)

    def model_of(self, collection: Collection) -> Model | None:
        """The collection's bundle, or None if it is not loaded (raw vectors still work)."""
        try:
            return self.registry.get(collection.spec.model)
        except NotFound:
            return None


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline as an absolute time.monotonic() value, or None."""
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e8:
        return None
    return time.monotonic() + remaining


Admit = Callable[[Parts, Any], None]


def rpc(name: str, *, admit: Admit | None = None, stream: bool = False):
    """Wrap a servicer method: readiness, decoding and admission checks, typed errors -> status,
    metrics, logging.

    ``admit(parts, request)`` is the RPC's admission check (``embedserve.server.admission``),
    run before the method does any work; with ``stream=True`` the method takes a request
    iterator and every message is checked as it arrives. The metrics are recorded before
    the status goes out, so a client that has its answer also finds it counted.
    """

    def wrap(method):
        @functools.wraps(method)
        async def handler(self, request, context: grpc.aio.ServicerContext):
            parts: Parts = self.parts
            started = time.perf_counter()
            code, message = grpc.StatusCode.OK, ""
            parts.in_flight += 1
            try:
                if not parts.ready:
                    raise Unavailable("server is starting: models are still loading")
                if stream:
                    request = _admitted(request, parts, admit)
                else:
                    if isinstance(request, Undecodable):
                        raise request.error()
                    if admit is not None:
                        admit(parts, request)
                return await method(self, request, context)
            except EmbedServeError as err:
                code, message = status_code(err), err.message[:MAX_STATUS_CHARS]
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as exc:  # a bug: report it, keep serving
                code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
                log.exception("%s failed", name)
            finally:
                parts.in_flight -= 1
                parts.metrics.requests.labels(name, code.name).inc()
                parts.metrics.latency.labels(name).observe(time.perf_counter() - started)
            await context.abort(code, message)

        return handler

    return wrap


async def _admitted(requests: AsyncIterator[Any], parts: Parts, admit: Admit | None) -> AsyncIterator[Any]:
    """A client stream whose every message decoded and passed admission (or the error is raised)."""
    async for request in requests:
        if isinstance(request, Undecodable):
            raise request.error()
        if admit is not None:
            admit(parts, request)
        yield request
