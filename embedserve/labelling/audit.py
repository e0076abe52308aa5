"""Label audit: labelled rows whose neighbours disagree with their label.

Each labelled row's k nearest *other* labelled rows vote (weighted k-NN, the Classify vote);
the score is the probability that vote gives the row's own label (leave-one-out k-NN
self-confidence, as cleanlab ranks label issues). Lowest first: a label its neighbours do not
share is the likeliest mistake, and the vote's winner is the suggested label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedserve import knn
from embedserve.labelling.job import Job
from embedserve.labelling.neighbours import nearest_rows
from embedserve.metric import Metric


@dataclass(frozen=True)
class Finding:
    row: int
    suggested_class: int  # -1 when the row has no labelled neighbour
    score: float  # probability of the given label among its neighbours


def audit(
    vectors: np.ndarray,
    row_class: np.ndarray,
    n_classes: int,
    count: int,
    k: int,
    temperature: float,
    metric: Metric,
    job: Job,
) -> list[Finding]:
    """The ``count`` labelled rows of ``vectors`` float32 [n, d] least supported by their
    neighbours; ``row_class`` int [n], -1 = unlabelled."""
    labelled = np.flatnonzero(row_class >= 0)
    if len(labelled) < 2 or count <= 0:
        return []
    base = vectors[labelled]
    sims, found = nearest_rows(base, base, k, metric, job, stage="audit", self_rows=np.arange(len(labelled)))
    classes = row_class[labelled]
    votes = np.where(found >= 0, classes[np.maximum(found, 0)], -1)
    dist = knn.weighted_vote(np.where(found >= 0, sims, 0.0), votes, n_classes, temperature)
    own = dist[np.arange(len(labelled)), classes]
    suggested = np.where(dist.sum(axis=1) > 0, dist.argmax(axis=1), -1)
    order = np.argsort(own, kind="stable")[:count]
    return [Finding(int(labelled[i]), int(suggested[i]), float(own[i])) for i in order]
