"""The vote the server serves (few-shot Classify over gRPC) is the vote training's evaluation counts."""

import numpy as np
import pytest

from embedserve.knn import nearest, weighted_vote
from embedserve.metric import Metric, l2_normalize
from training.evaluate.knn import knn_predict


@pytest.fixture(scope="module")
def clusters():
    """5 overlapping classes in 16-d: the vote is not trivial (some queries sit between clusters)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((5, 16)).astype(np.float32)
    support_labels = np.repeat(np.arange(5), 12)
    support = centres[support_labels] + 0.9 * rng.standard_normal((60, 16)).astype(np.float32)
    query_labels = rng.integers(0, 5, 40)
    queries = centres[query_labels] + 0.9 * rng.standard_normal((40, 16)).astype(np.float32)
    return support, support_labels, queries


@pytest.mark.parametrize(("k", "temperature"), [(5, 0.07), (20, 0.07), (20, 0.5), (60, 0.1)])
def test_served_classify_equals_training_knn(client, clusters, k, temperature):
    support, labels, queries = clusters
    results = client.classify(
        list(queries),
        support=[(v, str(c)) for v, c in zip(support, labels)],
        k=k,
        temperature=temperature,
        metric="cosine",
    )
    served = np.array([int(r.label) for r in results])
    evaluated = knn_predict(support, labels, queries, 5, k=k, temperature=temperature)
    assert (served == evaluated).all()
    assert len(set(served)) == 5  # every class predicted somewhere: not a one-class answer

    sims, index = nearest(l2_normalize(queries), l2_normalize(support), k, Metric.COSINE)
    probs = weighted_vote(sims, labels[index], 5, temperature)
    for result, row in zip(results, probs):
        got = {int(p.label): p.probability for p in result.probabilities}
        for c in range(5):
            assert got.get(c, 0.0) == pytest.approx(row[c], abs=1e-5)


def test_a_different_temperature_changes_the_served_vote(client, clusters):
    """The comparison above can fail: k and T reach the vote on both sides."""
    support, labels, queries = clusters
    support_set = [(v, str(c)) for v, c in zip(support, labels)]
    sharp = client.classify(list(queries), support=support_set, k=60, temperature=0.01)
    flat = client.classify(list(queries), support=support_set, k=60, temperature=10.0)
    assert [r.label for r in sharp] != [r.label for r in flat]
    assert (
        knn_predict(support, labels, queries, 5, k=60, temperature=0.01) == [int(r.label) for r in sharp]
    ).all()
