import numpy as np
import pytest

from embedserve.errors import Cancelled, DeadlineExceeded
from embedserve.labelling import Job, knn_graph, nearest_rows
from embedserve.labelling import neighbours as nb
from embedserve.metric import Metric
from tests.labelling.conftest import blobs


def dense_knn(q: np.ndarray, x: np.ndarray, k: int, metric: Metric, skip_self: bool) -> np.ndarray:
    if metric is Metric.L2:
        sim = -((q[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    else:
        sim = q @ x.T
    if skip_self:
        np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("metric", [Metric.COSINE, Metric.L2])
def test_exact_neighbours_match_a_dense_reference(metric):
    x, _ = blobs([40, 30, 30], dim=8, spread=0.3)
    sims, rows = nearest_rows(x, x, 5, metric, Job(), self_rows=np.arange(len(x)))
    assert rows.shape == (100, 5) and sims.dtype == np.float32
    np.testing.assert_array_equal(rows, dense_knn(x, x, 5, metric, skip_self=True))
    assert (rows != np.arange(100)[:, None]).all()  # never itself
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first, higher = closer (l2: -distance)


def test_k_is_capped_at_the_other_rows():
    x, _ = blobs([3], dim=4)
    sims, rows = nearest_rows(x, x, 10, Metric.COSINE, Job(), self_rows=np.arange(3))
    assert rows.shape == (3, 2)


def test_clustered_search_finds_almost_every_true_neighbour(monkeypatch):
    x, _ = blobs([400] * 10, dim=16, spread=0.3, seed=1)
    exact = dense_knn(x, x, 7, Metric.COSINE, skip_self=True)
    monkeypatch.setattr(nb, "EXACT_PAIRS", 1000)  # force the clustered path on a small set
    _, rows = nearest_rows(x, x, 7, Metric.COSINE, Job(), self_rows=np.arange(len(x)))
    recall = np.mean([len(set(a) & set(b)) / 7 for a, b in zip(rows, exact, strict=True)])
    assert recall > 0.85  # isotropic noise within each blob: the hardest case for any clustering
    assert (rows != np.arange(len(x))[:, None]).all()


def test_graph_is_symmetric_and_holds_every_knn_edge():
    x, _ = blobs([30, 30], dim=8, spread=0.3)
    graph = knn_graph(x, 4, Metric.COSINE, Job())
    a = graph.adjacency.toarray()
    np.testing.assert_array_equal(a, a.T)
    for i, row in enumerate(graph.rows):
        assert (a[i, row] == 1).all()
    assert np.diag(a).sum() == 0


def test_a_cancelled_or_late_job_stops_with_a_typed_error():
    x, _ = blobs([50], dim=4)
    job = Job()
    job.cancel()
    with pytest.raises(Cancelled):
        knn_graph(x, 3, Metric.COSINE, job)
    with pytest.raises(DeadlineExceeded):
        knn_graph(x, 3, Metric.COSINE, Job(deadline=0.0))


def test_progress_is_reported_per_block(monkeypatch):
    monkeypatch.setattr(nb, "BLOCK_ROWS", 16)
    x, _ = blobs([100], dim=4)
    seen = []
    knn_graph(
        x, 3, Metric.COSINE, Job(on_progress=lambda stage, done, total: seen.append((stage, done, total)))
    )
    graph_steps = [s for s in seen if s[0] == "graph"]
    assert [d for _, d, _ in graph_steps] == [0, 16, 32, 48, 64, 80, 96, 100]
