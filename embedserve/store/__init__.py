"""Durable FAISS-backed collections: write-ahead log, snapshots, filtered search.

Modules: ``spec`` (values), ``validate`` (batch checks), ``table`` (rows in numpy),
``index`` (FAISS: index types, training, rebuilds), ``search`` (how a search gets
exactly k hits: filters, tombstones, exact fallbacks), ``gpu`` (optional GPU copies),
``wal`` (log format, group commit), ``snapshot`` (atomic snapshots),
``collection`` (one collection, locking), ``store`` (the directory of collections).
"""

from embedserve.store.collection import Collection
from embedserve.store.gpu import gpu_available
from embedserve.store.index import tune_faiss, with_faiss_threads
from embedserve.store.spec import (
    NAME_RE,
    CollectionSpec,
    CollectionStats,
    Hit,
    PackedHits,
    StoredItem,
    UpsertResult,
)
from embedserve.store.store import FailedCollection, Store

__all__ = [
    "NAME_RE",
    "Collection",
    "CollectionSpec",
    "FailedCollection",
    "CollectionStats",
    "Hit",
    "PackedHits",
    "Store",
    "StoredItem",
    "UpsertResult",
    "gpu_available",
    "tune_faiss",
    "with_faiss_threads",
]
