"""A server whose collections live in Milvus (Milvus Lite from PyPI): the same RPCs, the same answers.

Tests that need a Milvus server or cluster (not Lite) read its URI from EMBEDSERVE_TEST_MILVUS_URI
and are skipped without one.
"""

from __future__ import annotations

import dataclasses
import os

import grpc
import numpy as np
import pytest

from embedserve.client import ById, item
from embedserve.wire import tensor_to_array
from tests.conftest import ServerThread, make_config, random_images, status_of
from tests.server.test_labels import DIM, blobs

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture(scope="module")
def milvus_server(bundles, tmp_path_factory):
    root = tmp_path_factory.mktemp("milvus-server")
    data = root / "data"
    # an embedded collection from before Milvus was configured: still served beside the Milvus ones
    plain = ServerThread(make_config(bundles, data))
    with plain.client() as c:
        c.create_collection("embedded")
        c.upsert("embedded", [item("e0", vector=np.ones(DIM, np.float32))])
    plain.stop()
    srv = ServerThread(make_config(bundles, data, milvus_uri=str(root / "lite.db")))
    yield srv
    srv.stop()


@pytest.fixture
def mclient(milvus_server):
    with milvus_server.client() as c:
        yield c


def test_new_collections_live_in_milvus_and_old_ones_stay_embedded(milvus_server, mclient):
    mclient.create_collection("fresh", index_spec="HNSW16")
    names = {info.name: info for info in mclient.list_collections()}
    assert set(names) >= {"embedded", "fresh"}
    assert names["embedded"].count == 1 and names["fresh"].index_spec == "HNSW16"
    store = milvus_server.server.store
    assert store.milvus.has("fresh") and not store.milvus.has("embedded")
    assert status_of(lambda: mclient.create_collection("embedded"))[0] == grpc.StatusCode.ALREADY_EXISTS
    code, message = status_of(lambda: mclient.create_collection("pq", index_spec="PQ8"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no Milvus equivalent" in message
    code, message = status_of(lambda: mclient.create_collection("huge", index_spec="HNSW2147483647"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # the same bounds as the embedded store
    assert names["fresh"].store == "milvus" and names["embedded"].store == "embedded"
    # a per-collection choice: this one stays in the embedded store on a Milvus-backed server
    assert mclient.create_collection("local", store="embedded").store == "embedded"
    assert not store.milvus.has("local")
    assert (
        status_of(lambda: mclient.create_collection("local", store="milvus"))[0]
        == grpc.StatusCode.ALREADY_EXISTS
    )
    code, message = status_of(lambda: mclient.create_collection("x", store="s3"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "store must be" in message
    mclient.delete_collection("local")
    mclient.delete_collection("fresh")
    assert status_of(lambda: mclient.describe_collection("fresh"))[0] == grpc.StatusCode.NOT_FOUND


def test_images_upsert_search_classify_get(mclient):
    images = random_images(30, seed=3)
    mclient.create_collection("imgs")
    reply = mclient.upsert(
        "imgs",
        [item(f"i{n}", image=data, label="even" if n % 2 == 0 else "odd", metadata={"n": str(n)}) for n, data in enumerate(images)],
    )  # fmt: skip
    assert reply.inserted == 30
    assert mclient.upsert("imgs", [item("i0", image=images[1], label="odd")]).replaced == 1
    hits = mclient.search("imgs", [images[1]], k=2)[0]
    assert {h.id for h in hits} == {"i0", "i1"} and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert mclient.search("imgs", [ById("i1")], k=3)[0][0].id == "i0"  # the item itself left out
    only = mclient.search("imgs", [images[4]], k=5, label_filter=["even"])[0]
    assert only and all(h.label == "even" for h in only)
    got = mclient.get("imgs", ["i4", "nope", "i5"], include_vector=True, allow_missing=True)
    assert [g.id for g in got] == ["i4", "i5"] and dict(got[0].metadata) == {"n": "4"}
    np.testing.assert_allclose(tensor_to_array(got[0].vector), mclient.embed([images[4]])[0], atol=1e-5)
    code, message = status_of(lambda: mclient.get("imgs", ["i4", "nope"]))
    assert code == grpc.StatusCode.NOT_FOUND and "item 1" in message
    result = mclient.classify([images[6]], collection="imgs", k=3)[0]
    assert result.label == "even"
    assert mclient.delete("imgs", ["i2", "i3"]) == 2
    assert mclient.describe_collection("imgs").count == 28


def test_labelling_rpcs_on_milvus(mclient):
    x, cluster = blobs([40, 30, 30])
    mclient.create_collection("lab")
    mclient.upsert("lab", [item(f"i{i}", vector=x[i]) for i in range(len(x))])
    picked = [s.id for s in mclient.suggest_labels("lab", 3).suggestions]
    assert sorted(cluster[int(i[1:])] for i in picked) == [0, 1, 2]
    mclient.set_labels("lab", {i: f"c{cluster[int(i[1:])]}" for i in picked})
    got = {p.id: p for p in mclient.propagate_labels("lab", "spread", write_back=True)}
    assert len(got) == len(x) - 3 and all(p.label == f"c{cluster[int(i[1:])]}" for i, p in got.items())
    info = mclient.describe_collection("lab")
    assert (info.labelled_count, info.predicted_count) == (3, len(x) - 3)
    stored = mclient.get("lab", ["i50"])[0]
    assert stored.predicted_label == f"c{cluster[50]}" and not stored.HasField("label")


@pytest.mark.skipif(not os.environ.get("EMBEDSERVE_TEST_MILVUS_URI"), reason="needs a Milvus server")
def test_a_milvus_server(bundles, tmp_path):
    """Against a real Milvus standalone or cluster (EMBEDSERVE_TEST_MILVUS_URI=http://host:19530)."""
    config = make_config(bundles, tmp_path / "data", milvus_uri=os.environ["EMBEDSERVE_TEST_MILVUS_URI"])
    config = dataclasses.replace(config, milvus_token=os.environ.get("EMBEDSERVE_TEST_MILVUS_TOKEN", ""))
    srv = ServerThread(config)
    try:
        with srv.client() as c:
            c.create_collection("es_remote_test")
            c.upsert("es_remote_test", [item("a", vector=np.ones(DIM, np.float32))])
            assert c.search("es_remote_test", [np.ones(DIM, np.float32)], k=1)[0][0].id == "a"
            c.delete_collection("es_remote_test")
    finally:
        srv.stop()


def test_a_server_without_milvus_refuses_a_milvus_collection(client):
    code, message = status_of(lambda: client.create_collection("m", store="milvus"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "--milvus-uri" in message
    assert client.create_collection("e", store="embedded").store == "embedded"
