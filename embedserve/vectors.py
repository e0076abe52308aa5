"""The rule for vectors that enter a comparison (a collection, a query, a support set), defined once.

Every such vector has the owner's dimension, is finite with every component
within ±``MAX_COMPONENT`` (so inner products and squared distances of any two of
them, up to 4096 dimensions, stay finite in float32: 4096 x (2e15)^2 < 3.4e38),
and for cosine is not all zeros; cosine vectors are then L2-normalised
(:meth:`Metric.prepare`).
Errors name the offending row as ``{noun} {i}`` and the owner whose dimension it
must match (``collection 'c'``, ``model 'm'``).
"""

from __future__ import annotations

import numpy as np

from embedserve.errors import EmbedServeError, InvalidArgument, item_error
from embedserve.metric import Metric

MAX_COMPONENT = 1e15


def dimension_error(index: int, got: int, dim: int, owner: str, noun: str = "item") -> EmbedServeError:
    """The error for row ``index`` of dimension ``got`` where ``owner`` expects ``dim``."""
    return item_error(InvalidArgument, index, f"vector has dimension {got}, {owner} expects {dim}", noun=noun)


def prepare(x: np.ndarray, dim: int, metric: Metric, owner: str, noun: str = "item") -> np.ndarray:
    """float32 [N, dim] checked and prepared for ``metric``, C-contiguous; names the first bad row."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidArgument(f"vectors must be a 2-D array [N, {dim}], got shape {x.shape}")
    if x.shape[1] != dim:
        raise dimension_error(0, x.shape[1], dim, owner, noun)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise item_error(InvalidArgument, int(np.argmin(finite)), "vector contains NaN or Inf", noun=noun)
    huge = (np.abs(x) > MAX_COMPONENT).any(axis=1)
    if huge.any():
        row = int(np.argmax(huge))
        raise item_error(
            InvalidArgument,
            row,
            f"vector has a component of magnitude {float(np.abs(x[row]).max()):.3g}, limit {MAX_COMPONENT:.0e}",
            noun=noun,
        )
    if metric is Metric.COSINE:
        zero = ~x.any(axis=1)
        if zero.any():
            raise item_error(
                InvalidArgument,
                int(np.argmax(zero)),
                "vector is all zeros, which has no cosine direction",
                noun=noun,
            )
    return np.ascontiguousarray(metric.prepare(x))
