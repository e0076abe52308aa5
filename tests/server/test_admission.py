"""Admission control: a request over a configured limit is refused before any work, naming the limit."""

import json
import shutil

import grpc
import numpy as np
import pytest

from embedserve.client import item
from embedserve.limits import Limits
from tests.conftest import ServerThread, make_config, status_of


@pytest.fixture(scope="module")
def tight_server(bundles, tmp_path_factory):
    """Small limits, so each can be crossed with a small request."""
    limits = Limits(
        max_k=64,
        max_queries=8,
        max_results=100,
        max_ef_search=256,
        max_nprobe=32,
        max_support=50,
        max_batch_items=20,
        max_label_bytes=40,
        max_metadata_entries=4,
        max_metadata_bytes=200,
    )
    srv = ServerThread(
        make_config(bundles, tmp_path_factory.mktemp("data"), limits=limits, max_message_bytes=300_000)
    )
    yield srv
    srv.stop()


@pytest.fixture
def tight(tight_server):
    with tight_server.client() as c:
        yield c


def vecs(n, seed=0):
    return list(np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32))


def refused(call, code, *fragments):
    got, details = status_of(call)
    assert got == code, details
    for fragment in fragments:
        assert fragment in details, details
    return details


RE = grpc.StatusCode.RESOURCE_EXHAUSTED
IA = grpc.StatusCode.INVALID_ARGUMENT


def test_search_work_is_bounded_by_queries_k_and_params(tight):
    tight.create_collection("s", index_spec="HNSW16")
    points = [item(f"i{j}", vector=v) for j, v in enumerate(vecs(30))]
    tight.upsert("s", points[:15])
    tight.upsert("s", points[15:])
    refused(lambda: tight.search("s", vecs(9), k=1), RE, "max_queries (8)")
    refused(lambda: tight.search("s", vecs(4), k=30), RE, "max_results (100)", "120")
    refused(lambda: tight.search("s", vecs(1), k=65), IA, "max_k")
    refused(lambda: tight.search("s", vecs(1), k=5, ef_search=2**31 - 1), RE, "max_ef_search (256)")
    refused(lambda: tight.search("s", vecs(1), k=5, nprobe=33), RE, "max_nprobe (32)")
    refused(lambda: tight.search("s", vecs(1), k=5, nprobe=-1), IA, "nprobe")
    refused(lambda: tight.classify(vecs(9), collection="s"), RE, "max_queries")
    assert len(tight.search("s", vecs(4), k=25, ef_search=256)[0]) == 25  # at the limits: served


def test_reply_size_is_estimated_before_the_search(tight):
    """Items with big metadata: a reply that could be over max_message_bytes is refused up front."""
    tight.create_collection("big-meta")
    meta = {f"k{j}": "v" * 45 for j in range(4)}  # ~190 bytes, within max_metadata_bytes
    tight.upsert(
        "big-meta", [item(f"id-{'x' * 200}-{j}", vector=v, metadata=meta) for j, v in enumerate(vecs(20))]
    )
    # 8 queries x k 12 = 96 hits x (256 id + 190 metadata + framing) ~ 47 kB: fine
    assert len(tight.search("big-meta", vecs(8), k=12)) == 8


def test_reply_estimate_refuses_what_would_not_fit(bundles, tmp_path):
    srv = ServerThread(make_config(bundles, tmp_path, max_message_bytes=40_000))
    try:
        with srv.client() as c:
            c.create_collection("m")
            meta = {f"k{j}": "v" * 200 for j in range(10)}
            points = [item(f"i{j}", vector=v, metadata=meta) for j, v in enumerate(vecs(40))]
            for start in range(0, 40, 10):
                c.upsert("m", points[start : start + 10])
            details = refused(lambda: c.search("m", vecs(4), k=20), RE, "max_message_bytes (40000)")
            assert "reply" in details
            # without metadata the same search fits
            assert len(c.search("m", vecs(4), k=20, include_metadata=False)[0]) == 20
            refused(
                lambda: c.get("m", [f"i{j}" for j in range(40)], include_vector=True), RE, "max_message_bytes"
            )
    finally:
        srv.stop()


def test_batches_labels_and_metadata_are_bounded(tight):
    tight.create_collection("w")
    refused(
        lambda: tight.upsert("w", [item(f"i{j}", vector=v) for j, v in enumerate(vecs(21))]),
        RE,
        "max_batch_items (20)",
    )
    refused(lambda: tight.embed([b"x"] * 21), RE, "max_batch_items")
    refused(lambda: tight.get("w", [f"i{j}" for j in range(21)]), RE, "max_batch_items")
    refused(
        lambda: tight.delete("w", [f"i{j}" for j in range(21)], allow_missing=True), RE, "max_batch_items"
    )
    one = vecs(1)[0]
    refused(
        lambda: tight.upsert("w", [item("a", vector=one, label="L" * 41)]),
        RE,
        "item 0",
        "max_label_bytes (40)",
    )
    refused(lambda: tight.upsert("w", [item("a", vector=one, label="é" * 21)]), RE, "42 bytes")
    many = {f"k{j}": "v" for j in range(5)}
    refused(
        lambda: tight.upsert("w", [item("a", vector=one), item("b", vector=one, metadata=many)]),
        RE,
        "item 1",
        "max_metadata_entries (4)",
    )
    refused(
        lambda: tight.upsert("w", [item("a", vector=one, metadata={"k": "v" * 200})]),
        RE,
        "max_metadata_bytes (200)",
    )
    # streams: every message is admitted, and the error says which batch and what was committed
    ok = [item(f"s{j}", vector=v) for j, v in enumerate(vecs(5))]
    details = refused(lambda: tight.upsert_stream("w", [ok, [item("big", vector=one, label="L" * 41)]]), RE)
    assert "batch 1" in details and "5 items" in details and "max_label_bytes" in details
    assert tight.describe_collection("w").count == 5  # the first batch, nothing of the refused one


def test_support_sets_are_bounded(tight):
    support = [(v, "a") for v in vecs(51)]
    refused(lambda: tight.classify(vecs(1), support=support), RE, "max_support (50)")
    support = [(v, "a") for v in vecs(3)] + [(vecs(1)[0], "L" * 41)]
    refused(lambda: tight.classify(vecs(1), support=support), RE, "support 3", "max_label_bytes")


def test_the_default_limits_refuse_what_the_hostile_client_sent(client):
    """The findings, against the default configuration: refused at once, nothing allocated."""
    client.create_collection("hostile", index_spec="HNSW16")
    client.upsert("hostile", [item(f"i{j}", vector=v) for j, v in enumerate(vecs(300))])
    refused(lambda: client.search("hostile", vecs(4096), k=1024), RE, "max_queries")
    refused(lambda: client.search("hostile", vecs(1024), k=1024), RE, "max_results")
    refused(lambda: client.search("hostile", vecs(1), k=3, ef_search=2**31 - 1), RE, "max_ef_search")
    refused(lambda: client.upsert("hostile", [item("x", vector=vecs(1)[0], label="L" * 1_000_000)]), RE)
    meta = {f"k{j}": "" for j in range(50_000)}
    refused(
        lambda: client.upsert("hostile", [item("x", vector=vecs(1)[0], metadata=meta)]),
        RE,
        "max_metadata_entries",
    )


BAD_SPECS = [
    ("HNSW0", "HNSW M 0"),
    ("HNSW1", "HNSW M 1"),
    ("HNSW2147483647", "max_hnsw_m"),
    ("IVF0,Flat", "IVF list count 0"),
    ("IVF30000000,Flat", "max_ivf_lists"),
    ("IVF2147483647,Flat", "max_ivf_lists"),
    ("PQ8x24", "bits per code"),
    ("IDMap,Flat", "assigns FAISS ids"),
    ("IVF64", "followed by its list encoding"),
]


@pytest.mark.parametrize("spec, fragment", BAD_SPECS)
def test_index_specs_are_validated_before_anything_is_persisted(server, client, spec, fragment):
    refused(lambda: client.create_collection("bad-spec", index_spec=spec), IA, fragment)
    assert not (server.config.data / "collections" / "bad-spec").exists()
    assert "bad-spec" not in [c.name for c in client.list_collections()]


def test_a_collection_that_fails_to_load_reports_in_its_own_entry(bundles, tmp_path):
    """An HNSW0 collection persisted by an older version: the server starts, lists it with its error,
    refuses calls on it with FAILED_PRECONDITION, serves the others, and deletes it on request."""
    data = tmp_path / "data"
    srv = ServerThread(make_config(bundles, data, metrics_port=0))
    with srv.client() as c:
        c.create_collection("good")
        c.upsert("good", [item("a", vector=vecs(1)[0])])
        c.create_collection("to-break")
    srv.stop()
    spec_file = data / "collections" / "to-break" / "collection.json"
    doc = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps({**doc, "index_spec": "HNSW0"}))
    shutil.copytree(data / "collections" / "good", data / "collections" / "garbled")
    (data / "collections" / "garbled" / "collection.json").write_text("{not json")

    srv = ServerThread(make_config(bundles, data))
    try:
        with srv.client() as c:
            infos = {i.name: i for i in c.list_collections()}
            assert set(infos) == {"garbled", "good", "to-break"}
            assert infos["good"].error == "" and infos["good"].count == 1
            assert "HNSW M 0" in infos["to-break"].error and infos["to-break"].index_spec == "HNSW0"
            assert "failed to load" in infos["garbled"].error
            assert "HNSW M 0" in c.describe_collection("to-break").error
            refused(
                lambda: c.search("to-break", vecs(1), k=1), grpc.StatusCode.FAILED_PRECONDITION, "HNSW M 0"
            )
            refused(lambda: c.create_collection("to-break"), grpc.StatusCode.ALREADY_EXISTS)
            assert len(c.search("good", vecs(1), k=1)[0]) == 1
            c.delete_collection("to-break")
            c.delete_collection("garbled")
            assert [i.name for i in c.list_collections()] == ["good"]
            assert not (data / "collections" / "to-break").exists()
            c.create_collection("to-break")  # the name is free again
    finally:
        srv.stop()


def test_configured_limits_reach_the_server(bundles, tmp_path):
    """Limits are settings: flags, EMBEDSERVE_* and TOML (one name each)."""
    from embedserve.config import load_config

    cfg = load_config({"max_queries": "3"}, environ={"EMBEDSERVE_MAX_LABEL_BYTES": "10"})
    assert cfg.limits.max_queries == 3 and cfg.limits.max_label_bytes == 10
    assert cfg.limits.max_k == Limits().max_k
    with pytest.raises(ValueError, match="max_queries"):
        load_config({"max_queries": "0"}, environ={})


def test_every_limit_is_documented():
    """Every Limits field is documented in README (the configuration table)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [name for name in Limits.__dataclass_fields__ if f"`{name}`" not in readme]
    assert not missing, missing
