"""CollectionService: lifecycle and its error codes."""

import grpc
import pytest

from tests.conftest import status_of


def test_create_list_describe_delete(client):
    info = client.create_collection("coll-life", model="tiny-text")
    assert (info.name, info.model, info.dim, info.metric, info.index_spec) == (
        "coll-life",
        "tiny-text",
        16,
        "cosine",
        "Flat",
    )
    assert info.count == 0 and info.trained
    assert "coll-life" in [c.name for c in client.list_collections()]
    assert client.describe_collection("coll-life").dim == 16
    client.delete_collection("coll-life")
    assert "coll-life" not in [c.name for c in client.list_collections()]
    code, _ = status_of(lambda: client.describe_collection("coll-life"))
    assert code == grpc.StatusCode.NOT_FOUND


def test_defaults_to_default_model_and_its_metric(client):
    info = client.create_collection("coll-default", metric="l2", index_spec="HNSW16")
    assert info.model == "tiny-image" and info.metric == "l2" and info.index_spec == "HNSW16"


def test_untrained_ivf_reports_untrained(client):
    info = client.create_collection("coll-ivf", index_spec="IVF4,Flat", train_size=100)
    assert not info.trained and info.train_size == 100


@pytest.mark.parametrize(
    "kwargs, code, fragment",
    [
        ({"name": "bad name!"}, grpc.StatusCode.INVALID_ARGUMENT, "bad name!"),
        ({"name": "x" * 65}, grpc.StatusCode.INVALID_ARGUMENT, "x" * 65),
        ({"name": ""}, grpc.StatusCode.INVALID_ARGUMENT, ""),
        ({"name": "c1", "model": "nope"}, grpc.StatusCode.NOT_FOUND, "nope"),
        ({"name": "c2", "metric": "hamming"}, grpc.StatusCode.INVALID_ARGUMENT, "hamming"),
        ({"name": "c3", "index_spec": "NotAnIndex42"}, grpc.StatusCode.INVALID_ARGUMENT, "NotAnIndex42"),
    ],
)
def test_create_errors(client, kwargs, code, fragment):
    got, details = status_of(lambda: client.create_collection(**kwargs))
    assert got == code
    assert fragment in details


def test_already_exists_and_delete_unknown(client):
    client.create_collection("coll-dup")
    got, details = status_of(lambda: client.create_collection("coll-dup"))
    assert got == grpc.StatusCode.ALREADY_EXISTS and "coll-dup" in details
    got, _ = status_of(lambda: client.delete_collection("never-made"))
    assert got == grpc.StatusCode.NOT_FOUND
