"""Size limits answer RESOURCE_EXHAUSTED and the server keeps serving; GPU paths skip cleanly without a GPU."""

import grpc
import numpy as np
import onnxruntime
import pytest

from embedserve.client import Client, item
from tests.conftest import ServerThread, encode_image, make_config, random_images, status_of


@pytest.fixture(scope="module")
def small_server(bundles, tmp_path_factory):
    srv = ServerThread(
        make_config(
            bundles,
            tmp_path_factory.mktemp("data"),
            max_message_bytes=200_000,
            max_image_bytes=2_000,
            max_image_pixels=64 * 64,
        )
    )
    yield srv
    srv.stop()


def test_oversized_message(small_server):
    with small_server.client() as c:
        got, _ = status_of(lambda: c.embed([b"\x00" * 300_000], model="tiny-image"))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.embed(random_images(1), model="tiny-image").shape == (1, 16)


def test_oversized_image_bytes_and_pixels(small_server):
    rng = np.random.default_rng(0)
    big_bytes = encode_image(rng.integers(0, 256, (60, 60)))  # noisy: > 2000 bytes as PNG
    big_pixels = encode_image(np.zeros((100, 100)))  # compresses small, but 10,000 pixels
    assert len(big_pixels) < 2_000 < len(big_bytes)
    with small_server.client() as c:
        ok = random_images(1)[0]
        got, details = status_of(lambda: c.embed([ok, big_bytes], model="tiny-image"))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "item 1" in details
        got, details = status_of(lambda: c.embed([big_pixels], model="tiny-image"))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "item 0" in details
        c.create_collection("limits")
        got, _ = status_of(lambda: c.upsert("limits", [item("a", image=ok), item("b", image=big_bytes)]))
        assert got == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.describe_collection("limits").count == 0


def test_deadline_exceeded(server):
    # 64 images, not a few: gRPC may still complete a call whose deadline has passed when the
    # reply comes before the client handles its deadline timer, and the tiny model answers 4
    # images that fast in most calls of a warm loop (measured: 230-280 of 400 came back OK)
    with Client(server.target, timeout=0.000001) as c:
        got, _ = status_of(lambda: c.embed(random_images(64), model="tiny-image"))
    assert got == grpc.StatusCode.DEADLINE_EXCEEDED
    with server.client() as c:
        assert c.embed(random_images(1), model="tiny-image").shape == (1, 16)


CUDA = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs onnxruntime with the CUDA execution provider and a GPU")
def test_cuda_server_reports_cuda(bundles, tmp_path):
    srv = ServerThread(make_config(bundles, tmp_path / "data", device="cuda"))
    try:
        with srv.client() as c:
            towers = [t for m in c.list_models().models for t in m.towers]
            assert all(t.execution_provider == "CUDAExecutionProvider" for t in towers)
            assert c.embed(random_images(3), model="tiny-image").shape == (3, 16)
    finally:
        srv.stop()


@pytest.mark.skipif(CUDA, reason="this machine has CUDA")
def test_cuda_requested_without_gpu_fails_loudly(bundles, tmp_path):
    with pytest.raises(RuntimeError, match="CUDA"):
        ServerThread(make_config(bundles, tmp_path / "data", device="cuda"))


def test_errors_quote_a_short_prefix_of_huge_inputs(client):
    """A 20k-character name, a 10 kB index spec, a 100k-character id: the right code, a short message."""
    from embedserve.client import item

    checks = [
        (lambda: client.create_collection("n" * 20_000), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda: client.create_collection("spec-test", index_spec="HNSW32," * 1500),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (lambda: client.describe_collection("x" * 20_000), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: client.embed(["a"], model="m" * 50_000), grpc.StatusCode.NOT_FOUND),
    ]
    client.create_collection("quote-test")
    checks.append((lambda: client.get("quote-test", ["i" * 100_000]), grpc.StatusCode.NOT_FOUND))
    checks.append(
        (
            lambda: client.upsert("quote-test", [item("j" * 300, vector=np.ones(16, np.float32))]),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    )
    for call, code in checks:
        got, details = status_of(call)
        assert got == code, details[:200]
        assert len(details) < 400, details[:400]
        assert "characters)" in details or "bytes long" in details, details  # quoted short, or not at all
