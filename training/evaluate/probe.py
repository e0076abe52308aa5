"""Linear probe: multinomial logistic regression on frozen, L2-normalised features."""

from __future__ import annotations

import numpy as np

from embedserve.metric import l2_normalize


def linear_probe(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray, c: float = 10.0
) -> float:
    """Test accuracy (%) of logistic regression fitted on every training label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(l2_normalize(train))
    clf = LogisticRegression(C=c, max_iter=2000)
    clf.fit(scaler.transform(l2_normalize(train)), train_labels)
    return round(100 * float(clf.score(scaler.transform(l2_normalize(test)), test_labels)), 2)
