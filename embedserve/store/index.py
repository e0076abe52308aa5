"""The FAISS side of a collection: index choice, training, filtered search, rebuilds.

FAISS ids are the rows of the collection's ItemTable (0..n_rows-1, dead rows
included), so ``index.ntotal == table.n_rows`` always holds and no id map is
needed. Deleted rows stay in the index as tombstones that searches leave out;
the collection rebuilds the index from its live rows when tombstones pile up.
This works for every index type, including those without ``remove_ids`` (HNSW).

Restricted searches (a label filter, ``labelled_only``, tombstones) return k
hits whenever k rows qualify, by one rule (``VectorIndex.search``):

* only tombstones to hide, and few of them (up to 1024 for exhaustive types such
  as Flat, up to k for HNSW/IVF): the index is searched without a selector for
  k + n_dead and dead rows are dropped; a selector would cost more than that;
* at most max(EXACT_MAX_ROWS, EXACT_MAX_FRACTION * rows) rows allowed (2048 or
  5 %): those rows are searched exactly (``faiss.knn`` over their vectors, with
  the collection's metric), which is cheap at that size and more accurate than a
  graph or inverted lists that hold few allowed rows near the query;
* otherwise the index is searched with an IDSelector (types that take none
  over-fetch past up to 1024 tombstones, or else search the allowed rows
  exactly), and any query that still came back with fewer than k rows (an HNSW
  walk or IVF probe that met too few allowed rows) is redone exactly.

An index type that needs training (IVF, PQ, ...) starts as an exact IndexFlat
with the same metric and is trained once ``train_size`` live vectors exist.
"""

from __future__ import annotations

import logging
import re

import faiss
import numpy as np

from embedserve.errors import InvalidArgument
from embedserve.store.spec import CollectionSpec

log = logging.getLogger("embedserve.store")

FAISS_METRICS = {
    "cosine": faiss.METRIC_INNER_PRODUCT,
    "ip": faiss.METRIC_INNER_PRODUCT,
    "l2": faiss.METRIC_L2,
}

# index types that take sequential adds (ids = rows) and plain search; wrappers are looked through
_SUPPORTED = (
    faiss.IndexFlat,
    faiss.IndexHNSW,
    faiss.IndexIVF,
    faiss.IndexPQ,
    faiss.IndexScalarQuantizer,
    faiss.IndexLSH,
    faiss.IndexFastScan,
    faiss.IndexAdditiveQuantizer,
)
_MAX_OVERFETCH = 1024  # tombstones an unfiltered search may over-fetch past instead of using a selector
EXACT_MAX_ROWS = 2048  # a filter allowing at most max(EXACT_MAX_ROWS, EXACT_MAX_FRACTION * rows) rows ...
EXACT_MAX_FRACTION = 0.05  # ... is searched exactly over those rows, not through the index
_EXACT_CHUNK_BYTES = 32 << 20  # exact search copies the allowed vectors this many bytes at a time
_CODEBOOK_RE = re.compile(r"(?:PQ|RQ|LSQ)\d+(?:x(\d+))?")


def _faiss_reason(err: Exception) -> str:
    """The human part of a FAISS C++ exception ("Error in <signature> at file:line: <reason>")."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
    m = re.search(r" at \S+:\d+: (.*)$", text)
    return m.group(1) if m else text


def _unwrap(index: faiss.Index) -> tuple[faiss.Index, bool]:
    """(the index that does the search, whether an IndexPreTransform sits on top)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        return faiss.downcast_index(index.index), True
    return index, False


def new_index(spec: CollectionSpec) -> faiss.Index:
    """A fresh index from ``spec.index_spec``; InvalidArgument (with FAISS's reason) if it is unusable."""
    where = f"collection '{spec.name}'"
    try:
        index = faiss.index_factory(spec.dim, spec.index_spec, FAISS_METRICS[spec.metric])
    except RuntimeError as err:
        raise InvalidArgument(
            f"{where}: index_spec '{spec.index_spec}' rejected by FAISS for dim {spec.dim}: {_faiss_reason(err)}"
        ) from None
    core, _ = _unwrap(index)
    base = faiss.downcast_index(core.base_index) if isinstance(core, faiss.IndexRefine) else core
    if not isinstance(base, _SUPPORTED):
        raise InvalidArgument(
            f"{where}: index type {type(base).__name__} (from '{spec.index_spec}') is not supported: "
            "the store needs an index that accepts incremental adds and assigns its own ids "
            "(Flat, HNSW, IVF, PQ, SQ, LSH, RQ/LSQ, optionally behind a transform or refine)"
        )
    return index


def _clusters(spec: CollectionSpec, index: faiss.Index) -> int:
    """How many centroids training has to fit: IVF nlist, or 2**nbits of a PQ/RQ/LSQ codebook."""
    clusters = 1
    try:
        clusters = faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        pass
    for m in _CODEBOOK_RE.finditer(spec.index_spec):
        clusters = max(clusters, 1 << int(m.group(1) or 8))
    return clusters


def auto_train_size(spec: CollectionSpec, index: faiss.Index) -> int:
    """Live vectors to wait for before training: max(1000, 39 * clusters).

    39 points per centroid is the minimum below which FAISS's k-means warns;
    clusters is IVF nlist or 2**nbits of a PQ/RQ/LSQ codebook (256 for PQm), so
    "IVF64,Flat" trains at 2496 vectors, "IVF1024,PQ16" at 39936, "SQ8" at 1000.
    """
    return max(1000, 39 * _clusters(spec, index))


class VectorIndex:
    """The collection's FAISS index; callers hold the collection's locks (see Collection)."""

    def __init__(self, spec: CollectionSpec) -> None:
        self.spec = spec
        self.metric = FAISS_METRICS[spec.metric]
        template = new_index(spec)
        self.needs_training = not template.is_trained
        self.train_size = 0
        self._clusters = 1
        if self.needs_training:
            self._clusters = _clusters(spec, template)
            if 0 < spec.train_size < self._clusters:
                raise InvalidArgument(
                    f"collection '{spec.name}': train_size {spec.train_size} is below the "
                    f"{self._clusters} centroids '{spec.index_spec}' trains"
                )
            self.train_size = spec.train_size or auto_train_size(spec, template)
        self.trained = not self.needs_training
        self.index: faiss.Index = template if self.trained else faiss.IndexFlat(spec.dim, self.metric)
        self._empty: np.ndarray | None = None  # serialised empty trained index, the start of every rebuild
        self._params_ok = True  # False once this index type refused SearchParameters

    # --- writes (exclusive) --------------------------------------------------------------------

    def add(self, vectors: np.ndarray) -> None:
        """Append float32 [n, dim] as the next n ids."""
        if len(vectors):
            self.index.add(vectors)

    def due_for_training(self, n_live: int) -> bool:
        return not self.trained and n_live >= self.train_size

    def build(self, vectors: np.ndarray) -> tuple[faiss.Index, bool]:
        """A new index holding float32 [n, dim] as ids 0..n-1, trained first if due; (index, trained).

        Reads only; the collection swaps the result in under its exclusive lock.
        """
        trained = self.trained
        if trained:
            index = self._empty_trained(vectors)
        elif len(vectors) >= self.train_size:
            index = new_index(self.spec)
            index.train(self._training_sample(vectors))
            self._empty = faiss.serialize_index(index)
            trained = True
        else:
            index = faiss.IndexFlat(self.spec.dim, self.metric)
        if len(vectors):
            index.add(vectors)
        return index, trained

    def swap(self, index: faiss.Index, trained: bool) -> None:
        self.index, self.trained = index, trained
        self._params_ok = True

    def restore(self, index: faiss.Index | None, trained: bool, vectors: np.ndarray) -> None:
        """Load state from a snapshot; ``index`` None means a plain IndexFlat, rebuilt from ``vectors``."""
        if index is None:
            index = faiss.IndexFlat(self.spec.dim, self.metric)
            if len(vectors):
                index.add(vectors)
        if index.ntotal != len(vectors) or index.d != self.spec.dim:
            raise ValueError(
                f"snapshot index holds {index.ntotal}x{index.d}, table {len(vectors)}x{self.spec.dim}"
            )
        self.swap(index, trained)

    def _empty_trained(self, vectors: np.ndarray) -> faiss.Index:
        if not self.needs_training:
            return new_index(self.spec)
        if self._empty is None:
            try:
                clone = faiss.clone_index(self.index)
                clone.reset()
                self._empty = faiss.serialize_index(clone)
            except RuntimeError as err:
                log.info(
                    "collection '%s': cannot clone %s (%s); retraining", self.spec.name, type(self.index), err
                )
                index = new_index(self.spec)
                index.train(self._training_sample(vectors))
                self._empty = faiss.serialize_index(index)
        return faiss.deserialize_index(self._empty)

    def _training_sample(self, vectors: np.ndarray) -> np.ndarray:
        """At most max(train_size, 256 * clusters) rows, a fixed-seed sample (replay trains the same)."""
        limit = max(self.train_size, 256 * self._clusters)
        if len(vectors) <= limit:
            return vectors
        rows = np.sort(np.random.default_rng(0).choice(len(vectors), limit, replace=False))
        return vectors[rows]

    # --- search (shared) -----------------------------------------------------------------------

    def search(
        self,
        x: np.ndarray,
        k: int,
        mask: np.ndarray | None,
        vectors: np.ndarray,
        nprobe: int = 0,
        ef_search: int = 0,
        *,
        tombstones_only: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of float32 queries [q, dim] among rows where ``mask`` (bool [n_rows]) is True, or all rows.

        Returns (scores float32 [q, >= k], rows int64 [q, >= k]), best first; -1 rows
        mark missing or left-out results (callers skip them). ``k`` must not exceed the
        number of allowed rows, and every query gets k valid rows: see the module
        docstring for how (exact search over ``vectors``, float32 [n_rows, dim], for small
        allowed sets and for queries the index answered short). ``tombstones_only``:
        ``mask`` hides nothing but dead rows, so the index may be searched without a
        selector for k + n_dead and the dead rows dropped.
        """
        if mask is None:
            found = self._search_index(x, k, None, nprobe, ef_search)
            assert found is not None
            return self.fill_short(x, k, *found, None, vectors)
        n_allowed = int(np.count_nonzero(mask))
        n_dead = len(mask) - n_allowed if tombstones_only else None
        if n_dead is not None and n_dead <= self._overfetch_limit(k):
            return self._overfetch(x, k, n_dead, mask, vectors, nprobe, ef_search)
        if n_allowed <= max(EXACT_MAX_ROWS, EXACT_MAX_FRACTION * len(mask)):
            return self.exact(x, k, np.flatnonzero(mask), vectors)
        found = self._search_index(x, k, mask, nprobe, ef_search)
        if found is not None:
            return self.fill_short(x, k, *found, mask, vectors)
        # this index type takes no IDSelector
        if n_dead is not None and n_dead <= _MAX_OVERFETCH:
            return self._overfetch(x, k, n_dead, mask, vectors, nprobe, ef_search)
        return self.exact(x, k, np.flatnonzero(mask), vectors)

    def fill_short(
        self,
        x: np.ndarray,
        k: int,
        scores: np.ndarray,
        rows: np.ndarray,
        mask: np.ndarray | None,
        vectors: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Redo exactly (over the rows ``mask`` allows) every query with fewer than k valid rows (>= 0)."""
        short = np.flatnonzero(np.count_nonzero(rows >= 0, axis=1) < k)
        if not len(short):
            return scores, rows
        allowed = np.flatnonzero(mask) if mask is not None else None
        exact_scores, exact_rows = self.exact(x[short], k, allowed, vectors)
        scores, rows = np.array(scores, copy=True), np.array(rows, copy=True)
        rows[short] = -1
        scores[short, :k] = exact_scores
        rows[short, :k] = exact_rows
        return scores, rows

    def exact(
        self, x: np.ndarray, k: int, allowed: np.ndarray | None, vectors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k with the collection's metric over ``vectors[allowed]`` (all rows if None), as rows.

        The allowed rows are copied a bounded chunk at a time, so a large allowed set
        costs no more memory than ``_EXACT_CHUNK_BYTES``.
        """
        if allowed is None:
            return faiss.knn(x, vectors, k, metric=self.metric)
        chunk = max(k, _EXACT_CHUNK_BYTES // (4 * self.spec.dim))
        best = (
            np.full((len(x), k), np.inf if self.metric == faiss.METRIC_L2 else -np.inf, np.float32),
            np.full((len(x), k), -1, np.int64),
        )
        for start in range(0, len(allowed), chunk):
            part = allowed[start : start + chunk]
            scores, found = faiss.knn(x, vectors[part], k, metric=self.metric)
            rows = np.where(found >= 0, part[np.maximum(found, 0)], -1)
            if start:
                scores, rows = np.hstack([best[0], scores]), np.hstack([best[1], rows])
                key = scores if self.metric == faiss.METRIC_L2 else -scores
                order = np.argsort(key, axis=1, kind="stable")[:, :k]
                scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
            best = scores, rows
        return best

    def _overfetch(
        self,
        x: np.ndarray,
        k: int,
        n_dead: int,
        mask: np.ndarray,
        vectors: np.ndarray,
        nprobe: int,
        ef_search: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """k + n_dead from the index without a selector, dead rows dropped (``mask`` = live rows)."""
        found = self._search_index(x, min(k + n_dead, len(mask)), None, nprobe, ef_search)
        assert found is not None
        scores, rows = found
        rows = np.where((rows >= 0) & mask[np.maximum(rows, 0)], rows, -1)
        return self.fill_short(x, k, scores, rows, mask, vectors)

    def _overfetch_limit(self, k: int) -> int:
        """Most tombstones an unfiltered search over-fetches past instead of using an IDSelector.

        An exhaustive scan (Flat, SQ, PQ, ...) loses its fast batched path to a
        selector (about 3x slower for a 100k Flat), while a larger k only grows its
        result heaps; HNSW and IVF check a selector almost for free but pay for each
        extra result (larger efSearch, longer heaps), so there only up to k.
        """
        if self._params_ok and isinstance(_unwrap(self.index)[0], faiss.IndexIVF | faiss.IndexHNSW):
            return k
        return _MAX_OVERFETCH

    def _search_index(
        self, x: np.ndarray, k: int, mask: np.ndarray | None, nprobe: int, ef_search: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The index's own top-k, restricted to ``mask`` by an IDSelector; None if it takes no selector."""
        sel = bitmap = None
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        if self._params_ok and (sel is not None or nprobe or ef_search):
            params, keep = self._params(sel, nprobe, ef_search)
            try:
                return self.index.search(x, k, params=params)  # `keep` and `bitmap` stay alive until here
            except RuntimeError as err:
                self._params_ok = False
                log.warning(
                    "collection '%s': %s takes no search parameters (%s); nprobe/ef_search are ignored "
                    "and filtered searches run exact",
                    self.spec.name,
                    type(faiss.downcast_index(self.index)).__name__,
                    _faiss_reason(err),
                )
        if sel is not None:
            return None
        return self.index.search(x, k)

    def _params(
        self, sel: faiss.IDSelector | None, nprobe: int, ef_search: int
    ) -> tuple[faiss.SearchParameters, list]:
        """SearchParameters for this index type, and the objects they point to (kept alive by the caller)."""
        core, pretransform = _unwrap(self.index)
        keep: list = [sel]
        if isinstance(core, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe or core.nprobe  # the default params would mean nprobe=1
            quantizer = faiss.downcast_index(core.quantizer)
            if ef_search and isinstance(quantizer, faiss.IndexHNSW):
                qp = faiss.SearchParametersHNSW()
                qp.efSearch = ef_search
                params.quantizer_params = qp
                keep.append(qp)
        elif isinstance(core, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef_search or core.hnsw.efSearch  # the default params would mean efSearch=16
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        keep.append(params)
        if pretransform:
            outer = faiss.SearchParametersPreTransform()
            outer.index_params = params
            return outer, keep
        return params, keep

    def memory_bytes(self) -> int:
        """Rough size of the index: codes, plus graph links (HNSW) or list ids and centroids (IVF)."""
        index = self.index
        n = index.ntotal
        core, _ = _unwrap(index)
        try:
            code = index.sa_code_size()
        except RuntimeError:
            code = index.d * 4
        size = n * code
        if isinstance(core, faiss.IndexHNSW):
            size += n * (core.hnsw.nb_neighbors(0) + core.hnsw.nb_neighbors(1) // 4) * 4
        if isinstance(core, faiss.IndexIVF):
            size += n * 8 + core.nlist * core.d * 4
        return int(size)


def tune_faiss(threads: int) -> None:
    """Process-wide FAISS settings for a server that runs many searches at once.

    ``threads`` OpenMP threads per call: the store's thread pool already runs
    requests in parallel, and nested OpenMP teams oversubscribe the cores.
    Batches of 20+ queries go through BLAS (FAISS's default threshold, 128000,
    keeps a 64-query batch on the slow per-query path: FACTS.md measured 7x).
    """
    faiss.omp_set_num_threads(max(1, threads))
    faiss.cvar.distance_compute_blas_threshold = 20
