"""The store: every collection under one data directory.

Layout::

    data_dir/collections/<name>/collection.json   the spec, written once, atomically, at create
    data_dir/collections/<name>/wal.log           write-ahead log (embedserve.store.wal)
    data_dir/collections/<name>/snap-<seq>/       newest snapshot (embedserve.store.snapshot)

A collection directory appears by an atomic rename of a fully written temp
directory, and disappears by a rename to a ``.deleted-*`` name before it is
removed, so a crash never leaves half a collection that would load.

A collection that cannot load (a damaged file, a spec this version refuses)
does not stop the others: it is kept aside as a ``FailedCollection`` whose
error listing reports, every call on it answers FailedPrecondition with that
error, and ``delete`` removes it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from embedserve.errors import AlreadyExists, EmbedServeError, FailedPrecondition, NotFound, Unavailable
from embedserve.limits import DEFAULT_LIMITS, Limits
from embedserve.store.collection import Collection
from embedserve.store.fsio import fsync_dir, write_durably
from embedserve.store.gpu import GpuContext
from embedserve.store.index import VectorIndex
from embedserve.store.spec import (
    NAME_RE,
    CollectionSpec,
    check_name,
    check_spec_fields,
    spec_from_json,
    spec_to_json,
)

log = logging.getLogger("embedserve.store")

SPEC_FILE = "collection.json"
T = TypeVar("T")


@dataclass(frozen=True)
class FailedCollection:
    """A collection directory that did not load: its spec if that much was readable, and why."""

    name: str
    spec: CollectionSpec | None
    error: str


def found(name: str, collection: T | None, failed: FailedCollection | None) -> T:
    """What a registry lookup answers, for every backend: the collection, or FailedPrecondition
    with its load error, or NotFound."""
    if failed is not None:
        raise FailedPrecondition(
            f"collection '{name}' failed to load: {failed.error} (DeleteCollection removes it)"
        )
    if collection is None:
        raise NotFound(f"collection '{name}' not found")
    return collection


class Store:
    """Thread-safe registry of collections; ``open`` loads them, ``close`` flushes them.

    Any method opens the store first if ``open`` was not called.

    Locking. ``_lock`` guards the registry (``_collections``, ``_busy``, the
    open/closed flags) and is only ever held for those dict and set operations, so
    ``get`` and ``list``, which the server calls on its event loop, never wait for
    disk or for a collection. Slow work runs outside it: ``create`` and ``delete``
    reserve the name in ``_busy`` under the lock, do their disk work (and, for
    delete, wait for the collection's write in progress) without it, then update
    the registry. ``_open_lock`` serialises ``open`` and ``close``.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        use_gpu: bool = False,
        snapshot_wal_bytes: int = 64 << 20,
        snapshot_replay_s: float = 1.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._root = self.data_dir / "collections"
        self._use_gpu = use_gpu
        self._snapshot_wal_bytes = snapshot_wal_bytes
        self._snapshot_replay_s = snapshot_replay_s
        self.limits = limits
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._collections: dict[str, Collection] = {}
        self._failed: dict[str, FailedCollection] = {}
        self._busy: set[str] = set()  # names being created or deleted
        self._gpu: GpuContext | None = None
        self._opened = False
        self._closed = False

    def open(self) -> None:
        """Load every collection (snapshot + log replay); one that cannot load is kept as failed."""
        with self._open_lock:
            with self._lock:
                self._check_not_closed()
                if self._opened:
                    return
            self._root.mkdir(parents=True, exist_ok=True)
            fsync_dir(self._root.parent)
            if self._use_gpu:
                self._gpu = GpuContext.create()
            for leftover in self._root.glob(".*"):  # half-created or half-deleted collections
                shutil.rmtree(leftover, ignore_errors=True)
            loaded: dict[str, Collection] = {}
            failed: dict[str, FailedCollection] = {}
            for path in sorted(self._root.iterdir()):
                if not path.is_dir() or re.fullmatch(NAME_RE, path.name) is None:
                    log.warning("ignoring %s: not a collection directory", path)
                    continue
                spec = None
                try:
                    spec = spec_from_json((path / SPEC_FILE).read_bytes(), str(path))
                    if spec.name != path.name:
                        raise FailedPrecondition(f"{path}: collection.json names '{spec.name}'")
                    loaded[spec.name] = self._load(spec, path)
                except Exception as err:  # one damaged collection must not take the others down
                    reason = (
                        err.message if isinstance(err, EmbedServeError) else f"{type(err).__name__}: {err}"
                    )
                    failed[path.name] = FailedCollection(path.name, spec, reason[:1000])
                    log.error("collection '%s' failed to load: %s", path.name, reason)
            with self._lock:
                self._collections = loaded
                self._failed = failed
                self._opened = True
            log.info(
                "store at %s: %d collection(s)%s",
                self.data_dir,
                len(loaded),
                f", {len(failed)} failed to load" if failed else "",
            )

    def create(self, spec: CollectionSpec, backend: str = "") -> Collection:
        """Create an empty collection; ``created_at`` 0 is set to now. ``backend``: "" or "embedded"
        (this store has no other: "milvus" is FailedPrecondition)."""
        if backend == "milvus":
            raise FailedPrecondition(
                f"collection '{spec.name}': this server has no Milvus (start it with --milvus-uri)"
            )
        check_spec_fields(spec)
        VectorIndex(spec, self.limits)  # refuses an index_spec out of bounds or unbuildable, before disk
        if not spec.created_at:
            spec = dataclasses.replace(spec, created_at=time.time())
        name = spec.name
        self._ensure_open()
        with self._lock:
            self._check_not_closed()
            if name in self._collections or name in self._failed or name in self._busy:
                raise AlreadyExists(f"collection '{name}' already exists")
            self._busy.add(name)  # a concurrent create of the same name fails from here on
        try:
            final = self._root / name
            if final.exists():
                raise AlreadyExists(f"collection '{name}' already exists")
            tmp = self._root / f".creating-{name}-{uuid.uuid4().hex}"
            tmp.mkdir()
            write_durably(tmp / SPEC_FILE, spec_to_json(spec))
            os.rename(tmp, final)
            fsync_dir(self._root)
            collection = self._load(spec, final)
        except BaseException:
            with self._lock:
                self._busy.discard(name)
            raise
        with self._lock:
            self._busy.discard(name)
            closed = self._closed
            if not closed:
                self._collections[name] = collection
        if closed:  # the store was closed meanwhile: flush this one as close() did the others
            collection.close()
            self._check_not_closed()
        log.info("created collection '%s' (%s, dim %d, %s)", name, spec.index_spec, spec.dim, spec.metric)
        return collection

    def get(self, name: str) -> Collection:
        check_name(name)
        self._ensure_open()
        with self._lock:
            self._check_not_closed()
            collection = self._collections.get(name)
            failed = self._failed.get(name)
        return found(name, collection, failed)

    def failed(self) -> list[FailedCollection]:
        """Collections that did not load, sorted by name."""
        self._ensure_open()
        with self._lock:
            return [self._failed[name] for name in sorted(self._failed)]

    def maintain(self) -> None:
        """Each collection's deferred index upkeep and due snapshot (see Collection.maintain)."""
        try:
            collections = self.list()
        except Unavailable:
            return  # closed meanwhile
        for collection in collections:
            try:
                collection.maintain()
            except Exception:  # upkeep is an optimisation: log it, keep the others going
                log.exception("collection '%s': maintenance failed", collection.spec.name)

    def list(self) -> list[Collection]:
        """All collections, sorted by name."""
        self._ensure_open()
        with self._lock:
            self._check_not_closed()
            return [self._collections[name] for name in sorted(self._collections)]

    def delete(self, name: str) -> None:
        """Remove a collection durably: calls on it fail with NotFound from now on.

        The collection leaves the registry at once; closing it (which waits for a write
        in progress: a snapshot, training or rebuild may take minutes) and removing its
        directory happen outside the registry lock, with the name reserved meanwhile.
        """
        check_name(name)
        self._ensure_open()
        with self._lock:
            self._check_not_closed()
            collection = self._collections.pop(name, None)
            failed = self._failed.pop(name, None)
            if collection is None and failed is None:
                raise NotFound(f"collection '{name}' not found")
            self._busy.add(name)  # no create of this name until its directory is gone
        try:
            if collection is not None:
                collection.close(deleted=True)  # waits for a write in progress
            tomb = self._root / f".deleted-{name}-{uuid.uuid4().hex}"
            os.rename(self._root / name, tomb)  # durable from here: a crash never loads it again
            fsync_dir(self._root)
        finally:
            with self._lock:
                self._busy.discard(name)
        shutil.rmtree(tomb, ignore_errors=True)
        log.info("deleted collection '%s'", name)

    def close(self) -> None:
        """Snapshot every collection and close its files; idempotent."""
        with self._open_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                collections = list(self._collections.values())
            failed: list[BaseException] = []
            for collection in collections:
                try:
                    collection.close()
                except Exception as err:  # keep flushing the others; the log still holds this one's writes
                    log.exception("collection '%s': flush at close failed", collection.spec.name)
                    failed.append(err)
            if failed:
                raise failed[0]

    def _load(self, spec: CollectionSpec, path: Path) -> Collection:
        return Collection(
            spec,
            path,
            snapshot_wal_bytes=self._snapshot_wal_bytes,
            snapshot_replay_s=self._snapshot_replay_s,
            gpu=self._gpu,
            limits=self.limits,
        )

    def _ensure_open(self) -> None:
        with self._lock:
            self._check_not_closed()
            if self._opened:
                return
        self.open()

    def _check_not_closed(self) -> None:
        if self._closed:
            raise Unavailable("the store is closed")
