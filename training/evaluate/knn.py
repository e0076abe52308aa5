"""Few-label weighted k-NN evaluation, as DINO's ``knn_classifier`` does it (numpy only).

Features are L2-normalised; each query takes its k most cosine-similar labelled
images, and class c scores sum(exp(sim / T)) over those of class c — the vote of
``embedserve.knn``, the very code the server's Classify runs, so the accuracy a
bundle's provenance reports is the vote it is served with. With L labels per
class, L images per class are drawn from the training set (5 draws, seeds 0..4)
and accuracy on the test set is averaged: mean ± std over draws.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedserve.knn import DEFAULT_K, DEFAULT_TEMPERATURE, nearest, weighted_vote
from embedserve.metric import Metric, l2_normalize

SHOTS: tuple[int | None, ...] = (1, 5, 10, None)  # None = every training label
DRAWS = 5


def knn_predict(
    support: np.ndarray,
    support_labels: np.ndarray,
    queries: np.ndarray,
    num_classes: int,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
) -> np.ndarray:
    """Predicted class per query, int64 [Q]: the server's vote (``embedserve.knn``) over the k most
    cosine-similar of ``support`` [S, D] (labels int [S]) for ``queries`` [Q, D] (normalised here)."""
    support, queries = l2_normalize(support), l2_normalize(queries)
    sims, index = nearest(queries, support, k, Metric.COSINE)
    probs = weighted_vote(sims, np.asarray(support_labels)[index], num_classes, temperature)
    return probs.argmax(axis=1)


def draw_labelled(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` random images of each class (sorted), reproducible by ``seed``."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def knn_table(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    shots: Sequence[int | None] = SHOTS,
    draws: int = DRAWS,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
) -> dict[str, dict[str, float]]:
    """k-NN accuracy (%) per label budget: {"1": {"mean", "std"}, ..., "all": {...}}.

    A budget larger than the smallest class is left out of the table.
    """
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    smallest = int(np.bincount(train_labels)[np.unique(train_labels)].min())
    table = {}
    for shot in shots:
        if shot is not None and shot > smallest:
            continue
        if shot is None:
            accs = [
                float(
                    (
                        knn_predict(train, train_labels, test, num_classes, k, temperature) == test_labels
                    ).mean()
                )
            ]
        else:
            accs = []
            for seed in range(draws):
                idx = draw_labelled(train_labels, shot, seed)
                pred = knn_predict(train[idx], train_labels[idx], test, num_classes, k, temperature)
                accs.append(float((pred == test_labels).mean()))
        table["all" if shot is None else str(shot)] = {
            "mean": round(100 * float(np.mean(accs)), 2),
            "std": round(100 * float(np.std(accs)), 2),
        }
    return table


def format_row(name: str, table: dict[str, dict[str, float]]) -> str:
    """One markdown table row: | name | 1 | 5 | 10 | all |, each "mean ± std"."""
    cells = [f"{v['mean']:.1f} ± {v['std']:.1f}" if v["std"] else f"{v['mean']:.1f}" for v in table.values()]
    return "| " + " | ".join([name, *cells]) + " |"
