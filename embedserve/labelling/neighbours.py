"""k nearest neighbours for labelling jobs, and the symmetric k-NN graph label spreading runs on.

One function finds neighbours for every job (``nearest_rows``): the k nearest rows of a base
set for each query row, by the collection's metric. It is exact (FAISS brute force, BLAS) while
queries x base stays under ``EXACT_PAIRS``. Above that it is *clustered*: FAISS k-means splits
the base into about 2 sqrt(n) clusters, and the queries of each cluster are compared exactly,
in one BLAS product, with the base rows of the ``PROBE`` clusters whose centroids lie nearest
to theirs. That is an inverted-file search done the other way round (per cluster, not per
query): the same candidates as IVF with ``PROBE`` lists probed, at BLAS speed, 4-5x faster than
FAISS's IVF-Flat scan and, for 10^6 rows, about 1/100 of the exact work. Queries go in
blocks, each one a ``job.step`` (progress, deadline, cancellation).

The graph (``knn_graph``): every row's k nearest other rows; its adjacency is the symmetric
union W = max(A, A^T) of the k-NN relation A, 1 per edge (connectivity weights, as in Zhou et
al. 2004 and scikit-learn's knn kernel: free of the metric's scale). Memory: the k-NN lists,
int32 + float32 [n, k] (56 MB for n = 10^6, k = 7), and the CSR adjacency, up to 2nk
entries of int32 + float32 (112 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np

from embedserve.labelling.job import Job
from embedserve.metric import Metric

if TYPE_CHECKING:  # scipy is imported by the jobs that use it: the server starts 0.3 s sooner
    import scipy.sparse as sp

EXACT_PAIRS = 4e8  # queries x base up to which neighbours are exact (20000^2: a few seconds)
BLOCK_ROWS = 4096  # queries per step
CLUSTERS_PER_SQRT = 2  # clustered search: 2 sqrt(n) clusters of the base
PROBE = 16  # clusters each query cluster is compared with (its own among them)
KMEANS_SAMPLE = 32  # k-means of the clustered search trains on this many rows per cluster
KMEANS_ITERATIONS = 10


def faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric is Metric.L2 else faiss.METRIC_INNER_PRODUCT


def nearest_rows(
    queries: np.ndarray,
    base: np.ndarray,
    k: int,
    metric: Metric,
    job: Job,
    *,
    stage: str = "neighbours",
    self_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest base rows of each query, best first.

    ``queries`` float32 [q, d], ``base`` float32 [n, d], prepared for the metric (as a
    collection stores them). ``self_rows`` int [q]: the base row that is the query itself,
    left out of its neighbours (leave-one-out), or None. Returns (similarity float32 [q, k'],
    rows int32 [q, k']) with k' = min(k, n - 1 if self_rows is not None else n), similarity
    higher = closer (-squared distance for l2), rows -1 (similarity -inf) where a clustered
    search found fewer candidates than k'.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    base = np.ascontiguousarray(base, dtype=np.float32)
    n, q = len(base), len(queries)
    k = min(k, n - 1 if self_rows is not None else n)
    sims = np.full((q, max(k, 0)), -np.inf, dtype=np.float32)
    rows = np.full((q, max(k, 0)), -1, dtype=np.int32)
    if k <= 0 or q == 0:
        return sims, rows
    fetch = k + (1 if self_rows is not None else 0)
    sign = -1.0 if metric is Metric.L2 else 1.0
    fm = faiss_metric(metric)

    def put(at: np.ndarray, scores: np.ndarray, found: np.ndarray) -> None:
        """Store the hits of queries ``at`` (found: base rows, -1 for none)."""
        if self_rows is not None:
            found, scores = _drop_self(found, scores, self_rows[at], k)
        width = min(k, found.shape[1])
        rows[at, :width] = found[:, :width]
        sims[at, :width] = np.where(found[:, :width] >= 0, sign * scores[:, :width], -np.inf)

    if q * n <= EXACT_PAIRS:
        for start in range(0, q, BLOCK_ROWS):
            job.step(stage, start, q)
            at = np.arange(start, min(q, start + BLOCK_ROWS))
            scores, found = faiss.knn(queries[at], base, fetch, metric=fm)
            put(at, scores, found)
    else:
        _clustered(queries, base, fetch, metric, job, stage, put, same=queries is base)
    job.step(stage, q, q)
    return sims, rows


def _clustered(queries, base, fetch: int, metric: Metric, job: Job, stage: str, put, *, same: bool) -> None:
    """The clustered search of the module docstring: ``put(query rows, scores, base rows)`` per block."""
    n, d = base.shape
    fm = faiss_metric(metric)
    nlist = int(np.clip(CLUSTERS_PER_SQRT * np.sqrt(n), 16, n))
    job.step(f"{stage}: k-means, {nlist} clusters", 0, n)
    km = faiss.Kmeans(
        d,
        nlist,
        niter=KMEANS_ITERATIONS,
        seed=0,
        spherical=metric is Metric.COSINE,
        max_points_per_centroid=KMEANS_SAMPLE,
        min_points_per_centroid=1,
    )
    km.train(base)
    centers = np.asarray(km.centroids, dtype=np.float32)
    centroids = faiss.IndexFlat(d, fm)
    centroids.add(centers)

    def assign(x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x), dtype=np.int64)
        for start in range(0, len(x), 4 * BLOCK_ROWS):
            job.step(f"{stage}: assigning", start, len(x))
            out[start : start + 4 * BLOCK_ROWS] = centroids.search(x[start : start + 4 * BLOCK_ROWS], 1)[1][
                :, 0
            ]
        return out

    base_cluster = assign(base)
    query_cluster = base_cluster if same else assign(queries)
    _, near = centroids.search(centers, min(PROBE, nlist))
    members = _groups(base_cluster, nlist)
    asked = _groups(query_cluster, nlist)
    done, total = 0, len(queries)
    for c in range(nlist):
        mine = asked[c]
        if not len(mine):
            continue
        candidates = np.concatenate([members[j] for j in near[c] if j >= 0])
        if not len(candidates):
            continue
        pool = base[candidates]
        for start in range(0, len(mine), BLOCK_ROWS):
            job.step(stage, done, total)
            at = mine[start : start + BLOCK_ROWS]
            scores, found = faiss.knn(queries[at], pool, min(fetch, len(candidates)), metric=fm)
            found = np.where(found >= 0, candidates[np.maximum(found, 0)], -1)
            put(at, scores, found)
            done += len(at)


def _groups(cluster: np.ndarray, n_clusters: int) -> list[np.ndarray]:
    """The rows of each cluster (``cluster`` int [n]: each row's), as n_clusters arrays."""
    order = np.argsort(cluster, kind="stable")
    bounds = np.searchsorted(cluster[order], np.arange(n_clusters + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(n_clusters)]


def _drop_self(
    found: np.ndarray, scores: np.ndarray, own: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's hits without its own row, first k kept ([q, k+1] in, [q, k] out)."""
    keep = found != own[:, None]
    # rows that did not find themselves drop their last (worst) hit instead
    missing = keep.all(axis=1)
    keep[missing, -1] = False
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(found, order, 1), np.take_along_axis(scores, order, 1)


@dataclass(frozen=True)
class KnnGraph:
    """Each row's k nearest other rows (rows int32 [n, k], -1 padded; similarity float32 [n, k]),
    and the symmetric adjacency built from them."""

    rows: np.ndarray
    similarity: np.ndarray
    adjacency: sp.csr_matrix  # float64 [n, n], 1 per edge of the symmetric union

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        a = self.adjacency
        return self.rows.nbytes + self.similarity.nbytes + a.data.nbytes + a.indices.nbytes + a.indptr.nbytes

    def density(self) -> np.ndarray:
        """float64 [n]: each row's mean similarity to its neighbours (higher = a denser place)."""
        valid = self.rows >= 0
        sims = np.where(valid, self.similarity, 0.0).astype(np.float64)
        return sims.sum(axis=1) / np.maximum(valid.sum(axis=1), 1)


def knn_graph(vectors: np.ndarray, k: int, metric: Metric, job: Job) -> KnnGraph:
    """The k-NN graph of float32 [n, d] rows (each row's k nearest other rows)."""
    n = len(vectors)
    sims, rows = nearest_rows(vectors, vectors, k, metric, job, stage="graph", self_rows=np.arange(n))
    job.step("graph: symmetrising", 0, 1)
    return KnnGraph(rows, sims, symmetric_adjacency(rows, n))


def symmetric_adjacency(rows: np.ndarray, n: int) -> sp.csr_matrix:
    """W = max(A, A^T) for the k-NN relation A (rows int [n, k], -1 = none), 1 per edge."""
    src = np.repeat(np.arange(n, dtype=np.int32), rows.shape[1])
    dst = rows.reshape(-1)
    ok = dst >= 0
    src, dst = src[ok], dst[ok]
    import scipy.sparse as sp

    a = sp.csr_matrix((np.ones(len(src), dtype=np.float32), (src, dst)), shape=(n, n))
    w = a.maximum(a.T).tocsr()
    w.sum_duplicates()
    return w


def graph_bytes(n: int, k: int, classes: int) -> int:
    """An upper bound on the memory a labelling job over n rows with k neighbours and up to
    ``classes`` classes takes: the k-NN lists (int32 + float32), the symmetric adjacency (built
    through COO and a transpose: about three copies of 2nk int32 + float32 entries at once), and
    four float32 [n, classes] label distributions."""
    lists = n * k * (4 + 4)
    adjacency = 3 * 2 * n * k * (4 + 4 + 4) + 3 * 8 * n
    return int(lists + adjacency + 4 * n * max(classes, 2) * 4)
