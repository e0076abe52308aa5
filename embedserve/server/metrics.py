"""Prometheus metrics: requests by RPC and status, latency, batch sizes, queue depth, collection sizes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    """One registry per server, so several servers in one process (tests) stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "embedserve_requests",
            "RPCs handled, by method and status code",
            ["rpc", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "embedserve_request_seconds",
            "RPC latency in seconds",
            ["rpc"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "embedserve_batch_size",
            "Inputs per ONNX Runtime batch, by model and tower",
            ["model", "tower"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.items = Counter(
            "embedserve_items_written",
            "Items upserted or deleted",
            ["collection", "op"],
            registry=self.registry,
        )

    def observe_batch(self, model: str, tower: str) -> Callable[[int], None]:
        child = self.batch_size.labels(model, tower)
        return child.observe

    def add_gauges(
        self,
        queue_depths: Callable[[], Iterable[tuple[str, str, int]]],
        collection_sizes: Callable[[], Iterable[tuple[str, int, int]]],
    ) -> None:
        """Gauges read at scrape time: (model, tower, depth) and (collection, items, bytes)."""
        self.registry.register(_Gauges(queue_depths, collection_sizes))

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)


class _Gauges(Collector):
    def __init__(self, queue_depths, collection_sizes) -> None:
        self._queue_depths = queue_depths
        self._collection_sizes = collection_sizes

    def collect(self):
        depth = GaugeMetricFamily(
            "embedserve_queue_depth", "Inputs waiting in a batcher", labels=["model", "tower"]
        )
        for model, tower, n in self._queue_depths():
            depth.add_metric([model, tower], n)
        items = GaugeMetricFamily(
            "embedserve_collection_items", "Live items per collection", labels=["collection"]
        )
        size = GaugeMetricFamily(
            "embedserve_collection_bytes", "Approximate memory per collection", labels=["collection"]
        )
        for name, count, nbytes in self._collection_sizes():
            items.add_metric([name], count)
            size.add_metric([name], nbytes)
        yield depth
        yield items
        yield size
