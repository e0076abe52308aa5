"""SearchService.Classify: weighted k-NN vote over a collection or an in-request support set."""

import grpc
import numpy as np
import pytest

from embedserve.client import ById, item
from tests.conftest import encode_image, status_of


def labelled_clusters(n_per_class, classes=5, dim=16, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    x = np.concatenate([c + spread * rng.standard_normal((n_per_class, dim)) for c in centres]).astype(
        np.float32
    )
    y = np.repeat(np.arange(classes), n_per_class)
    return x, y, centres


def test_classify_against_collection(client):
    x, y, centres = labelled_clusters(40)
    client.create_collection("cls")
    client.upsert("cls", [item(f"p{i}", vector=x[i], label=f"c{y[i]}") for i in range(len(x))])
    # unlabelled items near class 0 must be ignored by the vote
    client.upsert("cls", [item(f"u{i}", vector=centres[0] + 0.01 * i) for i in range(30)])
    test_x, test_y, _ = labelled_clusters(10, seed=0)
    results = client.classify(list(test_x + 0.05), collection="cls", include_neighbors=True)
    predicted = [r.label for r in results]
    assert np.mean([p == f"c{t}" for p, t in zip(predicted, test_y)]) >= 0.98
    r = results[0]
    assert r.has_prediction and len(r.neighbors) == 20
    assert all(h.HasField("label") for h in r.neighbors)
    assert abs(sum(p.probability for p in r.probabilities) - 1.0) < 1e-5
    assert r.probabilities[0].label == r.label and r.confidence == pytest.approx(
        r.probabilities[0].probability
    )


def test_vote_weights_follow_dino_formula(client):
    client.create_collection("cls-formula", metric="ip")
    e = np.eye(16, dtype=np.float32)
    client.upsert(
        "cls-formula",
        [
            item("a", vector=e[0], label="A"),
            item("b", vector=0.5 * e[0] + 0.5 * e[1], label="B"),
            item("c", vector=0.2 * e[0], label="B"),
        ],
    )
    q = e[0]
    r = client.classify([q], collection="cls-formula", k=3, temperature=0.5)[0]
    sims = {"A": [1.0], "B": [0.5, 0.2]}
    scores = {c: sum(np.exp(s / 0.5) for s in v) for c, v in sims.items()}
    total = sum(scores.values())
    got = {p.label: p.probability for p in r.probabilities}
    for c in scores:
        assert got[c] == pytest.approx(scores[c] / total, rel=1e-5)
    # k=1: only the nearest votes
    assert client.classify([q], collection="cls-formula", k=1)[0].probabilities[
        0
    ].probability == pytest.approx(1.0)


def test_by_id_query_excludes_itself(client):
    client.create_collection("cls-byid")
    x, y, _ = labelled_clusters(10, classes=2, seed=4)
    client.upsert("cls-byid", [item(f"p{i}", vector=x[i], label=str(y[i])) for i in range(len(x))])
    r = client.classify([ById("p0")], collection="cls-byid", include_neighbors=True)[0]
    assert r.label == "0" and "p0" not in [h.id for h in r.neighbors]


def test_no_labelled_neighbour_says_so(client):
    client.create_collection("cls-unlabelled")
    client.upsert("cls-unlabelled", [item("u", vector=np.ones(16, np.float32))])
    r = client.classify([np.ones(16, np.float32)], collection="cls-unlabelled")[0]
    assert not r.has_prediction and r.label == "" and len(r.probabilities) == 0


def test_support_set_vectors(client):
    x, y, _ = labelled_clusters(5, classes=4, seed=2)
    support = [(x[i], f"k{y[i]}") for i in range(len(x))]
    test_x, test_y, _ = labelled_clusters(6, classes=4, seed=2)
    results = client.classify(list(test_x + 0.02), support=support, k=5)
    assert [r.label for r in results] == [f"k{t}" for t in test_y]
    l2 = client.classify(list(test_x), support=support, k=5, metric="l2")
    assert [r.label for r in l2] == [f"k{t}" for t in test_y]


def test_support_set_images(client):
    rng = np.random.default_rng(8)
    protos = rng.integers(0, 256, (3, 8, 8))

    def noisy(p):
        return encode_image(np.clip(p + rng.integers(-10, 11, p.shape), 0, 255))

    support = [(noisy(protos[c]), f"shape{c}") for c in range(3) for _ in range(3)]
    queries = [noisy(protos[c]) for c in (2, 0, 1)]
    results = client.classify(queries, support=support, model="tiny-image", k=3)
    assert [r.label for r in results] == ["shape2", "shape0", "shape1"]


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({}, "collection or a support set"),
        ({"collection": "x", "support": [(np.ones(16, np.float32), "a")]}, "not both"),
        ({"support": [(np.ones(16, np.float32), "")]}, "support 0"),
        ({"support": [(np.ones(16, np.float32), "a"), (np.ones(3, np.float32), "b")]}, "support 1"),
        ({"support": [(np.ones(16, np.float32), "a")], "temperature": -1.0}, "temperature"),
        ({"support": [(np.ones(16, np.float32), "a")], "k": 5000}, "k must be"),
    ],
)
def test_classify_errors(client, kwargs, fragment):
    got, details = status_of(lambda: client.classify([np.ones(16, np.float32)], **kwargs))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and fragment in details, details


def test_support_set_too_large_is_resource_exhausted(client):
    rng = np.random.default_rng(0)
    support = [(v, "a") for v in rng.standard_normal((10_001, 16)).astype(np.float32)]
    queries = list(rng.standard_normal((2, 16)).astype(np.float32))
    got, details = status_of(lambda: client.classify(queries, support=support))
    assert got == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_support (10000)" in details
    assert "collection" in details  # says what to do instead


def test_an_empty_label_means_unlabelled(client):
    """A client that fills unset strings with "" (JS, Go) must not create a phantom class."""
    client.create_collection("empty-label")
    v = np.eye(16, dtype=np.float32)
    client.upsert(
        "empty-label",
        [item("a", vector=v[0], label="cat"), item("b", vector=v[0] + 0.01 * v[1], label="")],
    )
    assert not client.get("empty-label", ["b"])[0].HasField("label")
    assert client.describe_collection("empty-label").labelled_count == 1
    (result,) = client.classify([v[0]], collection="empty-label", k=5)
    assert [p.label for p in result.probabilities] == ["cat"]


def test_huge_finite_vectors_are_refused_not_turned_into_nan(client):
    """±1e30 is finite but overflows float32 products: refused with the limit named, never NaN."""
    huge = np.full(16, 1e30, np.float32)
    client.create_collection("huge-l2", metric="l2")
    got, details = status_of(lambda: client.upsert("huge-l2", [item("a", vector=huge)]))
    assert (
        got == grpc.StatusCode.INVALID_ARGUMENT
        and details == "item 0: vector has a component of magnitude 1e+30, limit 1e+15"
    )
    got, details = status_of(
        lambda: client.classify([np.ones(16, np.float32)], support=[(huge, "a")], metric="ip")
    )
    assert got == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("support 0: vector has a component")
    big = np.full(16, 1e15, np.float32)  # at the limit: distances stay finite and ordered
    client.upsert(
        "huge-l2", [item("far", vector=big), item("near", vector=np.ones(16, np.float32), label="x")]
    )
    hits = client.search("huge-l2", [np.zeros(16, np.float32)], k=2)[0]
    assert [h.id for h in hits] == ["near", "far"] and all(np.isfinite(h.score) for h in hits)


def test_a_query_tensor_classifies_as_its_rows_would(client):
    """ClassifyRequest.vectors: against a collection and against a support set, the same votes as
    the rows sent one Query each."""
    x, y, _ = labelled_clusters(20, classes=4, seed=5)
    client.create_collection("cls-tensor")
    client.upsert("cls-tensor", [item(f"p{i}", vector=x[i], label=f"c{y[i]}") for i in range(len(x))])
    test_x, _, _ = labelled_clusters(3, classes=4, seed=6)
    support = [(x[i], f"c{y[i]}") for i in range(0, len(x), 2)]
    for kwargs in ({"collection": "cls-tensor"}, {"support": support}):
        rows = client.classify(list(test_x), k=5, include_neighbors=True, **kwargs)
        tensor = client.classify(test_x, k=5, include_neighbors=True, **kwargs)
        assert [r.SerializeToString() for r in tensor] == [r.SerializeToString() for r in rows]
    got, details = status_of(lambda: client.classify(test_x[:, :8], support=support))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "query 0" in details
