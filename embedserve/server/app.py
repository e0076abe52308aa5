"""The server process: build the parts, serve gRPC, drain and flush on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from embedserve.config import ServerConfig
from embedserve.models import ModelRegistry, discover_bundles
from embedserve.server.auth import BearerTokenInterceptor
from embedserve.server.base import Parts
from embedserve.server.collections import CollectionService
from embedserve.server.embed import EmbedService
from embedserve.server.items import IndexService
from embedserve.server.metrics import Metrics
from embedserve.server.pools import Pools
from embedserve.server.search import SearchService
from embedserve.store import Store, gpu_available, tune_faiss
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc

log = logging.getLogger("embedserve.server")

SERVICE_NAMES = tuple(pb.DESCRIPTOR.services_by_name[s].full_name for s in pb.DESCRIPTOR.services_by_name)
# RPC names the metrics may carry: a made-up method name counts as "unknown", so a stranger
# cannot grow the metrics (one series per name) by calling names that do not exist
KNOWN_RPCS = frozenset(m.name for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods)
HEALTH_WATCH_S = 1.0


class EmbedServer:
    """One running server. ``await start()`` binds and loads; ``await stop()`` drains and flushes."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.pools = Pools.from_config(config)  # the threading model: see embedserve.server.pools
        self.metrics = Metrics()
        self.registry = ModelRegistry(
            config, self.pools.decode, self.pools.infer, on_batch=self.metrics.observe_batch
        )
        tune_faiss(config.faiss_threads)
        # auto: GPU search when FAISS can; cuda: asked for, so the store warns if it cannot
        use_gpu = config.device == "cuda" or (config.device == "auto" and gpu_available())
        log.info("FAISS search on %s", "GPU" if use_gpu else "CPU")
        self.store = Store(config.data, use_gpu=use_gpu, snapshot_wal_bytes=config.snapshot_wal_bytes)
        self.parts = Parts(
            config=config,
            registry=self.registry,
            store=self.store,
            metrics=self.metrics,
            pools=self.pools,
        )
        self.health = health.aio.HealthServicer()
        self.port: int = 0
        self._server: grpc.aio.Server | None = None
        self._watch: asyncio.Task | None = None
        self._stopped = asyncio.Event()

    def _grpc_server(self) -> grpc.aio.Server:
        cfg = self.config
        tokens = cfg.tokens()

        def rejected(rpc: str) -> None:
            label = rpc if rpc in KNOWN_RPCS else "unknown"
            self.metrics.requests.labels(label, grpc.StatusCode.UNAUTHENTICATED.name).inc()

        interceptors = [BearerTokenInterceptor(tokens, on_reject=rejected)] if tokens else []
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
        self.metrics.add_gauges(self._queue_depths, self._collection_sizes)
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
            log.info("metrics on http://%s:%d/metrics", self.config.metrics_host, self.config.metrics_port)
        self.parts.ready = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._watch = asyncio.create_task(self._watch_health())

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        bundles = [b for d in self.config.model_dirs() for b in discover_bundles(d)]
        await loop.run_in_executor(self.pools.infer, self.registry.load, bundles)
        if self.config.default_model:
            self.registry.default_name = self.config.default_model  # NotFound if not loaded
        self.registry.start()
        await self.pools.writing(self.store.open)

    def _queue_depths(self):
        for model in self.registry.list():
            for modality, tower in model.towers.items():
                yield model.name, modality, tower.queue_depth

    def _collection_sizes(self):
        for collection in self.store.list():
            stats = collection.stats()
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
        await self.pools.writing(self.store.close)
        self.pools.shutdown()
        log.info("stopped; store flushed")

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain and flush."""
    server = EmbedServer(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    log.info("ready: %d model(s), %d collection(s)", len(server.registry.list()), len(server.store.list()))
    await stop.wait()
    log.info("signal received: draining")
    await server.stop()
