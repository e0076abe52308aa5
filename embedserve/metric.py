"""Similarity metrics: the one definition of ``cosine``, ``ip`` and ``l2`` and of how scores compare.

A score as FAISS and the API report it is a similarity for ``cosine`` and ``ip``
(higher is closer) and a squared Euclidean distance for ``l2`` (lower is closer).
Cosine is inner product over L2-normalised vectors: vectors are normalised once,
when they enter a collection or a support set (:meth:`Metric.prepare`).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from embedserve.errors import InvalidArgument, quote


class Metric(StrEnum):
    COSINE = "cosine"
    IP = "ip"
    L2 = "l2"

    @property
    def higher_is_better(self) -> bool:
        """True when a larger score means a closer match (cosine, ip); False for l2 distances."""
        return self is not Metric.L2

    def similarity(self, scores: np.ndarray) -> np.ndarray:
        """Scores turned into similarities (higher = closer), float64: as they are, or -distance for l2."""
        scores = np.asarray(scores, dtype=np.float64)
        return scores if self.higher_is_better else -scores

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """float32 [N, D] as they are compared: rows L2-normalised for cosine, unchanged otherwise."""
        return l2_normalize(vectors) if self is Metric.COSINE else np.asarray(vectors, dtype=np.float32)

    @classmethod
    def parse(cls, value: object) -> Metric:
        """The metric named ``value``; InvalidArgument naming the allowed values otherwise."""
        try:
            return cls(str(value)) if isinstance(value, str) else cls(value)  # type: ignore[arg-type]
        except ValueError:
            raise InvalidArgument(f"metric must be one of {', '.join(cls)}, not {quote(value)}") from None


METRIC_NAMES: tuple[str, ...] = tuple(m.value for m in Metric)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of float [N, D] scaled to unit L2 norm, as float32; all-zero rows stay zero.

    Norms are taken in float64, so rows of tiny (even subnormal) float32 values normalise too.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))[:, None]
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)
