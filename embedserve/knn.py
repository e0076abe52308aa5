"""Weighted k-NN classification (DINO's vote), and few-shot search over a support set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07


@dataclass(frozen=True)
class Vote:
    """The outcome for one query. ``label`` is None when no labelled neighbour exists."""

    label: str | None
    confidence: float
    probabilities: list[tuple[str, float]]  # highest first


def similarity(score: float, metric: str) -> float:
    """A similarity where higher is closer: scores as they are for cosine/ip, -distance for l2."""
    return -score if metric == "l2" else score


def knn_vote(sims: np.ndarray, labels: list[str], temperature: float) -> Vote:
    """score(c) = sum over neighbours of class c of exp(sim / T); probabilities = scores / sum.

    ``sims``: float [k] similarities of the k nearest labelled neighbours;
    ``labels``: their labels. Computed as exp((sim - max) / T), which leaves the
    normalised probabilities unchanged and cannot overflow.
    """
    if len(labels) == 0:
        return Vote(None, 0.0, [])
    sims = np.asarray(sims, dtype=np.float64)
    weights = np.exp((sims - sims.max()) / temperature)
    totals: dict[str, float] = {}
    for label, w in zip(labels, weights):
        totals[label] = totals.get(label, 0.0) + float(w)
    norm = sum(totals.values())
    probs = sorted(((c, s / norm) for c, s in totals.items()), key=lambda cs: (-cs[1], cs[0]))
    return Vote(probs[0][0], probs[0][1], probs)


SCORE_BLOCK = 1 << 22  # score-matrix entries computed at once (16 MiB of float32)


def support_neighbours(
    queries: np.ndarray, support: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest support vectors per query, best first.

    ``queries`` float32 [Q, D], ``support`` float32 [S, D] (normalised already for
    cosine). Returns (scores [Q, k'], indices [Q, k']) with k' = min(k, S);
    scores are similarities for cosine/ip and squared distances for l2.
    Queries go in blocks so the [block, S] score matrix stays ~16 MiB; top-k is
    an argpartition, then a sort of k' entries only.
    """
    n_q, n_s = queries.shape[0], support.shape[0]
    k = min(k, n_s)
    out_scores = np.empty((n_q, k), dtype=np.float32)
    out_index = np.empty((n_q, k), dtype=np.int64)
    block = max(1, SCORE_BLOCK // max(n_s, 1))
    support_sq = (support**2).sum(1) if metric == "l2" else None
    for start in range(0, n_q, block):
        q = queries[start : start + block]
        if metric == "l2":
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


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; float32 [N, D]."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)
