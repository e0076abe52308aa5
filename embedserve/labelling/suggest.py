"""Which items a person should label next.

* ``typical`` (TypiClust, Hacohen et al. 2022; the cold start): k-means the rows into
  count + (already labelled) clusters, capped at max(count, MAX_CLUSTERS). Clusters that hold
  no label come first, ordered by size x squared distance of their mean from the nearest
  labelled row (a big region far from every label is where a class may still be missing), and
  from each the unlabelled row nearest its centre. Once every cluster holds a label, the
  clusters with the most rows per label come next. With few labels, the most typical item of
  each region teaches the most: an outlier labelled teaches almost nothing about the rest.
  (The densest row of a cluster, TypiClust's choice, is worse here: a tight minority inside a
  cluster, such as the 1s among a cluster of 2s in the digits, holds the densest rows, and the
  cluster's majority class then goes unlabelled; 2 of 8 seeds found 9 of the 10 digits with
  20 labels that way, against 10 of 10 nearest the centre.)
* ``uncertain`` (once labels exist): labels are spread over the graph and each unlabelled row
  is scored (1 - margin) x w(density): rows between two classes first, where w is 1 except for
  the least dense tenth of the rows (outliers: w falls linearly to 0 with their density rank),
  since labelling an isolated item teaches little about the rest. (A full density weight,
  margin x rank, kept picking the dense borders and plateaued: 97.9 % against 99.1 % with 50
  labels on the digits.) A row is never picked next to one already picked (graph neighbours
  block each other), so one suggestion never holds two near-duplicates.
* ``random``: the baseline, uniform over unlabelled rows (seeded).
* ``auto``: ``typical`` while there are fewer labels than COLD_START_PER_CLASS per class seen
  (or fewer than two classes); after that half of each suggestion is ``typical`` and half
  ``uncertain`` (``MIXED``). Uncertainty alone never finds a class nobody has labelled yet (its
  items look certain: certainly some other class), so on the digits it stalled at 89 % when
  the cold start had missed a digit; the typical half keeps looking in the regions far from
  every label.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from embedserve import knn
from embedserve.errors import FailedPrecondition, InvalidArgument, quote
from embedserve.labelling.job import Job
from embedserve.labelling.neighbours import BLOCK_ROWS, KnnGraph
from embedserve.labelling.propagate import Propagation, spread_propagate
from embedserve.metric import Metric

STRATEGIES = ("auto", "typical", "uncertain", "random")
MIXED = "typical+uncertain"  # what auto runs once the cold start is over
MAX_CLUSTERS = 500  # TypiClust's cap: beyond it, more clusters cost more than they add
COLD_START_PER_CLASS = 2
OUTLIER_FRACTION = 0.1  # the least dense tenth of the rows: their uncertainty is weighted down
KMEANS_ITERATIONS = 20
KMEANS_POINTS_PER_CLUSTER = 128  # k-means trains on a sample of this many rows per cluster


@dataclass(frozen=True)
class Suggestion:
    row: int
    score: float
    reason: str


def resolve_strategy(strategy: str, row_class: np.ndarray) -> str:
    """The strategy to run: ``strategy`` itself, or for ``auto`` (or "") typical or MIXED."""
    strategy = strategy or "auto"
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"strategy must be one of {', '.join(STRATEGIES)}, not {quote(strategy)}")
    if strategy != "auto":
        return strategy
    seen = len(np.unique(row_class[row_class >= 0]))
    cold = seen < 2 or int((row_class >= 0).sum()) < COLD_START_PER_CLASS * seen
    return "typical" if cold else MIXED


def suggest(
    strategy: str,
    count: int,
    vectors: np.ndarray,
    row_class: np.ndarray,
    class_names: list[str],
    graph: KnnGraph | None,
    metric: Metric,
    job: Job,
    *,
    seed: int = 0,
    k: int = knn.DEFAULT_K,
    temperature: float = knn.DEFAULT_TEMPERATURE,
) -> list[Suggestion]:
    """Up to ``count`` unlabelled rows of ``vectors`` float32 [n, d] to label next, best first.

    ``row_class`` int [n]: each row's class index into ``class_names``, -1 = unlabelled.
    ``strategy`` is resolved already (no "auto"); ``graph`` is needed for uncertain and MIXED.
    ``k``, ``temperature``: the k-NN vote for items the spread labels do not reach.
    """
    unlabelled = np.flatnonzero(row_class < 0)
    count = min(count, len(unlabelled))
    if count <= 0:
        return []
    if strategy == "random":
        rows = np.random.default_rng(seed).choice(unlabelled, count, replace=False)
        return [Suggestion(int(r), 0.0, "random: drawn uniformly from the unlabelled items") for r in rows]
    if strategy == "typical":
        return _typical(count, vectors, row_class, metric, job, seed)
    if strategy not in ("uncertain", MIXED):
        raise InvalidArgument(f"strategy must be one of {', '.join(STRATEGIES)}, not {quote(strategy)}")
    if not (row_class >= 0).any():
        raise FailedPrecondition("strategy 'uncertain' needs labelled items; use 'typical' to start")
    assert graph is not None
    typical = _typical(count // 2, vectors, row_class, metric, job, seed) if strategy == MIXED else []
    taken = [t.row for t in typical]
    uncertain = _uncertain(
        count - len(typical), vectors, row_class, class_names, graph, metric, job, k, temperature, taken
    )
    return typical + uncertain


def _typical(
    count: int, vectors: np.ndarray, row_class: np.ndarray, metric: Metric, job: Job, seed: int
) -> list[Suggestion]:
    if count <= 0:
        return []
    n = len(vectors)
    labelled = row_class >= 0
    n_clusters = min(n, max(count, min(count + int(labelled.sum()), MAX_CLUSTERS)))
    assign, closeness = kmeans_assign(vectors, n_clusters, metric, job, seed)
    size = np.bincount(assign, minlength=n_clusters)
    labels_in = np.bincount(assign[labelled], minlength=n_clusters)
    # uncovered clusters first, by size x squared distance of their mean from the nearest label:
    # a big cluster far from every label is where a class may not be found yet (one next to a
    # label is often a part of that label's class); then the most rows per label
    priority = (
        size * _distance_from_labels(vectors, assign, n_clusters, labelled, job) if labelled.any() else size
    )
    order = np.lexsort((-priority / (labels_in + 1.0), labels_in > 0))
    # per cluster, its unlabelled rows nearest the centre first
    candidates = np.flatnonzero(~labelled)
    by_cluster = candidates[np.lexsort((-closeness[candidates], assign[candidates]))]
    starts = np.searchsorted(assign[by_cluster], np.arange(n_clusters + 1))
    taken = np.zeros(n_clusters, dtype=np.int64)
    rank = _rank(closeness)
    out: list[Suggestion] = []
    while len(out) < count:
        progressed = False
        for c in order:
            if len(out) == count:
                break
            i = starts[c] + taken[c]
            if i >= starts[c + 1]:
                continue
            row = int(by_cluster[i])
            taken[c] += 1
            progressed = True
            state = "no label yet" if labels_in[c] == 0 else f"{labels_in[c]} labelled"
            out.append(
                Suggestion(
                    row,
                    float(rank[row]),
                    f"typical: the unlabelled item nearest the centre of cluster {c} of {n_clusters} "
                    f"({size[c]} items, {state})",
                )
            )
        if not progressed:
            break
    return out


def _distance_from_labels(
    vectors: np.ndarray, assign: np.ndarray, n_clusters: int, labelled: np.ndarray, job: Job
) -> np.ndarray:
    """float64 [n_clusters]: squared L2 distance from each cluster's mean to the nearest labelled row."""
    d = vectors.shape[1]
    means = np.zeros((n_clusters, d))
    np.add.at(means, assign, vectors)
    means /= np.maximum(np.bincount(assign, minlength=n_clusters), 1)[:, None]
    job.step("typical: distance to labels", 0, 1)
    dist, _ = faiss.knn(means.astype(np.float32), np.ascontiguousarray(vectors[labelled]), 1)
    return np.maximum(dist[:, 0].astype(np.float64), 0.0)


def kmeans_assign(
    vectors: np.ndarray, n_clusters: int, metric: Metric, job: Job, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS k-means of float32 [n, d] into ``n_clusters`` (spherical for cosine), seeded by
    k-means++ (FAISS's random seeding often puts two seeds in one cluster and none in another,
    and k-means never recovers from that: the cold start would then miss a class); int64 [n]
    cluster of each row. It runs on a sample of KMEANS_POINTS_PER_CLUSTER rows per cluster."""
    n, d = vectors.shape
    job.step(f"k-means: {n_clusters} clusters", 0, n)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    rng = np.random.default_rng(seed)
    sample = x
    if n > KMEANS_POINTS_PER_CLUSTER * n_clusters:
        sample = x[np.sort(rng.choice(n, KMEANS_POINTS_PER_CLUSTER * n_clusters, replace=False))]
    km = faiss.Kmeans(
        d,
        n_clusters,
        niter=KMEANS_ITERATIONS,
        seed=seed,
        spherical=metric is Metric.COSINE,
        max_points_per_centroid=KMEANS_POINTS_PER_CLUSTER,
        min_points_per_centroid=1,
    )
    km.train(sample, init_centroids=kmeans_pp(sample, n_clusters, rng, job))
    assign = np.empty(n, dtype=np.int64)
    closeness = np.empty(n, dtype=np.float64)
    sign = 1.0 if km.cp.spherical else -1.0  # the index of a spherical k-means scores by inner product
    for start in range(0, n, BLOCK_ROWS):
        job.step("k-means: assigning", start, n)
        score, nearest = km.index.search(x[start : start + BLOCK_ROWS], 1)
        assign[start : start + BLOCK_ROWS] = nearest[:, 0]
        closeness[start : start + BLOCK_ROWS] = sign * score[:, 0]
    return assign, closeness


def kmeans_pp(x: np.ndarray, n_clusters: int, rng: np.random.Generator, job: Job) -> np.ndarray:
    """Greedy k-means++ seeds (Arthur & Vassilvitskii 2007; greedy as scikit-learn's): float32
    [n_clusters, d]. Each next seed is the best, by the squared distances left, of 2 + ln(C)
    candidates drawn with probability proportional to their squared distance from the seeds so
    far (a single draw still puts two seeds in one big cluster now and then)."""
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    trials = 2 + int(np.log(n_clusters))

    def dist2(seeds: np.ndarray) -> np.ndarray:  # [len(seeds), n]
        return np.maximum(sq[None, :] - 2 * seeds @ x.T + np.einsum("ij,ij->i", seeds, seeds)[:, None], 0)

    out = np.empty((n_clusters, x.shape[1]), dtype=np.float32)
    out[0] = x[rng.integers(n)]
    d2 = dist2(out[:1])[0]
    for j in range(1, n_clusters):
        if j % 64 == 0:
            job.step("k-means: seeding", j, n_clusters)
        total = float(d2.sum())
        if total <= 0:
            out[j:] = x[rng.integers(n, size=n_clusters - j)]
            break
        picks = rng.choice(n, trials, p=d2 / total)
        left = np.minimum(d2[None, :], dist2(x[picks]))
        best = int(np.argmin(left.sum(axis=1)))
        out[j], d2 = x[picks[best]], left[best]
    return out


def _uncertain(
    count: int,
    vectors: np.ndarray,
    row_class: np.ndarray,
    class_names: list[str],
    graph: KnnGraph,
    metric: Metric,
    job: Job,
    k: int,
    temperature: float,
    taken: list[int],
) -> list[Suggestion]:
    """``taken``: rows suggested already (by the typical half): neither they nor their
    neighbours are picked again."""
    if count <= 0:
        return []
    labelled = np.flatnonzero(row_class >= 0)
    targets = np.flatnonzero(row_class < 0)
    prop: Propagation = spread_propagate(
        graph, vectors, labelled, row_class[labelled], len(class_names), targets, k, temperature, metric, job
    )
    rank = _rank(graph.density())
    score = (1.0 - prop.margin.astype(np.float64)) * np.minimum(1.0, rank[targets] / OUTLIER_FRACTION)
    order = np.argsort(-score, kind="stable")
    adjacency = graph.adjacency
    blocked = np.zeros(graph.n, dtype=bool)
    for row in taken:
        blocked[row] = True
        blocked[adjacency.indices[adjacency.indptr[row] : adjacency.indptr[row + 1]]] = True
    out: list[Suggestion] = []
    for i in order:
        row = int(targets[i])
        if blocked[row]:
            continue
        blocked[adjacency.indices[adjacency.indptr[row] : adjacency.indptr[row + 1]]] = True
        top = np.argsort(-prop.distribution[i], kind="stable")[:2]
        between = " and ".join(repr(class_names[c]) for c in top if prop.distribution[i, c] > 0)
        out.append(
            Suggestion(
                row,
                float(score[i]),
                f"uncertain: margin {prop.margin[i]:.2f} between {between}; density rank {rank[row]:.2f}",
            )
        )
        if len(out) == count:
            break
    return out


def _rank(values: np.ndarray) -> np.ndarray:
    """float64 [n]: each value's rank scaled to (0, 1], 1 for the highest."""
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(values))
    rank[order] = np.arange(1, len(values) + 1) / max(len(values), 1)
    return rank
