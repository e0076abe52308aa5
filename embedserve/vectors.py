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
    """float32 [N, dim] checked and prepared for ``metric``, C-contiguous; names the first bad row.

    One pass screens every row: a squared norm (summed in float64) that is at most
    ``MAX_COMPONENT ** 2`` (NaN never is) means every component is finite and within
    the limit, and for cosine a positive one means the row is not all zeros; cosine rows
    are then divided by its root. Only a batch with a row outside the screen goes
    through the checks one rule at a time, which name the row and the rule it breaks.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidArgument(f"vectors must be a 2-D array [N, {dim}], got shape {x.shape}")
    if x.shape[1] != dim:
        raise dimension_error(0, x.shape[1], dim, owner, noun)
    squares = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    cosine = metric is Metric.COSINE
    passed = (squares <= MAX_COMPONENT**2) & (squares > 0) if cosine else squares <= MAX_COMPONENT**2
    if not passed.all():
        _check_rows(x, cosine, noun)  # raises for a row that breaks a rule (not for a merely long one)
    if cosine:
        return (x / np.sqrt(squares)[:, None]).astype(np.float32)  # as l2_normalize, norms all > 0
    return np.ascontiguousarray(x)


def _check_rows(x: np.ndarray, cosine: bool, noun: str) -> None:
    """InvalidArgument naming the first row with a NaN or Inf, with a component beyond
    ±``MAX_COMPONENT``, or (``cosine``) of all zeros, in that order of rules."""
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
    if cosine:
        zero = ~x.any(axis=1)
        if zero.any():
            raise item_error(
                InvalidArgument,
                int(np.argmax(zero)),
                "vector is all zeros, which has no cosine direction",
                noun=noun,
            )
