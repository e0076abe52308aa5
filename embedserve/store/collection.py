"""A collection: items, their FAISS index, and the log and snapshots that make writes durable.

Locking. ``_write_mutex`` serialises every mutation (upsert, delete, index
maintenance, snapshot, close). The readers-writer lock ``_rw`` is taken
exclusively only while in-memory state changes (rows appended, tombstones set,
a rebuilt index swapped in), so searches keep running during validation, log
writes, fsyncs, index training/rebuilds and snapshot writes.

A write: validate (no lock) -> under the writer mutex: append the log record,
apply it in memory, maintain the index -> outside the mutex: fsync the log with
group commit -> snapshot if due -> return. A batch that fails validation writes nothing; one whose
in-memory apply fails is cut back out of the log (see ``_failing_apply``). A write is
visible to concurrent searches a moment before its fsync completes, but it is
only acknowledged to its caller after.

Restart cost. Opening a collection loads its newest snapshot and replays the
log after it, applying records only: index maintenance (training, rebuilding
away tombstones) is an optimisation that searches do not need, so it waits for
``maintain`` (the server runs it in the background once it serves) or the next
write. A snapshot is due when the log has grown past its byte limit or when
replaying it would take ``snapshot_replay_s`` (the time the writes since the
last snapshot spent applying in memory, index rebuilds and training included,
and the encoding and logging of those writes is the estimate), so a restart never
repeats work a snapshot could have saved.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

import numpy as np

from embedserve.errors import EmbedServeError, NotFound, Unavailable
from embedserve.limits import DEFAULT_LIMITS, MAX_ID_BYTES, Limits
from embedserve.store import search as search_rules
from embedserve.store.gpu import GpuContext, GpuMirror
from embedserve.store.index import VectorIndex
from embedserve.store.rwlock import RWLock
from embedserve.store.snapshot import load_latest, remove_trash, write_snapshot
from embedserve.store.spec import (
    CollectionSpec,
    CollectionStats,
    Hit,
    LabelResult,
    PackedHits,
    SearchOptions,
    StoredItem,
    UpsertResult,
    label_changes,
)
from embedserve.store.table import ItemTable
from embedserve.store.validate import (
    check_id_list,
    check_label_assignments,
    check_predictions,
    check_search,
    check_upsert,
)
from embedserve.store.wal import (
    OP_DELETE,
    OP_LABEL,
    OP_PREDICT,
    OP_UPSERT,
    WalRecord,
    WriteAheadLog,
    encode_delete,
    encode_labels,
    encode_predictions,
    encode_upsert,
    read_log,
)

log = logging.getLogger("embedserve.store")

WAL_NAME = "wal.log"
# search_now's bound on a search run on the caller's thread: queries x rows x dim multiply-adds,
# about 1 ms of FAISS's scan on one core of the bench machine (20,000 x 128 is 2.6M)
INLINE_SEARCH_FLOPS = 4 << 20
REBUILD_DEAD_FRACTION = 0.2  # rebuild the index from live rows once this share of its rows are tombstones


@dataclass(frozen=True)
class LabellingView:
    """A collection's live items at one moment, for a labelling job (``embedserve.labelling``):
    ``ids`` [m], ``vectors`` float32 [m, dim] (as stored: L2-normalised for cosine), ``label_codes``
    int32 [m] into ``label_names`` (-1 = no label), their row ``serials`` int64 [m] (which
    content each id had), and the collection's ``vectors_version`` then. The arrays are the job's own or views of rows no write changes, so the job runs
    without the collection's locks and never holds up its searches or writes."""

    ids: list[str]
    vectors: np.ndarray
    label_codes: np.ndarray
    label_names: list[str]
    serials: np.ndarray
    version: int


class Collection:
    """Built by Store (``create``/``open``); see the module docstring for the locking rules."""

    backend = "embedded"

    def __init__(
        self,
        spec: CollectionSpec,
        directory: Path,
        *,
        snapshot_wal_bytes: int,
        gpu: GpuContext | None,
        snapshot_replay_s: float = 1.0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        """Load the newest snapshot in ``directory`` and replay the log records after it."""
        self.spec = spec
        self.directory = directory
        self.limits = limits
        self._snapshot_wal_bytes = snapshot_wal_bytes
        self._snapshot_replay_s = snapshot_replay_s
        self._gpu_context = gpu
        self._gpu: GpuMirror | None = None
        self._write_mutex = threading.Lock()
        self._rw = RWLock()
        self._closed: tuple[type[EmbedServeError], str] | None = None
        self._broken: str | None = None
        self._loading = True
        # counts writes that change which vectors are live (upserts, deletes): a labelling job's
        # k-NN graph stays valid while this does not move (labels do not change it)
        self.vectors_version = 0

        self._index = VectorIndex(spec, limits)
        wal_path = directory / WAL_NAME
        # the log holds at most this many vectors: room for them after the snapshot's, so replay
        # appends without copying the table
        spare = (wal_path.stat().st_size if wal_path.exists() else 0) // (4 * spec.dim) + 1
        snap = load_latest(directory, spec.dim, spare_rows=spare)
        if snap:
            self._table, index, trained = snap.table, snap.index, snap.trained
        else:
            self._table, index, trained = ItemTable(spec.dim), self._index.index, self._index.trained
            self._table.reserve(spare)
        self._seq = self._snap_seq = snap.seq if snap else 0
        self._snapshot_bytes = snap.nbytes if snap else 0
        started = time.perf_counter()
        # records already in the snapshot (a crash came between snapshot and log truncation) are skipped
        records = [r for r in read_log(wal_path) if r.seq > self._seq]
        for record in records:
            self._replay(record)
            self._seq = record.seq
        replayed = len(records)
        del records
        # the replayed rows reach the index in one add (one allocation, and parallel where FAISS is)
        self._index.restore(index, trained, self._table.vectors)
        # what replaying the log costs: the estimate that the writes to come add to
        self._replay_s = time.perf_counter() - started
        self._wal = WriteAheadLog(directory / WAL_NAME)
        self._loading = False
        self._mirror_gpu()
        log.info(
            "collection '%s': %d items (snapshot at record %d, %d log records replayed in %.2f s)",
            spec.name,
            self._table.n_live,
            self._snap_seq,
            replayed,
            self._replay_s,
        )

    # --- writes ------------------------------------------------------------------------------

    def upsert(
        self,
        ids: list[str],
        vectors: np.ndarray,
        labels: list[str | None],
        metadata: list[dict[str, str]] | list[dict[str, str] | None],
    ) -> UpsertResult:
        """Insert or replace items; ``vectors`` float32-convertible [N, dim]. All or nothing; durable on return."""
        ids, x, labels, clean_meta, meta_bytes = check_upsert(
            self.spec, ids, vectors, labels, metadata, self.limits
        )
        with self._write_mutex:
            self._check_writable()
            if not ids:
                return UpsertResult(0, 0)
            with self._replay_cost():  # encoding, logging and applying: about what replaying it costs
                ticket = self._wal.append(encode_upsert(self._seq + 1, ids, x, labels, clean_meta))
                self._seq += 1
                with self._failing_apply():
                    result = self._apply_upsert(ids, x, labels, clean_meta, meta_bytes)
                    self._maintain()
        self._commit(ticket)
        return result

    def delete(self, ids: list[str], allow_missing: bool = False) -> int:
        """Delete items; NotFound for an unknown id unless ``allow_missing``. Returns how many were deleted."""
        ids = check_id_list(ids)
        with self._write_mutex:
            self._check_writable()
            rows = list(dict.fromkeys(self._table.rows(ids, self.spec.name, allow_missing=allow_missing)))
            if not rows:
                return 0
            gone = self._table.ids_of(rows)
            with self._replay_cost():
                ticket = self._wal.append(encode_delete(self._seq + 1, gone))
                self._seq += 1
                with self._failing_apply():
                    with self._rw.write():
                        self._table.remove(rows)
                        self.vectors_version += 1
                    self._maintain()
        self._commit(ticket)
        return len(rows)

    def set_labels(self, ids: list[str], labels: list[str | None]) -> LabelResult:
        """Set (or, with None or "", clear) a person's label of stored items, without their content.
        All or nothing: NotFound names the first unknown id; durable on return."""
        ids, labels = check_label_assignments(ids, labels, self.limits)
        with self._write_mutex:
            self._check_writable()
            table = self._table
            rows = table.rows(ids, self.spec.name, noun="assignment")
            changed, result = label_changes([table.label(r) for r in rows], labels)
            if not changed:
                return result
            ids, labels, rows = (
                [ids[i] for i in changed],
                [labels[i] for i in changed],
                [rows[i] for i in changed],
            )
            with self._replay_cost():
                ticket = self._wal.append(encode_labels(self._seq + 1, ids, labels))
                self._seq += 1
                with self._failing_apply():
                    with self._rw.write():
                        table.set_labels(rows, labels)
        self._commit(ticket)
        return result

    def set_predictions(
        self,
        ids: list[str],
        labels: list[str],
        confidence: np.ndarray,
        *,
        replace: bool = True,
        made_for: tuple[np.ndarray, int] | None = None,
    ) -> int:
        """Write predicted labels and their confidences (float32 [len(ids)]) back, beside the items'
        own labels, which they never change; ``replace``: clear every other item's prediction.
        ``made_for``: (the row serials of the items the predictions were made for, int64
        [len(ids)], and the ``vectors_version`` then), from a LabellingView: if writes came
        since, a prediction is kept only for an item whose content is the same (not deleted,
        not replaced by an upsert).
        Without it, ids no longer stored are skipped. Durable on return; returns how many items
        got a prediction."""
        ids, confidence = check_predictions(ids, labels, confidence)
        with self._write_mutex:
            self._check_writable()
            rows = self._table.find(ids)
            if made_for is not None and made_for[1] == self.vectors_version:
                keep = list(range(len(ids)))  # nothing changed since: every row is as it was
            elif made_for is not None:
                then, serials = made_for[0], self._table.serials
                keep = [i for i, r in enumerate(rows) if r >= 0 and serials[r] == then[i]]
            else:
                keep = [i for i, r in enumerate(rows) if r >= 0]
            if len(keep) < len(ids):
                ids, labels = [ids[i] for i in keep], [labels[i] for i in keep]
                confidence = confidence[keep]
                rows = [rows[i] for i in keep]
            with self._replay_cost():
                ticket = self._wal.append(encode_predictions(self._seq + 1, ids, labels, confidence, replace))
                self._seq += 1
                with self._failing_apply():
                    with self._rw.write():
                        self._table.set_predictions(rows, labels, confidence, replace=replace)
        self._commit(ticket)
        return len(ids)

    def labelling_view(self) -> LabellingView:
        """The live items' ids, vectors and labels at this moment, for a labelling job that runs
        without the collection's locks (see LabellingView)."""
        with self._rw.read():
            self._check_open()
            table = self._table
            live = np.flatnonzero(table.live)
            # rows are only ever appended, never changed in place, so a view of the rows so far
            # stays as it is whatever writes come next; only dead rows force a copy
            vectors = table.vectors if len(live) == table.n_rows else table.vectors[live]
            return LabellingView(
                ids=table.ids_of(live.tolist()),
                vectors=vectors,
                label_codes=table.label_codes[live],
                label_names=list(table.label_names),
                serials=table.serials[live],
                version=self.vectors_version,
            )

    def snapshot(self) -> None:
        """Write a snapshot of everything so far and empty the log."""
        with self._write_mutex:
            self._check_writable()
            self._snapshot_locked()

    def maintain(self) -> None:
        """Index upkeep that opening left for later (training, rebuilding away tombstones), and a
        snapshot if one is due; the server runs this in the background once it serves."""
        with self._write_mutex:
            if self._closed is not None or self._broken is not None:
                return
            with self._replay_cost():
                self._maintain()
            if self._snapshot_due():
                self._snapshot_locked()
            else:
                remove_trash(self.directory)

    def close(self, *, deleted: bool = False) -> None:
        """Flush (snapshot, unless the collection is being deleted or is broken) and close; idempotent."""
        with self._write_mutex:
            if self._closed is not None:
                return
            try:
                if not deleted and self._broken is None:
                    self._snapshot_locked()
            finally:
                self._wal.close()
                self._gpu = None
                self._closed = (
                    (NotFound, f"collection '{self.spec.name}' not found")
                    if deleted
                    else (Unavailable, f"collection '{self.spec.name}' is closed")
                )

    # --- reads -------------------------------------------------------------------------------

    def get(
        self, ids: list[str], include_vector: bool = False, allow_missing: bool = False
    ) -> list[StoredItem]:
        """The items in the order asked; NotFound names the first unknown id, unless ``allow_missing``:
        then unknown ids are left out."""
        ids = check_id_list(ids)
        with self._rw.read():
            self._check_open()
            table = self._table
            if allow_missing:
                found = table.find(ids)
                ids = [x for x, r in zip(ids, found, strict=True) if r >= 0]
                rows = [r for r in found if r >= 0]
            else:
                rows = table.rows(ids, self.spec.name)
            vectors = table.vectors[rows] if include_vector else None
            return [
                StoredItem(
                    item_id,
                    table.label(row),
                    dict(table.metadata[row] or {}),
                    vectors[i] if vectors is not None else None,
                    *table.predicted(row),
                )
                for i, (item_id, row) in enumerate(zip(ids, rows, strict=True))
            ]

    def vectors_of(self, ids: list[str]) -> np.ndarray:
        """float32 [len(ids), dim], as stored; NotFound names the item index of the first unknown id."""
        ids = check_id_list(ids)
        with self._rw.read():
            self._check_open()
            return self._table.vectors[self._table.rows(ids, self.spec.name)]

    def search(self, queries: np.ndarray, k: int, **options: Unpack[SearchOptions]) -> list[list[Hit]]:
        """Top-k hits per query (float32 [Q, dim]), best first; fewer than k only if fewer items qualify.

        ``options`` (``SearchOptions``): ``labels``: only items with one of these labels;
        ``labelled_only``: only items with a label; ``predicted``: only items whose predicted
        label is one of these (with at least ``min_confidence``); ``exclude[i]``: an id to leave
        out of query i's hits; ``nprobe`` / ``ef_search``: the index's search effort. How the
        filters run and why exactly k come back: embedserve.store.search.
        """
        found = self._search(True, False, queries, k, **options)
        assert isinstance(found, list)
        return found

    def search_packed(self, queries: np.ndarray, k: int, **options: Unpack[SearchOptions]) -> PackedHits:
        """``search``'s hits as PackedHits: ids and scores, without an object per hit."""
        found = self._search(True, True, queries, k, **options)
        assert isinstance(found, PackedHits)
        return found

    def search_now(
        self, queries: np.ndarray, k: int, packed: bool = False, **options: Unpack[SearchOptions]
    ) -> list[list[Hit]] | PackedHits | None:
        """``search`` (or ``search_packed``), if it is cheap and can start at once: on the caller's
        thread, when its work is bounded by about ``INLINE_SEARCH_FLOPS`` (queries x rows x dim:
        no index type visits more than every row, filtered or not) and no writer holds or waits
        for the collection. None, having done nothing, otherwise. Invalid arguments raise as
        from ``search``.

        The server calls it on its event loop for a request that is alone there: a hand-off
        to the search pool and back costs more CPU than such a search (see
        embedserve.server.search)."""
        if self._gpu is not None or len(queries) * self._table.n_rows * self.spec.dim > INLINE_SEARCH_FLOPS:
            return None
        return self._search(False, packed, queries, k, **options)

    def _search(
        self,
        wait: bool,
        packed: bool,
        queries: np.ndarray,
        k: int,
        *,
        labels: set[str] | None = None,
        labelled_only: bool = False,
        predicted: set[str] | None = None,
        min_confidence: float = 0.0,
        exclude: list[str | None] | None = None,
        nprobe: int = 0,
        ef_search: int = 0,
    ) -> list[list[Hit]] | PackedHits | None:
        x, label_set, exclude = check_search(
            self.spec, queries, k, labels, exclude, nprobe, ef_search, self.limits
        )
        if not len(x):
            return PackedHits([], [], np.empty(0, np.float32)) if packed else []
        if wait:
            self._rw.acquire_read()
        elif not self._rw.try_read():
            return None
        try:
            self._check_open()
            table = self._table
            mask, filtered = table.filter_mask(
                label_set, labelled_only, set(predicted) if predicted is not None else None, min_confidence
            )
            return search_rules.search(
                self._index,
                self._gpu,
                table,
                x,
                k,
                mask,
                filtered=filtered,
                exclude=exclude,
                nprobe=nprobe,
                ef_search=ef_search,
                packed=packed,
            )
        finally:
            self._rw.release_read()

    @property
    def size(self) -> int:
        """Live items now (no lock: an int read, as fresh as a search would see)."""
        return self._table.n_live

    @property
    def label_names_count(self) -> int:
        """Distinct labels ever stored (an upper bound on the classes a labelling job sees)."""
        return len(self._table.label_names)

    def max_item_bytes(self, *, metadata: bool) -> int:
        """An upper bound on the UTF-8 bytes of one stored item's id and label (and metadata): what a
        reply may carry per hit, known before a search runs."""
        table = self._table
        size = MAX_ID_BYTES + 2 * table.max_label_bytes + 8  # its label, predicted label, confidence
        if metadata:
            size += table.max_metadata_bytes + 4 * self.limits.max_metadata_entries  # + map framing
        return size

    def stats(self) -> CollectionStats:
        with self._rw.read():
            table, index = self._table, self._index
            return CollectionStats(
                count=table.n_live,
                labelled_count=table.labelled_count(),
                predicted_count=table.predicted_count(),
                trained=index.trained,
                train_size=index.train_size,
                memory_bytes=table.nbytes + index.memory_bytes(),
                gpu=self._gpu is not None and not self._gpu.failed,
            )

    # --- internals ---------------------------------------------------------------------------

    def _apply_upsert(
        self,
        ids: list[str],
        x: np.ndarray,
        labels: list[str | None],
        metadata: list[dict[str, str] | None],
        metadata_bytes: int | None = None,
    ) -> UpsertResult:
        with self._rw.write():
            inserted, replaced = self._table.append(ids, x, labels, metadata, metadata_bytes)
            self.vectors_version += 1
            self._index.add(x)
            if self._gpu is not None:
                self._gpu.add(x)
        return UpsertResult(inserted, replaced)

    def _replay(self, record: WalRecord) -> None:
        """Apply one logged write to the table (the index takes the new rows once replay ends); no
        index maintenance (see "Restart cost" above)."""
        table = self._table
        if record.op == OP_UPSERT:
            table.append(record.ids, record.vectors, record.labels, record.metadata)  # type: ignore[arg-type]
        elif record.op == OP_DELETE:
            table.remove(list(dict.fromkeys(table.rows(record.ids, self.spec.name, allow_missing=True))))
        elif record.op == OP_LABEL:
            table.set_labels(table.rows(record.ids, self.spec.name), record.labels)  # type: ignore[arg-type]
        elif record.op == OP_PREDICT:
            rows = table.rows(record.ids, self.spec.name)
            table.set_predictions(rows, record.labels, record.vectors[:, 0], replace=record.replace)  # type: ignore[arg-type,index]

    def _maintain(self) -> None:
        """Train the index once due, or rebuild it from live rows once tombstones pass the threshold.

        The new index is built while searches continue on the old one, then swapped in.
        Replay leaves this to ``maintain``: the items are the same either way, only the index's
        internal row numbers and training sample may differ.
        """
        table, index = self._table, self._index
        train = index.due_for_training(table.n_live)
        rebuild = table.n_dead > REBUILD_DEAD_FRACTION * table.n_rows
        if not (train or rebuild):
            if table.id_column.fold_due():
                self._fold_ids()
            return
        new_table = table.compacted() if table.n_dead else table
        try:
            new_index, trained = index.build(new_table.vectors)
        except RuntimeError as err:
            if not train:
                raise
            # training is an optimisation: stay exact and try again once the collection has doubled
            index.train_size = max(2 * index.train_size, 2 * table.n_live)
            log.error("collection '%s': training failed (%s); searching exactly for now", self.spec.name, err)
            return
        with self._rw.write():
            self._table = new_table
            index.swap(new_index, trained)
            self._gpu = None
        if train and trained:
            log.info(
                "collection '%s': trained '%s' on %d vectors",
                self.spec.name,
                self.spec.index_spec,
                table.n_live,
            )
        self._mirror_gpu()

    def _mirror_gpu(self) -> None:
        if self._gpu_context is None or self._loading:
            return
        mirror = self._gpu_context.mirror(self.spec.name, self._index.for_gpu(self._table.vectors))
        with self._rw.write():
            self._gpu = mirror

    def _commit(self, ticket: int) -> None:
        """Wait for the fsync covering ``ticket``; then snapshot if the log has grown past its limit."""
        self._wal.sync(ticket)
        if not self._snapshot_due():
            return
        try:
            with self._write_mutex:
                if self._closed is None and self._broken is None and self._snapshot_due():
                    self._snapshot_locked()
        except Exception:  # the write itself is durable; a failed snapshot is retried on the next write
            log.exception("collection '%s': automatic snapshot failed", self.spec.name)

    def _snapshot_due(self) -> bool:
        """The log is over its byte limit, or replaying it would take snapshot_replay_s or more."""
        return self._wal.size > self._wal_limit() or (
            self._seq != self._snap_seq and self._replay_s >= self._snapshot_replay_s
        )

    @contextmanager
    def _replay_cost(self) -> Iterator[None]:
        """Adds the time of the enclosed in-memory apply (and maintenance) to the replay estimate."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self._replay_s += time.perf_counter() - started

    def _wal_limit(self) -> int:
        """Log size that triggers a snapshot: ``snapshot_wal_bytes``, or half the last snapshot if larger.

        A snapshot rewrites the whole collection, so a fixed limit would make bulk
        loading quadratic; letting the log grow with the snapshot keeps the bytes
        written per byte logged bounded (about 3x) and start-up replay below half
        the collection's size.
        """
        return max(self._snapshot_wal_bytes, self._snapshot_bytes // 2)

    def _fold_ids(self) -> None:
        """Pack the ids of the rows appended since the last fold (embedserve.store.ids): built
        while searches go on, swapped in under the write lock."""
        table = self._table
        packed = table.id_column.folded(table.live)
        with self._rw.write():
            table.id_column.adopt(packed)

    def _snapshot_locked(self) -> None:
        if self._seq != self._snap_seq:
            if self._table.id_column.n_recent:
                self._fold_ids()  # a snapshot stores the ids packed
            self._snapshot_bytes = write_snapshot(
                self.directory, self._seq, self._table, self._index.index, self._index.trained
            )
            self._snap_seq = self._seq
        if self._wal.size:
            self._wal.reset()
        self._replay_s = 0.0

    @contextmanager
    def _failing_apply(self) -> Iterator[None]:
        """Wraps applying a write whose log record was just appended.

        A failure leaves memory possibly half-changed: refuse further writes until a
        restart rebuilds memory from snapshot and log. The record is cut back out of
        the log first (the write was not acknowledged), so the restart does not replay
        a write that may fail again every time; if that cut fails, the log refuses
        writes too and the record stays for the restart to try.
        """
        try:
            yield
        except BaseException as exc:
            try:
                self._wal.drop_last()
            except Exception:
                log.exception("collection '%s': could not drop the unapplied log record", self.spec.name)
            self._broken = (
                f"collection '{self.spec.name}' refuses writes after an internal error ({exc!r}); "
                "restart to recover from its log"
            )
            log.error("%s", self._broken)
            raise

    def _check_open(self) -> None:
        if self._closed is not None:
            cls, message = self._closed
            raise cls(message)

    def _check_writable(self) -> None:
        self._check_open()
        if self._broken is not None:
            raise Unavailable(self._broken)
