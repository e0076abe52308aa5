"""The FAISS side of a collection: index choice, training, rebuilds, and the raw index call.

FAISS ids are the rows of the collection's ItemTable (0..n_rows-1, dead rows
included), so ``index.ntotal == table.n_rows`` always holds and no id map is
needed, with one exception: a plain Flat index is *table-backed*. It holds no
vectors of its own (``ntotal`` stays 0); its searches run FAISS's brute-force
k-NN (the same BLAS kernels IndexFlat.search calls, IDSelectors included)
directly over the table's rows. So a Flat collection keeps one copy of its
vectors in memory, not two, and a restart builds nothing. Deleted rows stay in the index as tombstones that searches leave out;
the collection rebuilds the index from its live rows when tombstones pile up.
This works for every index type, including those without ``remove_ids`` (HNSW).

An index type that needs training (IVF, PQ, ...) starts as an exact IndexFlat
with the same metric and is trained once ``train_size`` live vectors exist.
How searches use the index (filters, tombstones, exactly k hits) is the job of
``embedserve.store.search``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

import faiss
import numpy as np

from embedserve.errors import InvalidArgument, quote
from embedserve.limits import DEFAULT_LIMITS, Limits
from embedserve.metric import Metric
from embedserve.store.factory import check_index_spec
from embedserve.store.spec import CollectionSpec

T = TypeVar("T")
log = logging.getLogger("embedserve.store")

FAISS_METRICS = {
    Metric.COSINE: faiss.METRIC_INNER_PRODUCT,  # over L2-normalised vectors
    Metric.IP: faiss.METRIC_INNER_PRODUCT,
    Metric.L2: faiss.METRIC_L2,
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
# present at run time, missing from the type hints FAISS ships
_SearchParametersHNSW: Any = faiss.SearchParametersHNSW  # type: ignore[attr-defined]
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


# brute force: batches of at least this many queries go through BLAS (measured crossover: ~8 queries
# over 20,000 x 128, ~4 over 200,000)
BLAS_MIN_QUERIES = 6


def use_blas_for(queries: int) -> None:
    """BLAS for a batch, FAISS's SIMD scan for a few queries, in every exact distance computation of
    the search about to run (brute force, an IVF's coarse quantizer). On this FAISS (1.15) a 1-query
    search over 20,000 x 128 cost 4.4 ms of CPU through BLAS and 1.0 ms scanning (200,000 rows: 41
    against 11 ms); a 64-query batch is 4x faster through BLAS. The threshold is one global, so a
    concurrent search of the other kind may see this call's value: it then takes the slower path,
    with the same results."""
    faiss.cvar.distance_compute_blas_threshold = BLAS_MIN_QUERIES if queries >= BLAS_MIN_QUERIES else 1 << 30


def is_plain_flat(index: faiss.Index) -> bool:
    """An IndexFlat with no transform or refine around it: the table-backed kind."""
    return type(faiss.downcast_index(index)) in (faiss.IndexFlat, faiss.IndexFlatIP, faiss.IndexFlatL2)


def brute_force(
    x: np.ndarray, vectors: np.ndarray, k: int, metric: int, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's exact k-NN of queries x [q, d] over ``vectors`` [n, d] (rows ``mask`` allows, bool [n]):
    (scores float32 [q, k], rows int64 [q, k]), best first, -1 padded."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    (q, d), n = x.shape, len(vectors)
    scores = np.empty((q, k), dtype=np.float32)
    rows = np.empty((q, k), dtype=np.int64)
    bitmap = np.packbits(mask, bitorder="little") if mask is not None else None
    sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap)) if bitmap is not None else None
    args = (
        faiss.swig_ptr(x),
        faiss.swig_ptr(vectors),
        d,
        q,
        n,
        k,
        faiss.swig_ptr(scores),
        faiss.swig_ptr(rows),
    )
    if metric == faiss.METRIC_L2:
        faiss.knn_L2sqr(*args, None, sel)  # `bitmap` and `sel` stay alive until here
    else:
        faiss.knn_inner_product(*args, sel)
    return scores, rows


def new_index(spec: CollectionSpec, limits: Limits = DEFAULT_LIMITS) -> faiss.Index:
    """A fresh index from ``spec.index_spec``; InvalidArgument naming the part (or with FAISS's reason)
    if it is unusable. The spec is parsed and bounded first (embedserve.store.factory)."""
    where = f"collection '{spec.name}'"
    check_index_spec(spec.index_spec, spec.dim, limits)
    try:
        index = faiss.index_factory(spec.dim, spec.index_spec, FAISS_METRICS[spec.metric])
    except RuntimeError as err:
        raise InvalidArgument(
            f"{where}: index_spec {quote(spec.index_spec)} rejected by FAISS for dim {spec.dim}: "
            f"{_faiss_reason(err)[:200]}"
        ) from None
    core, _ = _unwrap(index)
    base = faiss.downcast_index(core.base_index) if isinstance(core, faiss.IndexRefine) else core
    if not isinstance(base, _SUPPORTED):
        raise InvalidArgument(
            f"{where}: index type {type(base).__name__} (from {quote(spec.index_spec)}) is not supported: "
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

    def __init__(self, spec: CollectionSpec, limits: Limits = DEFAULT_LIMITS) -> None:
        self.spec = spec
        self._limits = limits
        self.metric = FAISS_METRICS[spec.metric]
        template = new_index(spec, limits)
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
        # a plain Flat index: searches run over the table's rows, the index holds none (set with
        # every index, not looked up per search: FAISS's downcast is a SWIG call)
        self.table_backed = is_plain_flat(self.index)
        self._empty: np.ndarray | None = None  # serialised empty trained index, the start of every rebuild
        self._params_ok = True  # False once this index type refused SearchParameters

    # --- writes (exclusive) --------------------------------------------------------------------

    def add(self, vectors: np.ndarray) -> None:
        """Append float32 [n, dim] as the next n ids (a table-backed index has them already)."""
        if len(vectors) and not self.table_backed:
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
            index = new_index(self.spec, self._limits)
            index.train(self._training_sample(vectors))
            self._empty = faiss.serialize_index(index)
            trained = True
        else:
            index = faiss.IndexFlat(self.spec.dim, self.metric)
        if len(vectors) and not is_plain_flat(index):
            index.add(vectors)
        return index, trained

    def swap(self, index: faiss.Index, trained: bool) -> None:
        self.index, self.trained = index, trained
        self.table_backed = is_plain_flat(index)
        self._params_ok = True

    def restore(self, index: faiss.Index | None, trained: bool, vectors: np.ndarray) -> None:
        """Load state from a snapshot and a replayed log: ``vectors`` float32 [rows, dim] are every
        row of the table; ``index`` holds the first of them (None: a plain IndexFlat holding none),
        and the rest are added to it in one call."""
        if index is None:
            index = faiss.IndexFlat(self.spec.dim, self.metric)
        if is_plain_flat(index):  # table-backed: nothing to build
            index.reset()
            self.swap(index, trained)
            return
        if index.ntotal < len(vectors) and index.d == self.spec.dim:
            index.add(np.ascontiguousarray(vectors[index.ntotal :]))
        if index.ntotal != len(vectors) or index.d != self.spec.dim:
            raise ValueError(
                f"snapshot index holds {index.ntotal}x{index.d}, table {len(vectors)}x{self.spec.dim}"
            )
        self.swap(index, trained)

    def _empty_trained(self, vectors: np.ndarray) -> faiss.Index:
        if not self.needs_training:
            return new_index(self.spec, self._limits)
        if self._empty is None:
            try:
                clone = faiss.clone_index(self.index)
                clone.reset()
                self._empty = faiss.serialize_index(clone)
            except RuntimeError as err:
                log.info(
                    "collection '%s': cannot clone %s (%s); retraining", self.spec.name, type(self.index), err
                )
                index = new_index(self.spec, self._limits)
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

    @property
    def graph_or_lists(self) -> bool:
        """True for HNSW and IVF indexes (searched by walking a graph or probing lists), which check an
        IDSelector almost for free but pay for every extra result; False for exhaustive scans."""
        return self._params_ok and isinstance(_unwrap(self.index)[0], faiss.IndexIVF | faiss.IndexHNSW)

    def search_index(
        self,
        x: np.ndarray,
        k: int,
        mask: np.ndarray | None,
        nprobe: int = 0,
        ef_search: int = 0,
        *,
        vectors: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The index's own top-k (scores float32 [q, k], rows int64 [q, k], -1 padded), restricted to
        ``mask`` (bool [n_rows]) by an IDSelector; None if this index type takes no selector.
        ``vectors``: the table's rows (float32 [n_rows, dim]), which a table-backed index searches."""
        use_blas_for(len(x))
        if self.table_backed:
            return brute_force(x, vectors, k, self.metric, mask)
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
        params: Any  # FAISS's bundled type hints lack SearchParametersHNSW
        if isinstance(core, faiss.IndexIVF):
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe or core.nprobe  # the default params would mean nprobe=1
            quantizer = faiss.downcast_index(core.quantizer)
            if ef_search and isinstance(quantizer, faiss.IndexHNSW):
                qp = _SearchParametersHNSW()
                qp.efSearch = ef_search
                params.quantizer_params = qp
                keep.append(qp)
        elif isinstance(core, faiss.IndexHNSW):
            params = _SearchParametersHNSW()
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

    def for_gpu(self, vectors: np.ndarray) -> faiss.Index:
        """The CPU index a GPU mirror copies: this one, or for a table-backed index a Flat of ``vectors``."""
        if not self.table_backed:
            return self.index
        index = faiss.IndexFlat(self.spec.dim, self.metric)
        index.add(vectors)
        return index

    def memory_bytes(self) -> int:
        """Rough size of the index: codes, plus graph links (HNSW) or list ids and centroids (IVF);
        0 for a table-backed index (the table holds the vectors)."""
        if self.table_backed:
            return 0
        index = self.index
        n = index.ntotal
        core, _ = _unwrap(index)
        try:
            code = index.sa_code_size()
        except RuntimeError:
            code = index.d * 4
        size = n * code
        if isinstance(core, faiss.IndexHNSW):
            hnsw: Any = core.hnsw  # nb_neighbors is missing from FAISS's type hints
            size += n * (hnsw.nb_neighbors(0) + hnsw.nb_neighbors(1) // 4) * 4
        if isinstance(core, faiss.IndexIVF):
            size += n * 8 + core.nlist * core.d * 4
        return int(size)


def tune_faiss(threads: int) -> None:
    """FAISS settings for a server that runs many searches at once, for the calling thread.

    ``threads`` OpenMP threads per call: the store's thread pool already runs
    requests in parallel, and nested OpenMP teams oversubscribe the cores. The
    OpenMP thread count belongs to the thread that sets it, so every pool thread
    that calls FAISS runs this when it starts (``embedserve.server.pools``).
    Whether a search goes through BLAS is decided per search (``use_blas_for``).
    """
    faiss.omp_set_num_threads(max(1, threads))


def with_faiss_threads(threads: int, restore: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` with ``threads`` OpenMP threads for this thread's FAISS calls, then ``restore``."""
    faiss.omp_set_num_threads(max(1, threads))
    try:
        return fn(*args)
    finally:
        faiss.omp_set_num_threads(max(1, restore))
