"""The weighted k-NN vote (DINO's ``knn_classifier``), and exact neighbours in a support set.

One definition serves every caller: Classify against a collection's labelled
items, few-shot Classify against an in-request support set, and training's
evaluation (``training.evaluate.knn``), so the accuracy a bundle's provenance
reports is the vote the server runs.

The vote: score(c) = sum over the k nearest labelled neighbours of class c of
exp(sim / T); probabilities are the scores normalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from embedserve.metric import Metric
from embedserve.vectors import prepare

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07
SCORE_BLOCK = 1 << 22  # score-matrix entries computed at once in ``nearest`` (16 MiB of float32)


@dataclass(frozen=True)
class Vote:
    """The outcome for one query. ``label`` is None when no labelled neighbour exists."""

    label: str | None
    confidence: float
    probabilities: list[tuple[str, float]]  # highest first, ties by label


def weighted_vote(sims: np.ndarray, classes: np.ndarray, num_classes: int, temperature: float) -> np.ndarray:
    """Class probabilities per query, float64 [Q, num_classes].

    ``sims``: similarities (higher = closer) of each query's neighbours, [Q, k];
    ``classes``: their class numbers in 0..num_classes-1, int [Q, k], -1 where a
    query has fewer than k neighbours. Weights are exp((sim - max) / T), which
    leaves the normalised probabilities unchanged and cannot overflow. A query
    without neighbours gets a row of zeros.
    """
    sims = np.asarray(sims, dtype=np.float64)
    classes = np.asarray(classes, dtype=np.int64)
    present = classes >= 0
    top = np.where(present, sims, -np.inf).max(axis=1, keepdims=True) if sims.size else sims[:, :1]
    with np.errstate(invalid="ignore", over="ignore"):
        weights = np.where(present, np.exp((sims - np.where(np.isfinite(top), top, 0.0)) / temperature), 0.0)
    scores = np.zeros((len(sims), num_classes))
    rows = np.broadcast_to(np.arange(len(sims))[:, None], classes.shape)
    np.add.at(scores, (rows[present], classes[present]), weights[present])
    totals = scores.sum(axis=1, keepdims=True)
    return np.divide(scores, totals, out=np.zeros_like(scores), where=totals > 0)


def vote(
    scores: Sequence[Sequence[float]], labels: Sequence[Sequence[str]], metric: Metric, temperature: float
) -> list[Vote]:
    """One Vote per query from its neighbours' raw scores (as the metric reports them) and labels."""
    names = sorted({label for row in labels for label in row})
    code = {name: c for c, name in enumerate(names)}
    width = max((len(row) for row in labels), default=0)
    sims = np.zeros((len(labels), width))
    classes = np.full((len(labels), width), -1, dtype=np.int64)
    for q, (row_scores, row_labels) in enumerate(zip(scores, labels, strict=True)):
        sims[q, : len(row_scores)] = metric.similarity(np.asarray(row_scores, dtype=np.float64))
        classes[q, : len(row_labels)] = [code[label] for label in row_labels]
    probs = weighted_vote(sims, classes, len(names), temperature)
    out = []
    for row, row_classes in zip(probs, classes, strict=True):
        seen = np.unique(row_classes[row_classes >= 0])
        ranked = sorted(((names[c], float(row[c])) for c in seen), key=lambda cp: (-cp[1], cp[0]))
        out.append(Vote(ranked[0][0], ranked[0][1], ranked) if ranked else Vote(None, 0.0, []))
    return out


def nearest(
    queries: np.ndarray, support: np.ndarray, k: int, metric: Metric
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest support vectors per query, best first.

    ``queries`` float32 [Q, D], ``support`` float32 [S, D], both already prepared
    for the metric (:meth:`Metric.prepare`). Returns (scores [Q, k'], indices
    [Q, k']) with k' = min(k, S); scores are similarities for cosine/ip and squared
    distances for l2. Queries go in blocks so the [block, S] score matrix stays
    ~16 MiB; top-k is an argpartition, then a stable sort of k' entries only.
    """
    n_q, n_s = queries.shape[0], support.shape[0]
    k = min(k, n_s)
    out_scores = np.empty((n_q, k), dtype=np.float32)
    out_index = np.empty((n_q, k), dtype=np.int64)
    block = max(1, SCORE_BLOCK // max(n_s, 1))
    support_sq = (support**2).sum(1) if metric is Metric.L2 else None
    for start in range(0, n_q, block):
        q = queries[start : start + block]
        if metric is Metric.L2:
            scores = np.maximum((q**2).sum(1, keepdims=True) - 2.0 * (q @ support.T) + support_sq, 0.0)
            key = scores
        else:
            scores = q @ support.T
            key = -scores
        top = np.argpartition(key, k - 1, axis=1)[:, :k] if k < n_s else np.tile(np.arange(n_s), (len(q), 1))
        order = np.take_along_axis(top, np.argsort(np.take_along_axis(key, top, 1), axis=1, kind="stable"), 1)
        out_index[start : start + len(q)] = order
        out_scores[start : start + len(q)] = np.take_along_axis(scores, order, 1)
    return out_scores, out_index


def support_neighbours(
    queries: np.ndarray, support: np.ndarray, k: int, metric: Metric, owner: str
) -> tuple[np.ndarray, np.ndarray]:
    """Few-shot k-NN: ``nearest`` after both sets pass the vector rule (``embedserve.vectors.prepare``).

    ``queries`` float32 [Q, D], ``support`` float32 [S, D], as embedded or sent;
    ``owner`` names what sets D in error messages. Returns (scores, indices) as ``nearest``.
    """
    dim = support.shape[1]
    support = prepare(support, dim, metric, owner, noun="support")
    queries = prepare(queries, dim, metric, owner, noun="query")
    return nearest(queries, support, k, metric)
