"""SearchService.Search: exact against numpy for Flat, approximate recall, filters and errors."""

import concurrent.futures

import grpc
import numpy as np
import pytest

from embedserve.client import ById, item, query
from embedserve.v1 import embedserve_pb2 as pb
from tests.conftest import random_images, status_of


def clustered(n, dim=16, clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 4
    assign = rng.integers(0, clusters, n)
    return (centres[assign] + rng.standard_normal((n, dim))).astype(np.float32), assign


def brute_force(base, queries, k, metric):
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    if metric == "l2":
        d = ((queries[:, None, :] - base[None]) ** 2).sum(-1)
        order = np.argsort(d, axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(d, order, 1)
    s = queries @ base.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


def fill(client, name, vecs, labels=None, batch=500, first=0):
    """Upsert rows as ids id{first}, id{first+1}, ..."""
    for j in range(0, len(vecs), batch):
        client.upsert(
            name,
            [
                item(f"id{first + i}", vector=vecs[i], label=None if labels is None else str(labels[i]))
                for i in range(j, min(j + batch, len(vecs)))
            ],
        )


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_flat_search_is_exact(client, metric):
    name = f"flat-{metric}"
    client.create_collection(name, metric=metric)
    base, _ = clustered(600, seed=1)
    fill(client, name, base)
    queries = np.random.default_rng(2).standard_normal((7, 16)).astype(np.float32)
    results = client.search(name, list(queries), k=10)
    order, scores = brute_force(base, queries, 10, metric)
    for row, exp_ids, exp_scores in zip(results, order, scores):
        assert [int(h.id[2:]) for h in row] == list(exp_ids)
        np.testing.assert_allclose([h.score for h in row], exp_scores, rtol=1e-4, atol=1e-4)


def test_search_by_image_and_by_id(client):
    client.create_collection("img-search")
    images = random_images(30, seed=11)
    client.upsert(
        "img-search", [item(f"i{j}", image=b, metadata={"j": str(j)}) for j, b in enumerate(images)]
    )
    hits = client.search("img-search", [images[4]], k=3)[0]
    assert hits[0].id == "i4" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].metadata["j"] == "4"
    by_id = client.search("img-search", [ById("i4")], k=3)[0]
    assert [h.id for h in by_id] == [h.id for h in hits[1:]] + [by_id[-1].id]
    assert "i4" not in [h.id for h in by_id]
    no_meta = client.search("img-search", [images[4]], k=1, include_metadata=False)[0]
    assert dict(no_meta[0].metadata) == {}


def test_fewer_items_than_k(client):
    client.create_collection("tiny-coll")
    fill(client, "tiny-coll", np.eye(16, dtype=np.float32)[:3])
    assert len(client.search("tiny-coll", [np.ones(16, np.float32)], k=10)[0]) == 3


def test_label_filter(client):
    client.create_collection("filtered")
    base, assign = clustered(500, seed=3)
    labels = assign % 3
    fill(client, "filtered", base, labels)
    hits = client.search("filtered", [base[0]], k=20, label_filter=["1"])[0]
    assert len(hits) == 20 and {h.label for h in hits} == {"1"}
    allowed = np.flatnonzero(labels == 1)
    order, _ = brute_force(base[allowed], base[:1], 20, "cosine")
    assert [h.id for h in hits] == [f"id{allowed[i]}" for i in order[0]]


def test_approximate_default_hnsw_recall(client):
    client.create_collection("hnsw", index_spec="HNSW32")
    base, _ = clustered(5000, dim=16, clusters=50, seed=5)
    fill(client, "hnsw", base, batch=1000)
    queries, _ = clustered(100, dim=16, clusters=50, seed=5)
    queries = queries + np.random.default_rng(6).standard_normal(queries.shape).astype(np.float32) * 0.1
    results = client.search("hnsw", list(queries), k=10, ef_search=64)
    order, _ = brute_force(base, queries, 10, "cosine")
    recall = np.mean([len({int(h.id[2:]) for h in row} & set(exp)) / 10 for row, exp in zip(results, order)])
    assert recall >= 0.95


def test_ivf_trains_then_searches_with_nprobe(client):
    client.create_collection("ivf", index_spec="IVF16,Flat", train_size=800)
    base, _ = clustered(1500, seed=7)
    fill(client, "ivf", base[:500])
    assert not client.describe_collection("ivf").trained
    exact = client.search("ivf", [base[0]], k=5)[0]  # untrained: exact search
    assert exact[0].id == "id0"
    fill(client, "ivf", base[500:], first=500)
    assert client.describe_collection("ivf").trained
    queries = base[:50] + 0.05
    order, _ = brute_force(base, queries, 10, "cosine")
    results = client.search("ivf", list(queries), k=10, nprobe=16)  # all lists: exact again
    assert all([int(h.id[2:]) for h in row] == list(exp) for row, exp in zip(results, order))


@pytest.mark.parametrize("k", [-1, 1025])
def test_k_out_of_range(client, k):
    client.create_collection(f"k-range{k}")
    got, details = status_of(lambda: client.search(f"k-range{k}", [np.ones(16, np.float32)], k=k))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "k" in details


def test_query_errors(client):
    client.create_collection("q-errors")
    fill(client, "q-errors", np.eye(16, dtype=np.float32)[:4])
    good = np.ones(16, np.float32)
    cases = [
        ([good, np.ones(5, np.float32)], grpc.StatusCode.INVALID_ARGUMENT, "query 1"),
        ([good, np.full(16, np.inf, np.float32)], grpc.StatusCode.INVALID_ARGUMENT, "query 1"),
        ([good, good, ById("nope")], grpc.StatusCode.NOT_FOUND, "query 2"),
        ([b"not an image"], grpc.StatusCode.INVALID_ARGUMENT, "query 0"),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "queries"),
    ]
    for queries, code, fragment in cases:
        got, details = status_of(lambda queries=queries: client.search("q-errors", queries))
        assert got == code and fragment in details, (queries, details)
    assert len(client.search("q-errors", [good], k=2)[0]) == 2


def test_packed_results_are_the_hits_without_their_messages(client):
    """SearchRequest.packed: per query the same ids and scores as the hits, on every search path
    (plain, past tombstones, label filter, by id, fewer items than k, concurrent calls)."""
    client.create_collection("packed", metric="l2")
    base, assign = clustered(400, seed=8)
    fill(client, "packed", base, assign % 3)
    queries = [base[5], base[17] + 0.1, ById("id10")]

    def same(**options):
        hits = client.search("packed", queries, k=12, **options)
        packed = client.search_packed("packed", queries, k=12, **options)
        assert [ids for ids, _ in packed] == [[h.id for h in row] for row in hits]
        for (_, scores), row in zip(packed, hits, strict=True):
            assert scores.dtype == np.float32
            np.testing.assert_array_equal(scores, np.array([h.score for h in row], np.float32))
        return packed

    assert [len(ids) for ids, _ in same()] == [12, 12, 12]
    assert "id10" not in same()[2][0]
    assert all(assign[int(i[2:])] % 3 == 1 for i in same(label_filter=["1"])[0][0])
    client.delete("packed", [f"id{i}" for i in range(0, 400, 3)])  # tombstones: over-fetched past
    assert all(int(i[2:]) % 3 for ids, _ in same() for i in ids)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # calls in flight together: the search pool
        list(pool.map(lambda _: same(), range(8)))
    client.create_collection("packed-few")
    fill(client, "packed-few", base[:3])
    assert [len(ids) for ids, _ in client.search_packed("packed-few", [base[0]], k=10)] == [3]

    request = pb.SearchRequest(
        collection="packed", queries=[query(base[0])], packed=True, include_metadata=True
    )
    code, details = status_of(lambda: client.searcher.Search(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "packed results carry ids and scores only" in details


def test_a_query_tensor_searches_as_its_rows_would(client):
    """SearchRequest.vectors ([Q, dim], one tensor): the same hits as the rows sent as Query
    messages, packed or not, with filters; bad tensors get INVALID_ARGUMENT or RESOURCE_EXHAUSTED
    before any work, and errors about a row name it as that query."""
    client.create_collection("tensor-q", metric="cosine")
    base, assign = clustered(300, seed=11)
    fill(client, "tensor-q", base, assign % 4)
    queries = np.random.default_rng(12).standard_normal((9, 16)).astype(np.float32)
    for options in ({}, {"label_filter": ["2"]}):
        as_rows = client.search("tensor-q", list(queries), k=7, **options)
        as_tensor = client.search("tensor-q", queries, k=7, **options)
        assert [[(h.id, h.score, h.label) for h in r] for r in as_tensor] == [
            [(h.id, h.score, h.label) for h in r] for r in as_rows
        ]
        packed = client.search_packed("tensor-q", queries, k=7, **options)
        assert [ids for ids, _ in packed] == [[h.id for h in r] for r in as_rows]

    def tensor_request(shape, data, **fields):
        return pb.SearchRequest(collection="tensor-q", vectors=pb.Tensor(shape=shape, data=data), **fields)

    good = queries.tobytes()
    cases = [
        (tensor_request([9, 16], good[:-4]), grpc.StatusCode.INVALID_ARGUMENT, "needs 576 bytes"),
        (tensor_request([9 * 16], good), grpc.StatusCode.INVALID_ARGUMENT, "shape [queries, dim]"),
        (tensor_request([0, 16], b""), grpc.StatusCode.INVALID_ARGUMENT, "shape [queries, dim]"),
        (
            tensor_request([16, 9], good),
            grpc.StatusCode.INVALID_ARGUMENT,
            "dimension 9, collection 'tensor-q' expects 16",
        ),
        (tensor_request([1 << 40, 16], good), grpc.StatusCode.INVALID_ARGUMENT, "bytes of float32"),
        (
            tensor_request([9, 16], good, queries=[query(queries[0])]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "queries or vectors, not both",
        ),
    ]
    nan = queries.copy()
    nan[4, 3] = np.nan
    cases.append((tensor_request([9, 16], nan.tobytes()), grpc.StatusCode.INVALID_ARGUMENT, "query 4"))
    many = np.ones((20_000, 16), np.float32)
    cases.append(
        (tensor_request([20_000, 16], many.tobytes()), grpc.StatusCode.RESOURCE_EXHAUSTED, "max_queries")
    )
    for request, code, fragment in cases:
        got, details = status_of(lambda request=request: client.searcher.Search(request))
        assert got == code and fragment in details, (list(request.vectors.shape), details)
    assert len(client.search("tensor-q", queries[:1], k=3)[0]) == 3  # still serving
