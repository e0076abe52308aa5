import numpy as np

from embedserve.labelling import Job, knn_graph, knn_propagate, spread, spread_propagate
from embedserve.labelling.neighbours import KnnGraph, symmetric_adjacency
from embedserve.labelling.propagate import normalised
from embedserve.metric import Metric
from tests.labelling.conftest import blobs, two_moons


def test_spreading_reaches_the_closed_form_on_a_tiny_graph():
    # a path 0-1-2-3-4-5 with a chord 1-4; labels: 0 -> class 0, 5 -> class 1, 2 -> class 0
    rows = np.array([[1, -1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 1]])
    adjacency = symmetric_adjacency(rows, 6)
    graph = KnnGraph(rows.astype(np.int32), np.zeros(rows.shape, np.float32), adjacency)
    labelled, classes, alpha = np.array([0, 5, 2]), np.array([0, 1, 0]), 0.9
    f, reached = spread(
        graph, labelled, classes, 2, Job(), alpha=alpha, max_iterations=1000, tol=1e-12, settle=0
    )
    w = adjacency.toarray()
    d = np.diag(1 / np.sqrt(w.sum(1)))
    s = d @ w @ d
    y = np.zeros((6, 2))
    y[labelled, classes] = 1 / np.bincount(classes)[classes]  # each class's labels weigh 1 in all
    expected = (1 - alpha) * np.linalg.solve(np.eye(6) - alpha * s, y)
    np.testing.assert_allclose(f, expected, rtol=1e-5, atol=1e-7)  # float32 iterations
    np.testing.assert_allclose(normalised(adjacency).toarray(), s)
    assert reached.all()


def test_spreading_follows_the_moons_where_the_knn_vote_fails():
    x, moon = two_moons()
    # one label at the left end of each moon: the upper moon's right end lies nearer the lower
    # moon's label than its own, so a vote over the nearest labels gets it wrong
    labelled = np.array([0, 150])
    targets = np.setdiff1d(np.arange(len(x)), labelled)
    knn = knn_propagate(x, labelled, moon[labelled], 2, targets, 1, 0.07, Metric.L2, Job())
    graph = knn_graph(x, 7, Metric.L2, Job())
    spread_ = spread_propagate(graph, x, labelled, moon[labelled], 2, targets, 1, 0.07, Metric.L2, Job())
    assert (knn.classes == moon[targets]).mean() < 0.8
    assert (spread_.classes == moon[targets]).mean() > 0.98
    np.testing.assert_allclose(spread_.distribution.sum(1), 1, rtol=1e-5)
    assert ((spread_.margin >= 0) & (spread_.margin <= spread_.confidence + 1e-6)).all()


def test_rows_the_labels_cannot_reach_get_the_vote():
    x, cluster = blobs([20, 20], dim=8, spread=0.01)  # two components of the graph, far apart
    graph = knn_graph(x, 3, Metric.COSINE, Job())
    assert graph.adjacency[:20, 20:].nnz == 0
    labelled = np.array([0, 1])  # both in the first blob, two classes
    targets = np.arange(2, 40)
    prop = spread_propagate(graph, x, labelled, np.array([0, 1]), 2, targets, 2, 0.07, Metric.COSINE, Job())
    assert prop.distribution.shape == (38, 2)
    np.testing.assert_allclose(prop.distribution.sum(1), 1, rtol=1e-5)  # the far blob too


def test_a_class_labelled_often_does_not_swamp_the_others():
    x, cluster = blobs([60, 60], dim=8, spread=0.2, seed=3)
    rng = np.random.default_rng(0)
    labelled = np.concatenate([rng.choice(60, 20, replace=False), [60]])  # 20 labels against 1
    classes = cluster[labelled]
    targets = np.setdiff1d(np.arange(120), labelled)
    graph = knn_graph(x, 7, Metric.COSINE, Job())
    prop = spread_propagate(graph, x, labelled, classes, 2, targets, 20, 0.07, Metric.COSINE, Job())
    assert (prop.classes == cluster[targets]).mean() > 0.95


def test_spreading_stops_once_the_predictions_settle():
    x, moon = two_moons()
    graph = knn_graph(x, 7, Metric.L2, Job())
    steps = []
    labelled = np.array([0, 150])
    f, reached = spread(graph, labelled, moon[labelled], 2, Job(on_progress=lambda *p: steps.append(p[1])))
    assert reached.all() and 10 < max(steps[:-1]) < 99  # long before the 100 it may take
    full, _ = spread(graph, labelled, moon[labelled], 2, Job(), max_iterations=1000, tol=1e-9, settle=0)
    assert (f.argmax(1) == full.argmax(1)).mean() > 0.99
