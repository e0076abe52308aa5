"""How a collection answers a search: every rule behind "exactly k hits" in one place.

Searches see rows of the ItemTable; some rows are not allowed (tombstones, rows
a label filter or ``labelled_only`` leaves out, an id a query excludes). Every
query gets min(k, allowed rows) hits, best first, by one rule (``top_k``):

* unfiltered, with a GPU mirror: the GPU index is searched for k + n_dead (GPU
  indexes take no IDSelector) and dead rows are dropped;
* only tombstones to hide, and few of them (up to 1024 for exhaustive types such
  as Flat, up to k for HNSW/IVF): the index is searched without a selector for
  k + n_dead and dead rows are dropped; a selector would cost more than that;
* at most max(EXACT_MAX_ROWS, EXACT_MAX_FRACTION * rows) rows allowed (2048 or
  5 %): those rows are searched exactly (``faiss.knn`` over their vectors, with
  the collection's metric), which is cheap at that size and more accurate than a
  graph or inverted lists that hold few allowed rows near the query;
* otherwise the index is searched with an IDSelector (types that take none
  over-fetch past up to 1024 tombstones, or else search the allowed rows
  exactly).

Whatever path ran, any query that came back with fewer than k allowed rows (an
HNSW walk or IVF probe that met too few of them) is redone exactly
(``fill_short``). An excluded id costs one extra result: k + 1 are fetched, so
exactly k remain once it is dropped, without a per-query selector.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from embedserve.store.gpu import MAX_GPU_K, GpuMirror
from embedserve.store.index import VectorIndex
from embedserve.store.spec import Hit, PackedHits
from embedserve.store.table import ItemTable

log = logging.getLogger("embedserve.store")

MAX_OVERFETCH = 1024  # tombstones an unfiltered search may over-fetch past instead of using a selector
EXACT_MAX_ROWS = 2048  # a filter allowing at most max(EXACT_MAX_ROWS, EXACT_MAX_FRACTION * rows) rows ...
EXACT_MAX_FRACTION = 0.05  # ... is searched exactly over those rows, not through the index
EXACT_CHUNK_BYTES = 32 << 20  # exact search copies the allowed vectors this many bytes at a time


def search(
    index: VectorIndex,
    gpu: GpuMirror | None,
    table: ItemTable,
    x: np.ndarray,
    k: int,
    mask: np.ndarray | None,
    *,
    filtered: bool,
    exclude: list[str | None] | None,
    nprobe: int,
    ef_search: int,
    packed: bool = False,
) -> list[list[Hit]] | PackedHits:
    """Top-k hits per query (float32 [Q, dim]) among rows ``mask`` allows (bool [n_rows], None = all),
    as Hit lists or, with ``packed``, as PackedHits (ids and scores only, no object per hit).

    ``filtered``: ``mask`` also hides live rows (a label filter), not only
    tombstones. ``exclude[i]``: an id to leave out of query i's hits.
    """
    allowed = table.n_live if mask is None else int(np.count_nonzero(mask))
    if allowed == 0:
        return (
            PackedHits([0] * len(x), [], np.empty(0, np.float32)) if packed else [[] for _ in range(len(x))]
        )
    extra = 1 if exclude is not None and any(e is not None for e in exclude) else 0
    fetch = min(k + extra, allowed)
    scores, rows = top_k(
        index,
        gpu,
        table,
        x,
        fetch,
        mask,
        filtered=filtered,
        nprobe=nprobe,
        ef_search=ef_search,
        allowed=allowed,
    )
    return (pack if packed else hits)(table, scores, rows, k, exclude)


def top_k(
    index: VectorIndex,
    gpu: GpuMirror | None,
    table: ItemTable,
    x: np.ndarray,
    k: int,
    mask: np.ndarray | None,
    *,
    filtered: bool,
    nprobe: int = 0,
    ef_search: int = 0,
    allowed: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 [q, >= k], rows int64 [q, >= k]), best first, every query with k allowed rows.

    -1 rows mark missing or left-out results (callers skip them). ``k`` must not
    exceed the number of allowed rows (``allowed``: that number, when the caller has it).
    See the module docstring for the paths.
    """
    vectors = table.vectors
    if gpu is not None and not gpu.failed and not filtered:
        fetch = min(k + table.n_dead, table.n_rows)
        if fetch <= MAX_GPU_K:
            found = gpu.search(x, fetch, nprobe)
            if found is not None:
                scores, rows = found
                if table.n_dead:
                    rows = _drop_disallowed(rows, table.live)
                return fill_short(index, x, k, scores, rows, mask, vectors)
    if mask is None:
        found = index.search_index(x, k, None, nprobe, ef_search, vectors=vectors)
        assert found is not None
        return fill_short(index, x, k, *found, None, vectors)
    n_allowed = int(np.count_nonzero(mask)) if allowed is None else allowed
    n_dead = len(mask) - n_allowed if not filtered else None
    if n_dead is not None and n_dead <= _overfetch_limit(index, k):
        return _overfetch(index, x, k, n_dead, mask, vectors, nprobe, ef_search)
    if n_allowed <= max(EXACT_MAX_ROWS, EXACT_MAX_FRACTION * len(mask)):
        return exact(index, x, k, np.flatnonzero(mask), vectors)
    found = index.search_index(x, k, mask, nprobe, ef_search, vectors=vectors)
    if found is not None:
        return fill_short(index, x, k, *found, mask, vectors)
    # this index type takes no IDSelector
    if n_dead is not None and n_dead <= MAX_OVERFETCH:
        return _overfetch(index, x, k, n_dead, mask, vectors, nprobe, ef_search)
    return exact(index, x, k, np.flatnonzero(mask), vectors)


def fill_short(
    index: VectorIndex,
    x: np.ndarray,
    k: int,
    scores: np.ndarray,
    rows: np.ndarray,
    mask: np.ndarray | None,
    vectors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Redo exactly (over the rows ``mask`` allows) every query with fewer than k valid rows (>= 0)."""
    if rows.shape[1] >= k and (not rows.size or rows.min() >= 0):  # the common case, in one reduction
        return scores, rows
    short = np.flatnonzero(np.count_nonzero(rows >= 0, axis=1) < k)
    if not len(short):
        return scores, rows
    allowed = np.flatnonzero(mask) if mask is not None else None
    exact_scores, exact_rows = exact(index, x[short], k, allowed, vectors)
    scores, rows = np.array(scores, copy=True), np.array(rows, copy=True)
    rows[short] = -1
    scores[short, :k] = exact_scores
    rows[short, :k] = exact_rows
    return scores, rows


def exact(
    index: VectorIndex, x: np.ndarray, k: int, allowed: np.ndarray | None, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k with the collection's metric over ``vectors[allowed]`` (all rows if None), as rows.

    The allowed rows are copied a bounded chunk at a time, so a large allowed set
    costs no more memory than ``EXACT_CHUNK_BYTES``.
    """
    metric = index.metric
    if allowed is None:
        return faiss.knn(x, vectors, k, metric=metric)
    chunk = max(k, EXACT_CHUNK_BYTES // (4 * vectors.shape[1]))
    l2 = metric == faiss.METRIC_L2
    best = (
        np.full((len(x), k), np.inf if l2 else -np.inf, np.float32),
        np.full((len(x), k), -1, np.int64),
    )
    for start in range(0, len(allowed), chunk):
        part = allowed[start : start + chunk]
        scores, found = faiss.knn(x, vectors[part], k, metric=metric)
        rows = np.where(found >= 0, part[np.maximum(found, 0)], -1)
        if start:
            scores, rows = np.hstack([best[0], scores]), np.hstack([best[1], rows])
            key = scores if l2 else -scores
            order = np.argsort(key, axis=1, kind="stable")[:, :k]
            scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
        best = scores, rows
    return best


def hits(
    table: ItemTable, scores: np.ndarray, rows: np.ndarray, k: int, exclude: list[str | None] | None
) -> list[list[Hit]]:
    """Hits from FAISS output ([q, fetch] each), skipping -1 padding, tombstones and excluded ids.
    The rows' label columns are read in one step each; ids and metadata only for the hits kept."""
    safe = np.maximum(rows, 0)
    usable = ((rows >= 0) & table.live[safe]).tolist()
    names, metadata, ids = table.label_names, table.metadata, table.id_column
    if names:
        codes, predicted = table.label_codes[safe].tolist(), table.predicted_codes[safe].tolist()
        confidence = table.confidence[safe].tolist()
    else:  # no label was ever stored: every code is -1, without reading the columns
        codes = predicted = [[-1] * rows.shape[1]] * len(rows)
        confidence = [[0.0] * rows.shape[1]] * len(rows)
    out = []
    for q, (q_scores, q_rows) in enumerate(zip(scores.tolist(), rows.tolist(), strict=True)):
        skip = exclude[q] if exclude is not None else None
        q_usable, q_codes, q_predicted, q_confidence = usable[q], codes[q], predicted[q], confidence[q]
        found: list[Hit] = []
        for j, row in enumerate(q_rows):
            if not q_usable[j]:
                continue
            item_id = ids[row]
            if item_id == skip:
                continue
            code, guess = q_codes[j], q_predicted[j]
            found.append(
                Hit(
                    item_id,
                    q_scores[j],
                    names[code] if code >= 0 else None,
                    dict(meta) if (meta := metadata[row]) else {},
                    names[guess] if guess >= 0 else None,
                    q_confidence[j] if guess >= 0 else 0.0,
                )
            )
            if len(found) == k:
                break
        out.append(found)
    return out


def pack(
    table: ItemTable, scores: np.ndarray, rows: np.ndarray, k: int, exclude: list[str | None] | None
) -> PackedHits:
    """``hits``' rows as PackedHits: per query its first k valid rows (not -1, not a tombstone, not
    its excluded id), flattened in query order, with one id lookup per hit and nothing else."""
    valid = rows >= 0
    flat = np.flatnonzero(valid)
    excluding = exclude is not None and any(e is not None for e in exclude)
    if excluding or not table.live[rows.ravel()[flat]].all():  # rare: a tombstone or an excluded id
        return PackedHits.of(hits(table, scores, rows, k, exclude))
    if valid.shape[1] > k:  # over-fetched past tombstones: keep each query's first k
        valid = valid & (np.cumsum(valid, axis=1) <= k)
        flat = np.flatnonzero(valid)
    counts = np.count_nonzero(valid, axis=1).tolist()
    found = table.ids_of(rows.ravel()[flat].tolist())
    return PackedHits(counts, found, np.ascontiguousarray(scores.ravel()[flat], dtype=np.float32))


def _drop_disallowed(rows: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``rows`` with every row that ``mask`` (bool [n_rows]) does not allow replaced by -1."""
    return np.where((rows >= 0) & mask[np.maximum(rows, 0)], rows, -1)


def _overfetch(
    index: VectorIndex,
    x: np.ndarray,
    k: int,
    n_dead: int,
    mask: np.ndarray,
    vectors: np.ndarray,
    nprobe: int,
    ef_search: int,
) -> tuple[np.ndarray, np.ndarray]:
    """k + n_dead from the index without a selector, dead rows dropped (``mask`` = live rows)."""
    found = index.search_index(x, min(k + n_dead, len(mask)), None, nprobe, ef_search, vectors=vectors)
    assert found is not None
    scores, rows = found
    return fill_short(index, x, k, scores, _drop_disallowed(rows, mask), mask, vectors)


def _overfetch_limit(index: VectorIndex, k: int) -> int:
    """Most tombstones an unfiltered search over-fetches past instead of using an IDSelector.

    An exhaustive scan (Flat, SQ, PQ, ...) loses its fast batched path to a
    selector (about 3x slower for a 100k Flat), while a larger k only grows its
    result heaps; HNSW and IVF check a selector almost for free but pay for each
    extra result (larger efSearch, longer heaps), so there only up to k.
    """
    return k if index.graph_or_lists else MAX_OVERFETCH
