"""Limits on one request's work, and the checks that enforce them, defined once.

The server checks these when a request arrives, before any work; the store
calls the same checks for callers that use it directly as a library.
"""

from __future__ import annotations

import numpy as np

from embedserve.errors import InvalidArgument, ResourceExhausted, quote

MAX_K = 1024  # results per query (Search, Classify)
DEFAULT_SEARCH_K = 10  # Search when the request leaves k at 0
MAX_ID_BYTES = 256  # UTF-8 bytes of an item id
MAX_SUPPORT_WORK = 2e10  # queries x support examples x dim multiply-adds in one few-shot Classify


def check_k(k: object) -> int:
    """``k`` if it is an integer in 1..MAX_K; InvalidArgument otherwise."""
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidArgument(f"k must be in 1..{MAX_K}, got {quote(k)}")
    return int(k)


def check_search_params(nprobe: object, ef_search: object) -> None:
    """``nprobe`` and ``ef_search`` are integers >= 0 (0 = the index's own setting)."""
    for name, value in (("nprobe", nprobe), ("ef_search", ef_search)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"{name} must be an integer >= 0, got {quote(value)}")


def check_support_work(queries: int, support: int, dim: int) -> None:
    """A few-shot Classify costs queries x support x dim multiply-adds; ResourceExhausted over the limit."""
    if queries * support * dim > MAX_SUPPORT_WORK:
        raise ResourceExhausted(
            f"{queries} queries x {support} support examples x dim {dim} is over "
            f"{MAX_SUPPORT_WORK:.0e} multiply-adds; index the support set in a collection instead"
        )
