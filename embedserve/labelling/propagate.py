"""Label propagation: a predicted class distribution for every unlabelled row.

Two methods, one result type (``Propagation``):

* ``knn_propagate``: each unlabelled row's k nearest *labelled* rows vote, weighted
  exp(sim / T): the vote Classify runs (``embedserve.knn.weighted_vote``), for all rows at once.
* ``spread``: label spreading (Zhou et al. 2004) over the symmetric k-NN graph of all rows.
  With S = D^-1/2 W D^-1/2 and Y the one-hot labels (0 rows for unlabelled), iterate
  F <- alpha S F + (1 - alpha) Y from F = Y; the fixed point is (1 - alpha)(I - alpha S)^-1 Y.
  Labels travel along chains of near neighbours, so a class shaped like a curve is labelled
  along its length, where a vote over the nearest labelled rows would take the other class's
  nearer end. Iteration stops once no new row is reached and either no row's distribution
  moves by more than ``tol`` (L1, relative) or STABLE_ITERATIONS iterations in a row changed
  the predicted class of at most STABLE_SHARE of the rows (the predictions are what is asked
  for; the distributions converge much later, at rate alpha), or after ``max_iterations``. A
  row the labels cannot reach (a graph component without labels) falls back to the weighted
  k-NN vote.

Per row: the distribution normalised to sum 1; ``confidence`` = its top probability; ``margin``
= top minus second (0 when two classes tie, 1 when only one class reached the row).
Cost of spreading: one sparse [n, n] x [n, C] product per iteration (2nkC multiply-adds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from embedserve import knn
from embedserve.labelling.job import Job
from embedserve.labelling.neighbours import KnnGraph, nearest_rows
from embedserve.metric import Metric

if TYPE_CHECKING:  # scipy is imported by the jobs that use it: the server starts 0.3 s sooner
    import scipy.sparse as sp

DEFAULT_ALPHA = 0.99
DEFAULT_MAX_ITERATIONS = 100
STABLE_ITERATIONS = 3  # stop once this many iterations in a row changed (almost) no prediction
STABLE_SHARE = 1e-4  # "almost": at most this share of the rows changed class
DEFAULT_TOL = 1e-3


@dataclass(frozen=True)
class Propagation:
    """Predictions for ``rows`` (int64 [m]): class index into the caller's classes (int64 [m]),
    the distribution (float32 [m, C], rows sum to 1), confidence and margin (float32 [m])."""

    rows: np.ndarray
    classes: np.ndarray
    distribution: np.ndarray
    confidence: np.ndarray
    margin: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, distribution: np.ndarray) -> Propagation:
        dist = np.asarray(distribution, dtype=np.float64)
        totals = dist.sum(axis=1, keepdims=True)
        dist = np.divide(dist, totals, out=np.zeros_like(dist), where=totals > 0)
        n_classes = dist.shape[1]
        if n_classes >= 2:
            top2 = -np.partition(-dist, 1, axis=1)[:, :2]
            best, second = top2.max(axis=1), top2.min(axis=1)
        else:
            best, second = dist[:, 0] if n_classes else np.zeros(len(dist)), np.zeros(len(dist))
        return cls(
            rows=np.asarray(rows, dtype=np.int64),
            classes=dist.argmax(axis=1) if n_classes else np.zeros(len(dist), dtype=np.int64),
            distribution=dist.astype(np.float32),
            confidence=best.astype(np.float32),
            margin=(best - second).astype(np.float32),
        )


def knn_propagate(
    vectors: np.ndarray,
    labelled: np.ndarray,
    classes: np.ndarray,
    n_classes: int,
    targets: np.ndarray,
    k: int,
    temperature: float,
    metric: Metric,
    job: Job,
) -> Propagation:
    """Weighted k-NN of ``targets`` (rows int [m]) over the ``labelled`` rows (int [L], class
    index int [L] each) of ``vectors`` float32 [n, d]."""
    sims, found = nearest_rows(vectors[targets], vectors[labelled], k, metric, job, stage="k-NN vote")
    votes = np.where(found >= 0, classes[np.maximum(found, 0)], -1)
    dist = knn.weighted_vote(np.where(found >= 0, sims, 0.0), votes, n_classes, temperature)
    return Propagation.of(targets, dist)


def spread(
    graph: KnnGraph,
    labelled: np.ndarray,
    classes: np.ndarray,
    n_classes: int,
    job: Job,
    *,
    alpha: float = DEFAULT_ALPHA,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tol: float = DEFAULT_TOL,
    settle: int = STABLE_ITERATIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Label spreading over ``graph`` from the ``labelled`` rows (class index ``classes``).

    Returns (F float32 [n, C], the unnormalised spread distributions; reached bool [n], rows
    that got any label mass). ``settle`` 0: iterate until ``tol`` (the fixed point) instead of
    until the predictions settle. Memory: three float32 [n, C] arrays (F, the next F, and a scratch
    one) beside the graph: 240 MB for 10^6 rows and 20 classes.
    """
    n = graph.n
    s = normalised(graph.adjacency).astype(np.float32)
    # each class's labels carry the same total mass, so a class labelled more often does not
    # outweigh the others far from its labels (class mass normalisation, Zhu et al. 2003)
    per_class = np.bincount(classes, minlength=n_classes).astype(np.float32)
    seed = (1.0 / per_class[classes]).astype(np.float32)  # Y's non-zero entries, at (labelled, classes)
    f = np.zeros((n, n_classes), dtype=np.float32)
    f[labelled, classes] = seed
    reached = np.zeros(n, dtype=bool)
    reached[labelled] = True
    predicted = np.full(n, -1, dtype=np.int64)
    stable = 0
    for it in range(max_iterations):
        job.step("spreading", it, max_iterations)
        new = s @ f
        new *= alpha
        new[labelled, classes] += (1.0 - alpha) * seed
        size = new.sum(axis=1)
        now_reached = size > 0
        np.subtract(new, f, out=f)  # the old F is not needed any more: its buffer takes the change
        np.abs(f, out=f)
        change = f.sum(axis=1) / np.maximum(size, np.finfo(np.float32).tiny)
        f = new
        grew = bool((now_reached & ~reached).any())
        reached = now_reached
        now_predicted = np.where(reached, f.argmax(axis=1), -1)
        moved = int(np.count_nonzero(now_predicted != predicted))
        predicted = now_predicted
        stable = stable + 1 if not grew and moved <= STABLE_SHARE * n else 0
        if not grew and (float(change.max(initial=0.0)) < tol or 0 < settle <= stable):
            break
    job.step("spreading", max_iterations, max_iterations)
    return f, reached


def normalised(w: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1/2 W D^-1/2 (rows without edges stay zero)."""
    degree = np.asarray(w.sum(axis=1)).ravel()
    scale = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    import scipy.sparse as sp

    d = sp.diags(scale)
    return (d @ w @ d).tocsr()


def spread_propagate(
    graph: KnnGraph,
    vectors: np.ndarray,
    labelled: np.ndarray,
    classes: np.ndarray,
    n_classes: int,
    targets: np.ndarray,
    k: int,
    temperature: float,
    metric: Metric,
    job: Job,
    *,
    alpha: float = DEFAULT_ALPHA,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> Propagation:
    """``spread``, read off at ``targets``; rows the labels did not reach get the k-NN vote."""
    f, reached = spread(graph, labelled, classes, n_classes, job, alpha=alpha, max_iterations=max_iterations)
    dist = f[targets]
    unreached = ~reached[targets]
    if unreached.any():
        fallback = knn_propagate(
            vectors, labelled, classes, n_classes, targets[unreached], k, temperature, metric, job
        )
        dist[unreached] = fallback.distribution
    return Propagation.of(targets, dist)
