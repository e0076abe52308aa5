"""Many clients at once: each gets exactly its own rows back, and the batcher coalesces them."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from embedserve.client import item
from tests.conftest import random_images


def test_concurrent_embeds_are_not_mixed(server):
    images = random_images(64, seed=21)
    with server.client() as c:
        reference = c.embed(images)  # one request: no coalescing question

    def worker(w):
        rng = np.random.default_rng(w)
        picks = rng.integers(0, len(images), rng.integers(1, 9))
        with server.client() as c:
            for _ in range(5):
                got = c.embed([images[i] for i in picks])
                np.testing.assert_allclose(got, reference[picks], atol=1e-5)
        return True

    with ThreadPoolExecutor(24) as pool:
        assert all(pool.map(worker, range(24)))

    text = server.server.metrics.registry.get_sample_value
    batches = text("embedserve_batch_size_count", {"model": "tiny-image", "tower": "image"})
    items = text("embedserve_batch_size_sum", {"model": "tiny-image", "tower": "image"})
    assert batches and items / batches > 1.0, "concurrent requests were never coalesced"


def test_concurrent_upserts_and_searches(server):
    with server.client() as c:
        c.create_collection("conc")
    vecs = np.random.default_rng(3).standard_normal((40 * 25, 16)).astype(np.float32)

    def writer(w):
        with server.client() as c:
            for j in range(5):
                rows = range(w * 25 + j * 5, w * 25 + j * 5 + 5)
                c.upsert("conc", [item(f"w{i}", vector=vecs[i], label=str(w)) for i in rows])
                hits = c.search("conc", [vecs[rows[0]]], k=1)[0]
                assert hits[0].id == f"w{rows[0]}"
        return True

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(writer, range(40)))
    with server.client() as c:
        assert c.describe_collection("conc").count == 1000
