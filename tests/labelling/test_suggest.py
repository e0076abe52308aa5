import numpy as np
import pytest

from embedserve.errors import FailedPrecondition, InvalidArgument
from embedserve.labelling import Job, knn_graph, suggest
from embedserve.labelling.suggest import MIXED, resolve_strategy
from embedserve.metric import Metric
from tests.labelling.conftest import blobs


def run(strategy, count, x, row_class, names=("a", "b", "c", "d", "e"), **kw):
    graph = knn_graph(x, 7, Metric.COSINE, Job())
    return suggest(strategy, count, x, row_class, list(names), graph, Metric.COSINE, Job(), **kw), graph


def test_cold_start_covers_every_cluster_once_with_its_most_typical_item():
    sizes = [120, 90, 60, 40, 25]
    x, cluster = blobs(sizes, spread=0.1)
    picked, graph = run("typical", 5, x, np.full(len(x), -1))
    rows = [s.row for s in picked]
    assert sorted(cluster[rows]) == [0, 1, 2, 3, 4]  # one per cluster
    assert len(set(rows)) == 5
    for s in picked:  # the item nearest its cluster's centre
        members = np.flatnonzero(cluster == cluster[s.row])
        centre = x[members].mean(axis=0)
        closeness = x[members] @ centre
        assert x[s.row] @ centre >= np.quantile(closeness, 0.9)
        assert s.reason.startswith("typical: ")
    assert cluster[rows[0]] == 0  # largest cluster first


def test_typical_skips_clusters_that_hold_a_label_already():
    x, cluster = blobs([50, 50, 50, 50], spread=0.1)
    row_class = np.full(len(x), -1)
    row_class[np.flatnonzero(cluster == 0)[:2]] = 0
    row_class[np.flatnonzero(cluster == 2)[:1]] = 1
    picked, _ = run("typical", 2, x, row_class)
    assert sorted(cluster[[s.row for s in picked]]) == [1, 3]
    assert all(row_class[s.row] < 0 for s in picked)


def test_uncertainty_picks_the_items_between_classes_and_never_two_neighbours():
    # two clusters and a bridge of points between them; labels at both far ends
    rng = np.random.default_rng(0)
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    t = np.concatenate([rng.uniform(0, 0.15, 100), rng.uniform(0.85, 1, 100), np.linspace(0.3, 0.7, 40)])
    x = (1 - t)[:, None] * a + t[:, None] * b + 0.01 * rng.standard_normal((len(t), 3))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    row_class = np.full(len(x), -1)
    row_class[np.argmin(t)] = 0
    row_class[np.argmax(t)] = 1
    picked, graph = run("uncertain", 5, x, row_class, names=("a", "b"))
    between = [abs(t[s.row] - 0.5) for s in picked]
    assert max(between) < 0.2, between
    rows = [s.row for s in picked]
    adjacency = graph.adjacency.toarray()
    assert not adjacency[np.ix_(rows, rows)].any()  # no near-duplicates in one suggestion
    assert all(s.reason.startswith("uncertain: margin") for s in picked)
    assert [s.score for s in picked] == sorted((s.score for s in picked), reverse=True)


def test_random_is_seeded_and_only_unlabelled():
    x, _ = blobs([50, 50], spread=0.1)
    row_class = np.full(100, -1)
    row_class[:10] = 0
    one = suggest("random", 20, x, row_class, ["a"], None, Metric.COSINE, Job(), seed=3)
    two = suggest("random", 20, x, row_class, ["a"], None, Metric.COSINE, Job(), seed=3)
    assert [s.row for s in one] == [s.row for s in two]
    assert len({s.row for s in one}) == 20 and min(s.row for s in one) >= 10


def test_auto_is_typical_until_two_labels_per_class_then_half_typical_half_uncertain():
    row_class = np.full(100, -1)
    assert resolve_strategy("", row_class) == "typical"
    row_class[:3] = [0, 1, 2]
    assert resolve_strategy("auto", row_class) == "typical"
    row_class[3:6] = [0, 1, 2]
    assert resolve_strategy("auto", row_class) == MIXED
    assert resolve_strategy("random", row_class) == "random"
    with pytest.raises(InvalidArgument, match="strategy must be one of"):
        resolve_strategy("greedy", row_class)


def test_uncertain_needs_labels_and_a_request_asks_at_most_for_the_unlabelled():
    x, _ = blobs([10, 10], spread=0.1)
    with pytest.raises(FailedPrecondition):
        run("uncertain", 3, x, np.full(20, -1))
    row_class = np.zeros(20, dtype=np.int64)
    row_class[:2] = -1
    picked, _ = run("typical", 10, x, row_class)
    assert sorted(s.row for s in picked) == [0, 1]


def test_the_mixed_half_looks_for_a_class_nobody_labelled_yet():
    # three clusters, two of them labelled twice: uncertainty alone would only look at the
    # border between those two; the typical half picks the unlabelled cluster's centre
    x, cluster = blobs([60, 60, 60], spread=0.15, seed=4)
    row_class = np.full(len(x), -1)
    for c in (0, 1):
        row_class[np.flatnonzero(cluster == c)[:2]] = c
    picked, graph = run(resolve_strategy("auto", row_class), 4, x, row_class, names=("a", "b"))
    reasons = [s.reason.split(":")[0] for s in picked]
    assert reasons == ["typical", "typical", "uncertain", "uncertain"]
    assert 2 in cluster[[s.row for s in picked[:2]]]
    rows = [s.row for s in picked]
    adjacency = graph.adjacency.toarray()
    assert len(set(rows)) == 4 and not adjacency[np.ix_(rows[2:], rows)].any()  # no neighbour of a pick
