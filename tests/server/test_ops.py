"""Health, reflection, Prometheus metrics, NOT_SERVING while loading."""

import socket
import urllib.request

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from embedserve.client import item
from tests.conftest import ServerThread, make_config


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_serving_for_every_service(client):
    assert client.health() == "SERVING"
    for service in ("embedserve.v1.EmbedService", "embedserve.v1.SearchService"):
        assert client.health(service) == "SERVING"


def test_reflection_lists_services(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(stub.ServerReflectionInfo(iter([request])))
        names = {s.name for s in reply.list_services_response.service}
    assert {
        "embedserve.v1.EmbedService",
        "embedserve.v1.CollectionService",
        "embedserve.v1.IndexService",
        "embedserve.v1.SearchService",
        "grpc.health.v1.Health",
    } <= names


def test_metrics_endpoint(bundles, tmp_path):
    port = _free_port()
    srv = ServerThread(make_config(bundles, tmp_path / "data", metrics_port=port))
    try:
        with srv.client() as c:
            c.create_collection("m")
            c.upsert("m", [item("a", vector=np.ones(16, np.float32))])
            c.embed(["hello world"], model="tiny-text")
            try:
                c.describe_collection("missing")
            except grpc.RpcError:
                pass
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        srv.stop()
    assert 'embedserve_requests_total{code="OK",rpc="Upsert"} 1.0' in text
    assert 'embedserve_requests_total{code="NOT_FOUND",rpc="DescribeCollection"} 1.0' in text
    assert "embedserve_request_seconds_bucket" in text
    assert 'embedserve_batch_size_count{model="tiny-text",tower="text"} 1.0' in text
    assert 'embedserve_collection_items{collection="m"} 1.0' in text
    assert 'embedserve_queue_depth{model="tiny-image",tower="image"} 0.0' in text
    # the batchers' totals: one text run of one input, by one request
    assert 'embedserve_batcher_runs_total{model="tiny-text",tower="text"} 1.0' in text
    assert 'embedserve_batcher_items_total{model="tiny-text",tower="text"} 1.0' in text
    assert 'embedserve_batcher_requests_total{model="tiny-text",tower="text"} 1.0' in text
    busy = float(
        text.split('embedserve_batcher_busy_seconds_total{model="tiny-text",tower="text"} ')[1].split()[0]
    )
    assert 0 < busy < 5
    assert 'embedserve_batcher_runs_total{model="tiny-image",tower="image"} 0.0' in text


def test_not_serving_until_ready(bundles, tmp_path):
    """Before start() finishes loading, health says NOT_SERVING and RPCs say UNAVAILABLE."""
    import asyncio
    import threading

    from embedserve.server.app import EmbedServer

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    release = threading.Event()
    entered = threading.Event()
    config = make_config(bundles, tmp_path / "data")

    async def build():
        server = EmbedServer(config)
        original = server.registry.load

        def slow_load(paths):
            entered.set()
            release.wait(30)
            original(paths)

        server.registry.load = slow_load
        task = asyncio.ensure_future(server.start())
        while not entered.is_set():
            await asyncio.sleep(0.01)
        return server, task

    server, task = asyncio.run_coroutine_threadsafe(build(), loop).result(30)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            from embedserve.client import Client

            with Client(f"127.0.0.1:{server.port}") as c:
                try:
                    c.list_models()
                    raise AssertionError("expected UNAVAILABLE")
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE
            release.set()
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(task), 60), loop).result(60)
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(server.stop(grace=1), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)


def test_broken_pipeline_turns_health_not_serving(bundles, tmp_path):
    """If a tower's batch worker dies, health reports NOT_SERVING (and that tower answers UNAVAILABLE)."""
    import time

    srv = ServerThread(make_config(bundles, tmp_path / "data"))
    try:
        with srv.client() as c:
            assert c.health() == "SERVING"
            batcher = srv.server.registry.get("tiny-text").towers["text"].batcher
            srv.loop.call_soon_threadsafe(batcher._worker.cancel)
            deadline = time.monotonic() + 10
            while c.health() != "NOT_SERVING" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert c.health() == "NOT_SERVING"
            try:
                c.embed(["the cat"], model="tiny-text")
                raise AssertionError("expected UNAVAILABLE")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert c.embed([_png()], model="tiny-image").shape == (1, 16)
    finally:
        srv.stop()


def _png():
    from tests.conftest import random_images

    return random_images(1)[0]


def test_health_watch_streams_through_the_decoding_layer(server):
    """Watch (a server stream of a service we do not write) still works behind RequestDecoding."""
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stream = stub.Watch(health_pb2.HealthCheckRequest(service="embedserve.v1.SearchService"), timeout=5)
        first = next(stream)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stream.cancel()


def test_faiss_threads_reach_the_threads_that_search(server):
    """OpenMP's thread count is per thread: each search and write pool thread sets faiss_threads."""
    import asyncio

    import faiss

    pools = server.server.pools

    async def threads_seen():
        reads = [pools.reading(faiss.omp_get_max_threads) for _ in range(8)]
        writes = [pools.writing(faiss.omp_get_max_threads) for _ in range(8)]
        return await asyncio.gather(*reads, *writes)

    seen = asyncio.run_coroutine_threadsafe(threads_seen(), server.loop).result(timeout=30)
    assert set(seen) == {server.config.faiss_threads} == {1}


def test_a_search_alone_in_flight_takes_every_core_and_gives_them_back(server):
    """reading_alone runs its call with one OpenMP thread per core; the pool thread then returns to
    faiss_threads for the searches that run side by side."""
    import asyncio
    import os

    import faiss

    pools = server.server.pools

    async def threads_seen():
        alone = await pools.reading_alone(faiss.omp_get_max_threads)
        after = await asyncio.gather(*[pools.reading(faiss.omp_get_max_threads) for _ in range(8)])
        return alone, set(after)

    alone, after = asyncio.run_coroutine_threadsafe(threads_seen(), server.loop).result(timeout=30)
    assert alone == pools.cores == (os.cpu_count() or 2)
    assert after == {server.config.faiss_threads}
