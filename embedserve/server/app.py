"""The server process: build the parts, serve gRPC, drain and flush on SIGTERM."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedserve.config import ServerConfig
from embedserve.labelling.labeller import Labeller
from embedserve.models import ModelRegistry, discover_bundles
from embedserve.server.auth import BearerTokenInterceptor
from embedserve.server.base import Parts
from embedserve.server.collections import CollectionService
from embedserve.server.decoding import RequestDecoding
from embedserve.server.embed import EmbedService
from embedserve.server.items import IndexService
from embedserve.server.labels import LabelService
from embedserve.server.metrics import Metrics
from embedserve.server.pools import Pools
from embedserve.server.search import SearchService
from embedserve.server.startup import store_for
from embedserve.store import Store, tune_faiss
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc

log = logging.getLogger("embedserve.server")

SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[s].full_name for s in pb.DESCRIPTOR.services_by_name)
# RPC names the metrics may carry: a made-up method name counts as "unknown", so a stranger
# cannot grow the metrics (one series per name) by calling names that do not exist
KNOWN_RPCS = frozenset(m.name for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods) | {
    "Check",
    "Watch",
    "ServerReflectionInfo",
}
HEALTH_WATCH_S = 1.0
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or a wildcard: reachable from elsewhere


def check_exposure(config: ServerConfig, tokens: frozenset[str]) -> None:
    """Refuse to publish an open API: a non-loopback address needs bearer tokens, or --insecure.

    TLS alone is not enough: it encrypts, but anyone can connect and call every RPC.
    """
    if tokens or is_loopback(config.host):
        return
    if not config.insecure:
        raise RuntimeError(
            f"refusing to listen on {config.host}:{config.port} without bearer tokens: anyone who can "
            "reach it could read, write and delete every collection. Set EMBEDSERVE_AUTH_TOKENS or "
            "--auth-tokens-file (clients send 'authorization: Bearer <token>'), listen on 127.0.0.1, "
            "or pass --insecure (EMBEDSERVE_INSECURE=1) to serve an open API on purpose"
        )
    log.warning(
        "--insecure: listening on %s without authentication; anyone who can reach the port can use every RPC",
        config.host,
    )


class EmbedServer:
    """One running server. ``await start()`` binds and loads; ``await stop()`` drains and flushes."""

    def __init__(self, config: ServerConfig, store: Store | None = None) -> None:
        """``store``: one already opening (``embedserve.server.startup``); built here if None."""
        self.config = config
        self.pools = Pools.from_config(config)  # the threading model: see embedserve.server.pools
        self.metrics = Metrics()
        self.registry = ModelRegistry(
            config,
            self.pools.decode,
            self.pools.infer,
            on_batch=self.metrics.observe_batch,
            decode_workers=self.pools.decode_threads,
        )
        tune_faiss(config.faiss_threads)
        self.store = store if store is not None else store_for(config)
        self.parts = Parts(
            config=config,
            registry=self.registry,
            store=self.store,
            metrics=self.metrics,
            pools=self.pools,
            labeller=Labeller(config.label_cache_bytes),
        )
        self.health = health.aio.HealthServicer()
        self.port: int = 0
        self._server: grpc.aio.Server | None = None
        self._watch: asyncio.Task | None = None
        self._upkeep: asyncio.Future | None = None
        self._stopped = asyncio.Event()

    def _grpc_server(self) -> grpc.aio.Server:
        cfg = self.config
        tokens = cfg.tokens()
        check_exposure(cfg, tokens)

        def refused(code: grpc.StatusCode):
            def count(rpc: str) -> None:
                label = rpc if rpc in KNOWN_RPCS else "unknown"
                self.metrics.requests.labels(label, code.name).inc()

            return count

        # outermost first: authentication, then request decoding (see embedserve.server.decoding)
        decoding = RequestDecoding(SERVICE_NAMES, on_undecodable=refused(grpc.StatusCode.INVALID_ARGUMENT))
        interceptors: list[grpc.aio.ServerInterceptor] = [decoding]
        if tokens:
            interceptors.insert(
                0, BearerTokenInterceptor(tokens, on_reject=refused(grpc.StatusCode.UNAUTHENTICATED))
            )
        limit = cfg.max_message_bytes
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_EmbedServiceServicer_to_server(EmbedService(self.parts), server)
        pb_grpc.add_CollectionServiceServicer_to_server(CollectionService(self.parts), server)
        pb_grpc.add_IndexServiceServicer_to_server(IndexService(self.parts), server)
        pb_grpc.add_SearchServiceServicer_to_server(SearchService(self.parts), server)
        pb_grpc.add_LabelServiceServicer_to_server(LabelService(self.parts), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            SERVICE_NAMES
            + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        address = f"{cfg.host}:{cfg.port}"
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            creds = grpc.ssl_server_credentials([(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())])
            self.port = server.add_secure_port(address, creds)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"cannot bind {address}")
        return server

    async def _set_health(self, status) -> None:
        for name in ("",) + SERVICE_NAMES:
            await self.health.set(name, status)

    async def start(self) -> None:
        """Serve health (NOT_SERVING) at once, load models and collections, then go SERVING."""
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._server = self._grpc_server()
        await self._server.start()
        log.info(
            "listening on %s:%d (%s)",
            self.config.host,
            self.port,
            "TLS" if self.config.tls_cert else "plaintext",
        )
        try:
            await self._load()
        except BaseException:
            await self._server.stop(0)  # a bad bundle or device: close the port, report, exit
            raise
        self.metrics.add_gauges(self._queue_depths, self._collection_sizes, self._batcher_stats)
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", self.config.metrics_host, self.config.metrics_port)
        self.parts.ready = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._watch = asyncio.create_task(self._watch_health())
        # index upkeep that start-up deferred (training, rebuilds after replay): in the write pool,
        # while the server already answers (see embedserve.store.collection, "Restart cost")
        self._upkeep = asyncio.ensure_future(self.pools.writing(self.store.maintain))

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        bundles = [b for d in self.config.model_dirs() for b in discover_bundles(d)]
        # models (ONNX Runtime sessions) and collections (snapshots, log replay) load side by side:
        # a restart costs the slower of the two, not their sum
        models = loop.run_in_executor(self.pools.infer, self.registry.load, bundles)
        collections = asyncio.ensure_future(self.pools.writing(self.store.open))
        try:
            await models
        finally:
            await asyncio.wait([collections])  # never leave the store half-open behind an error
        collections.result()
        if self.config.default_model:
            self.registry.default_name = self.config.default_model  # NotFound if not loaded
        self.registry.start()

    def _queue_depths(self):
        for model in self.registry.list():
            for modality, tower in model.towers.items():
                yield model.name, modality, tower.queue_depth

    def _batcher_stats(self):
        for model in self.registry.list():
            for modality, tower in model.towers.items():
                yield model.name, modality, tower.batcher.stats

    def _collection_sizes(self):
        for collection in self.store.list():
            try:
                stats = collection.stats()
            except Exception:  # one unreadable collection must not break the scrape
                log.exception("collection '%s': stats failed", collection.spec.name)
                continue
            yield collection.spec.name, stats.count, stats.memory_bytes

    async def _watch_health(self) -> None:
        """NOT_SERVING while any batcher pipeline is broken."""
        serving = True
        while True:
            await asyncio.sleep(HEALTH_WATCH_S)
            healthy = self.registry.healthy
            if healthy != serving:
                serving = healthy
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if healthy
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                log.warning("health -> %s", "SERVING" if healthy else "NOT_SERVING")
                await self._set_health(status)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, let in-flight ones finish (up to ``grace`` s), drain batchers, flush the store."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.config.grace_s if grace is None else grace
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
        await self.registry.stop()
        if self._upkeep is not None:
            await asyncio.wait([self._upkeep])  # finishes a rebuild in progress before the flush
        await self.pools.writing(self.store.close)
        self.pools.shutdown()
        log.info("stopped; store flushed")

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(config: ServerConfig, store: Store | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain and flush. ``store``: see EmbedServer."""
    server = EmbedServer(config, store)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    log.info("ready: %d model(s), %d collection(s)", len(server.registry.list()), len(server.store.list()))
    await stop.wait()
    log.info("signal received: draining")
    await server.stop()
