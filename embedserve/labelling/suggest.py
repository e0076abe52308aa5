"""Which items a person should label next.

* ``typical`` (TypiClust, Hacohen et al. 2022; the cold start): k-means the rows into
  count + (already labelled) clusters, capped at max(count, MAX_CLUSTERS); the clusters holding
  no label are taken largest first, and from each the densest unlabelled row (highest mean
  similarity to its graph neighbours). Once every cluster holds a label, the clusters with the
  most rows per label come next. With few labels, the most typical item of each region teaches
  the most: an outlier labelled teaches almost nothing about the rest.
* ``uncertain`` (once labels exist): labels are spread over the graph and each unlabelled row
  is scored (1 - margin) x w(density): rows between two classes first, where w is 1 except for
  the least dense tenth of the rows (outliers: w falls linearly to 0 with their density rank),
  since labelling an isolated item teaches little about the rest. (A full density weight,
  margin x rank, kept picking the dense borders and plateaued: 97.9 % against 99.1 % with 50
  labels on the digits, see bench/labelling.py.)
  A row is never picked next to one already picked (graph neighbours block each other), so one
  suggestion never holds two near-duplicates.
* ``random``: the baseline, uniform over unlabelled rows (seeded).
* ``auto``: ``typical`` while there are fewer labels than COLD_START_PER_CLASS per class seen
  (or fewer than two classes), ``uncertain`` after: typicality wins on tiny budgets, uncertainty
  once the classes are found (Hacohen et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from embedserve.errors import FailedPrecondition, InvalidArgument, quote
from embedserve.labelling.job import Job
from embedserve.labelling.neighbours import BLOCK_ROWS, KnnGraph
from embedserve.labelling.propagate import Propagation, spread_propagate
from embedserve.metric import Metric

STRATEGIES = ("auto", "typical", "uncertain", "random")
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
    """The strategy to run: ``strategy`` itself, or for ``auto`` (or "") typical or uncertain."""
    strategy = strategy or "auto"
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"strategy must be one of {', '.join(STRATEGIES)}, not {quote(strategy)}")
    if strategy != "auto":
        return strategy
    seen = len(np.unique(row_class[row_class >= 0]))
    cold = seen < 2 or int((row_class >= 0).sum()) < COLD_START_PER_CLASS * seen
    return "typical" if cold else "uncertain"


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
    k: int = 10,
    temperature: float = 0.07,
) -> list[Suggestion]:
    """Up to ``count`` unlabelled rows of ``vectors`` float32 [n, d] to label next, best first.

    ``row_class`` int [n]: each row's class index into ``class_names``, -1 = unlabelled.
    ``strategy`` is resolved already (no "auto"); ``graph`` is needed except for random.
    """
    unlabelled = np.flatnonzero(row_class < 0)
    count = min(count, len(unlabelled))
    if count <= 0:
        return []
    if strategy == "random":
        rows = np.random.default_rng(seed).choice(unlabelled, count, replace=False)
        return [Suggestion(int(r), 0.0, "random: drawn uniformly from the unlabelled items") for r in rows]
    assert graph is not None
    if strategy == "typical":
        return _typical(count, vectors, row_class, graph, metric, job, seed)
    if strategy == "uncertain":
        if not (row_class >= 0).any():
            raise FailedPrecondition("strategy 'uncertain' needs labelled items; use 'typical' to start")
        return _uncertain(count, vectors, row_class, class_names, graph, metric, job, k, temperature)
    raise InvalidArgument(f"strategy must be one of {', '.join(STRATEGIES)}, not {quote(strategy)}")


def _typical(
    count: int,
    vectors: np.ndarray,
    row_class: np.ndarray,
    graph: KnnGraph,
    metric: Metric,
    job: Job,
    seed: int,
) -> list[Suggestion]:
    n, d = vectors.shape
    labelled = row_class >= 0
    n_clusters = min(n, max(count, min(count + int(labelled.sum()), MAX_CLUSTERS)))
    assign = kmeans_assign(vectors, n_clusters, metric, job, seed)
    density = graph.density()
    size = np.bincount(assign, minlength=n_clusters)
    labels_in = np.bincount(assign[labelled], minlength=n_clusters)
    # uncovered clusters largest first, then the most rows per label
    order = np.lexsort((-size / (labels_in + 1.0), labels_in > 0))
    # per cluster, its unlabelled rows densest first
    candidates = np.flatnonzero(~labelled)
    by_cluster = candidates[np.lexsort((-density[candidates], assign[candidates]))]
    starts = np.searchsorted(assign[by_cluster], np.arange(n_clusters + 1))
    taken = np.zeros(n_clusters, dtype=np.int64)
    rank = _rank(density)
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
                    f"typical: densest unlabelled item of cluster {c} of {n_clusters} "
                    f"({size[c]} items, {state}); density rank {rank[row]:.2f}",
                )
            )
        if not progressed:
            break
    return out


def kmeans_assign(vectors: np.ndarray, n_clusters: int, metric: Metric, job: Job, seed: int) -> np.ndarray:
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
    for start in range(0, n, BLOCK_ROWS):
        job.step("k-means: assigning", start, n)
        _, nearest = km.index.search(x[start : start + BLOCK_ROWS], 1)
        assign[start : start + BLOCK_ROWS] = nearest[:, 0]
    return assign


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
) -> list[Suggestion]:
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
