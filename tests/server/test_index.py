"""IndexService: upsert by image/text/vector, replace, get, delete; all-or-nothing batches."""

import grpc
import numpy as np
import pytest

from embedserve.client import from_tensor, item
from embedserve.v1 import embedserve_pb2 as pb
from tests.conftest import random_images, status_of


def _vecs(n, dim=16, seed=0):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture
def coll(client, request):
    name = request.node.name.replace("[", "_").replace("]", "")[:60]
    client.create_collection(name)
    yield name
    client.delete_collection(name)


def test_upsert_images_and_get(client, coll):
    images = random_images(3, seed=1)
    reply = client.upsert(
        coll,
        [item(f"img{i}", image=b, label=str(i % 2), metadata={"n": str(i)}) for i, b in enumerate(images)],
    )
    assert (reply.upserted, reply.inserted, reply.replaced) == (3, 3, 0)
    got = client.get(coll, ["img2", "img0"], include_vector=True)
    assert [g.id for g in got] == ["img2", "img0"]
    assert got[0].label == "0" and got[0].metadata["n"] == "2"
    np.testing.assert_allclose(from_tensor(got[0].vector), client.embed([images[2]])[0], atol=1e-5)
    assert client.describe_collection(coll).count == 3


def test_upsert_replaces_existing_id(client, coll):
    v = _vecs(2)
    client.upsert(coll, [item("a", vector=v[0], label="x", metadata={"k": "1"})])
    reply = client.upsert(coll, [item("a", vector=v[1])])
    assert (reply.inserted, reply.replaced) == (0, 1)
    got = client.get(coll, ["a"], include_vector=True)[0]
    assert not got.HasField("label") and dict(got.metadata) == {}
    np.testing.assert_allclose(from_tensor(got.vector), v[1] / np.linalg.norm(v[1]), atol=1e-6)
    assert client.describe_collection(coll).count == 1


def test_get_without_vector_and_unknown_id(client, coll):
    client.upsert(coll, [item("a", vector=_vecs(1)[0])])
    assert not client.get(coll, ["a"])[0].HasField("vector")
    got, details = status_of(lambda: client.get(coll, ["a", "zzz"]))
    assert got == grpc.StatusCode.NOT_FOUND and "item 1" in details and "zzz" in details


def test_delete(client, coll):
    client.upsert(coll, [item(f"v{i}", vector=v) for i, v in enumerate(_vecs(4))])
    got, details = status_of(lambda: client.delete(coll, ["v0", "missing"]))
    assert got == grpc.StatusCode.NOT_FOUND and "item 1" in details
    assert client.describe_collection(coll).count == 4  # nothing deleted
    assert client.delete(coll, ["v0", "missing"], allow_missing=True) == 1
    assert client.delete(coll, ["v1", "v2"]) == 2
    assert client.describe_collection(coll).count == 1
    assert status_of(lambda: client.get(coll, ["v1"]))[0] == grpc.StatusCode.NOT_FOUND


def _bad_batches():
    good = _vecs(3)
    nan = good[1].copy()
    nan[3] = np.nan
    images = random_images(2, seed=4)
    return {
        "wrong-dim": (
            [item("a", vector=good[0]), item("b", vector=np.ones(7, np.float32))],
            "item 1",
            "dimension",
        ),
        "nan": ([item("a", vector=good[0]), item("b", vector=nan)], "item 1", "NaN"),
        "bad-image": (
            [item("a", image=images[0]), item("b", image=images[1]), item("c", image=b"nope")],
            "item 2",
            "decode",
        ),
        "empty-text": ([item("a", vector=good[0]), item("b", text="")], "item 1", ""),
        "duplicate-id": ([item("a", vector=good[0]), item("a", vector=good[1])], "item", "a"),
        "empty-id": ([item("", vector=good[0])], "item 0", "id"),
        "no-content": ([item("a", vector=good[0]), pb.Item(id="b")], "item 1", "content"),
    }


@pytest.mark.parametrize("case", sorted(_bad_batches()))
def test_batch_with_one_bad_item_writes_nothing(client, coll, case):
    batch, where, what = _bad_batches()[case]
    client.upsert(coll, [item("keep", vector=_vecs(1, seed=7)[0])])
    got, details = status_of(lambda: client.upsert(coll, batch))
    assert got == grpc.StatusCode.INVALID_ARGUMENT, details
    assert where in details and what in details
    assert client.describe_collection(coll).count == 1
    assert status_of(lambda: client.get(coll, ["a"]))[0] == grpc.StatusCode.NOT_FOUND


def test_unknown_collection(client):
    got, details = status_of(lambda: client.upsert("no-such-coll", [item("a", vector=_vecs(1)[0])]))
    assert got == grpc.StatusCode.NOT_FOUND and "no-such-coll" in details


def test_upsert_stream_commits_each_batch(client, coll):
    vecs = _vecs(100, seed=3)
    batches = [[item(f"s{i}", vector=vecs[i]) for i in range(j, j + 25)] for j in range(0, 100, 25)]
    reply = client.upsert_stream(coll, batches)
    assert (reply.upserted, reply.batches) == (100, 4)
    assert client.describe_collection(coll).count == 100


def test_upsert_stream_error_keeps_earlier_batches(client, coll):
    vecs = _vecs(20, seed=4)
    batches = [
        [item(f"s{i}", vector=vecs[i]) for i in range(10)],
        [item("s10", vector=vecs[10]), item("s11", vector=np.ones(3, np.float32))],
        [item(f"s{i}", vector=vecs[i]) for i in range(12, 20)],
    ]
    got, details = status_of(lambda: client.upsert_stream(coll, batches))
    assert got == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch 1" in details and "item 1" in details and "1 earlier batches" in details
    assert client.describe_collection(coll).count == 10


def test_a_batch_of_raw_vectors_keeps_every_field(client, coll):
    v = _vecs(4, seed=11)
    shaped = [
        item("plain", vector=v[0], label="a", metadata={"k": "1"}),
        pb.Item(id="row", vector=pb.Tensor(shape=[1, v.shape[1]], data=v[1].tobytes()), label=""),
        pb.Item(id="unshaped", vector=pb.Tensor(data=v[2].tobytes()), metadata={"x": "y"}),
        item("last", vector=v[3]),
    ]
    reply = client.upsert(coll, shaped)
    assert (reply.inserted, reply.replaced) == (4, 0)
    got = {g.id: g for g in client.get(coll, ["plain", "row", "unshaped", "last"], include_vector=True)}
    assert got["plain"].label == "a" and dict(got["plain"].metadata) == {"k": "1"}
    assert not got["row"].HasField("label")  # "" is no label, on this path too
    assert dict(got["unshaped"].metadata) == {"x": "y"} and not got["last"].metadata
    for i, name in enumerate(["plain", "row", "unshaped", "last"]):
        stored = np.frombuffer(got[name].vector.data, dtype="<f4")
        np.testing.assert_allclose(stored, v[i] / np.linalg.norm(v[i]), rtol=1e-6)  # cosine: normalised
