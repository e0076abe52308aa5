"""Prometheus metrics: requests by RPC and status, latency, batch sizes, queue depth, collection sizes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from embedserve.models.batcher import BatcherStats

# the batchers' totals, as counters embedserve_batcher_<key>_total (key: help text, BatcherStats
# field): rate(busy_seconds) is a tower's utilisation (1 = a model run at every moment),
# rate(wait_seconds) / rate(requests) its mean queue delay
BATCHER_TOTALS = {
    "runs": ("Model runs: batches and lone requests (Batcher.run_alone)", "batches"),
    "items": ("Inputs run", "items"),
    "busy_seconds": (
        "Wall seconds spent in model runs (preprocessing of lone requests included)",
        "busy_seconds",
    ),
    "requests": ("Requests that reached a model run", "requests"),
    "wait_seconds": ("Seconds requests waited in the queue before their first batch", "wait_seconds"),
}


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
        batcher_stats: Callable[[], Iterable[tuple[str, str, BatcherStats]]] = lambda: (),
    ) -> None:
        """Read at scrape time: (model, tower, depth), (collection, items, bytes) and
        (model, tower, the batcher's running totals)."""
        self.registry.register(_Gauges(queue_depths, collection_sizes, batcher_stats))

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)


class _Gauges(Collector):
    def __init__(self, queue_depths, collection_sizes, batcher_stats) -> None:
        self._queue_depths = queue_depths
        self._collection_sizes = collection_sizes
        self._batcher_stats = batcher_stats

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
        families = {
            key: CounterMetricFamily(f"embedserve_batcher_{key}", text, labels=["model", "tower"])
            for key, (text, _) in BATCHER_TOTALS.items()
        }
        for model, tower, stats in self._batcher_stats():
            for key, (_, attr) in BATCHER_TOTALS.items():
                families[key].add_metric([model, tower], getattr(stats, attr))
        yield from families.values()
