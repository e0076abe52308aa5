"""Labelling jobs over collections: the step between the store and the algorithms.

A job takes a ``LabellingView`` of the collection (its live ids, vectors and labels at that
moment; no lock is held while the job runs), maps the labels present to classes 0..C-1, runs
an algorithm of this package, and answers in ids and label names.

The k-NN graph (the costly part: seconds for 10^5 items, about a minute for 10^6) depends
only on the vectors, not on the labels, so each collection's latest graph is kept while its
``vectors_version`` stays the same: a labelling session (suggest, label, suggest ...) builds
it once. Graphs are kept up to ``cache_bytes`` in all, least recently used dropped first.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from embedserve import knn
from embedserve.errors import FailedPrecondition, InvalidArgument, quote
from embedserve.labelling.audit import audit
from embedserve.labelling.job import Job
from embedserve.labelling.neighbours import KnnGraph, knn_graph
from embedserve.labelling.propagate import (
    DEFAULT_ALPHA,
    DEFAULT_MAX_ITERATIONS,
    Propagation,
    knn_propagate,
    spread_propagate,
)
from embedserve.labelling.suggest import MIXED, resolve_strategy, suggest
from embedserve.store import Collection
from embedserve.store.collection import LabellingView

DEFAULT_GRAPH_K = 7  # neighbours per item in the graph (spreading, density); scikit-learn's too
METHODS = ("spread", "knn")


def neighbours_for(method: str, k: int) -> int:
    """The k a propagation runs with: ``k``, or by default the graph's (spread) or the vote's (knn)."""
    return k or (knn.DEFAULT_K if method == "knn" else DEFAULT_GRAPH_K)


@dataclass(frozen=True)
class Suggested:
    id: str
    score: float
    reason: str


@dataclass(frozen=True)
class Predictions:
    """One prediction per unlabelled item: ``ids`` [m], ``labels`` [m], confidence and margin
    float32 [m]; ``made_for``: the items' row serials then and the collection's vectors_version
    (``Collection.set_predictions`` writes back only what still holds)."""

    ids: list[str]
    labels: list[str]
    confidence: np.ndarray
    margin: np.ndarray
    made_for: tuple[np.ndarray, int]


@dataclass(frozen=True)
class AuditFinding:
    id: str
    label: str
    suggested_label: str
    score: float


@dataclass
class _Classes:
    """A view's labels as classes: ``row_class`` int64 [m] (-1 = unlabelled), ``names`` [C]."""

    row_class: np.ndarray
    names: list[str]

    @classmethod
    def of(cls, view: LabellingView) -> _Classes:
        codes = view.label_codes
        present = np.unique(codes[codes >= 0])
        row_class = np.full(len(codes), -1, dtype=np.int64)
        labelled = codes >= 0
        row_class[labelled] = np.searchsorted(present, codes[labelled])
        return cls(row_class, [view.label_names[c] for c in present])

    @property
    def labelled(self) -> np.ndarray:
        return np.flatnonzero(self.row_class >= 0)

    @property
    def unlabelled(self) -> np.ndarray:
        return np.flatnonzero(self.row_class < 0)


@dataclass
class _Cached:
    collection: weakref.ref
    version: int
    k: int
    graph: KnnGraph


class Labeller:
    def __init__(self, cache_bytes: int = 1 << 30) -> None:
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()  # guards _cache and _building
        self._building: dict[str, threading.Lock] = {}

    # --- jobs ----------------------------------------------------------------------------------

    def suggest(
        self, collection: Collection, count: int, strategy: str, job: Job, *, seed: int = 0, k: int = 0
    ) -> tuple[str, list[Suggested]]:
        """(the strategy that ran, up to ``count`` unlabelled items to label next, best first)."""
        view = collection.labelling_view()
        classes = _Classes.of(view)
        chosen = resolve_strategy(strategy, classes.row_class)
        needs_graph = chosen in ("uncertain", MIXED)  # typical and random need no graph
        graph = self._graph(collection, view, k or DEFAULT_GRAPH_K, job) if needs_graph else None
        picked = suggest(
            chosen,
            count,
            view.vectors,
            classes.row_class,
            classes.names,
            graph,
            collection.spec.metric,
            job,
            seed=seed,
        )
        return chosen, [Suggested(view.ids[s.row], s.score, s.reason) for s in picked]

    def propagate(
        self,
        collection: Collection,
        method: str,
        job: Job,
        *,
        k: int = 0,
        temperature: float = 0.0,
        alpha: float = 0.0,
        max_iterations: int = 0,
    ) -> Predictions:
        """A predicted label for every unlabelled item, by ``method`` "spread" or "knn"."""
        method = method or "spread"
        if method not in METHODS:
            raise InvalidArgument(f"method must be one of {', '.join(METHODS)}, not {quote(method)}")
        view = collection.labelling_view()
        classes = _Classes.of(view)
        labelled, targets = classes.labelled, classes.unlabelled
        if not len(labelled):
            raise FailedPrecondition(
                f"collection '{collection.spec.name}' has no labelled items to propagate from"
            )
        temperature = temperature or knn.DEFAULT_TEMPERATURE
        common = (view.vectors, labelled, classes.row_class[labelled], len(classes.names), targets)
        metric = collection.spec.metric
        prop: Propagation
        k = neighbours_for(method, k)
        if method == "knn":
            prop = knn_propagate(*common, k, temperature, metric, job)
        else:
            graph = self._graph(collection, view, k, job)
            prop = spread_propagate(
                graph,
                *common,
                knn.DEFAULT_K,
                temperature,
                metric,
                job,
                alpha=alpha or DEFAULT_ALPHA,
                max_iterations=max_iterations or DEFAULT_MAX_ITERATIONS,
            )
        names = classes.names
        return Predictions(
            ids=[view.ids[r] for r in prop.rows],
            labels=[names[c] for c in prop.classes],
            confidence=prop.confidence,
            margin=prop.margin,
            made_for=(view.serials[prop.rows], view.version),
        )

    def audit(
        self, collection: Collection, count: int, job: Job, *, k: int = 0, temperature: float = 0.0
    ) -> list[AuditFinding]:
        """The ``count`` labelled items their labelled neighbours agree with least, least first."""
        view = collection.labelling_view()
        classes = _Classes.of(view)
        found = audit(
            view.vectors,
            classes.row_class,
            len(classes.names),
            count,
            k or knn.DEFAULT_K,
            temperature or knn.DEFAULT_TEMPERATURE,
            collection.spec.metric,
            job,
        )
        names = classes.names
        return [
            AuditFinding(
                view.ids[f.row],
                names[classes.row_class[f.row]],
                names[f.suggested_class] if f.suggested_class >= 0 else "",
                f.score,
            )
            for f in found
        ]

    # --- the graph cache -----------------------------------------------------------------------

    def _graph(self, collection: Collection, view: LabellingView, k: int, job: Job) -> KnnGraph:
        name = collection.spec.name
        with self._lock:
            building = self._building.setdefault(name, threading.Lock())
        with building:  # one build per collection at a time; a second job waits and reuses it
            with self._lock:
                cached = self._cache.get(name)
                if (
                    cached is not None
                    and cached.collection() is collection
                    and cached.version == view.version
                    and cached.k == k
                ):
                    self._cache.move_to_end(name)
                    return cached.graph
            graph = knn_graph(view.vectors, k, collection.spec.metric, job)
            with self._lock:
                self._cache.pop(name, None)
                if graph.nbytes <= self.cache_bytes:
                    self._cache[name] = _Cached(weakref.ref(collection), view.version, k, graph)
                    while sum(c.graph.nbytes for c in self._cache.values()) > self.cache_bytes:
                        self._cache.popitem(last=False)
            return graph

    def forget(self, name: str) -> None:
        """Drop a collection's graph (it was deleted)."""
        with self._lock:
            self._cache.pop(name, None)
