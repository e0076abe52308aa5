"""The rows of a collection: ids, vectors, labels and metadata, kept in numpy/Python columns.

Row r of the table is FAISS id r of the collection's index. Rows are only
appended; a delete or a replace marks the old row dead (a tombstone) and
searches leave dead rows out with an IDSelector. ``compacted`` drops dead rows
when the index is rebuilt.

Each row has two label columns: ``label`` (a person's, set by upsert or SetLabels) and
``predicted`` with its ``confidence`` (written back by label propagation; it never touches
``label``). Both hold codes into one list of label names.

The id -> row map of a table loaded from a snapshot is built on first use (a
million ids take most of a second to hash into a dict, and searches never need
it). Replaying a log needs the rows of the ids it touches only: ``replaying``
maps just those, and ``row_of`` builds the whole map when anything else asks. A snapshot
carries an id hash index (``id_hash_index``: the CRC-32 of every row's id, sorted, with the
rows in that order) so that ``replaying`` finds those rows by binary search instead of a scan
of every id (a tenth of the time for a log that touches 10 % of a million ids).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable

import numpy as np

from embedserve.errors import NotFound, item_error, quote

_GROWTH = 1.5
_MIN_CAPACITY = 64


class ItemTable:
    """Columns over rows 0..n_rows-1 (capacity grows geometrically, so appends are amortised O(batch))."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n_rows = 0
        self.n_live = 0
        self._vectors = np.empty((0, dim), dtype=np.float32)
        self._live = np.empty(0, dtype=bool)
        self._codes = np.empty(0, dtype=np.int32)  # label code per row, -1 = no label
        self._predicted = np.empty(0, dtype=np.int32)  # predicted label code per row, -1 = none
        self._confidence = np.empty(0, dtype=np.float32)  # of the predicted label, 0 where none
        # a number per appended row, never reused, kept through compaction: "the same content" for
        # a labelling job that returns after writes moved rows (not persisted: no job outlives
        # the process)
        self._serial = np.empty(0, dtype=np.int64)
        self.next_serial = 0
        self.ids: list[str | None] = []  # None for dead rows
        self.metadata: list[dict[str, str] | None] = []
        self._row_of: dict[str, int] | None = {}  # None: not built yet (see the module docstring)
        self._partial: dict[str, int] | None = None  # while replaying: the rows of the log's ids
        self._hash_index: tuple[np.ndarray, np.ndarray] | None = None  # from a snapshot, see above
        self._row_lock = threading.Lock()
        self.label_names: list[str] = []  # code -> label
        self._code_of: dict[str, int] = {}
        # the largest label and metadata ever stored (UTF-8 bytes; never lowered by deletes):
        # they bound the size of a reply before a search runs
        self.max_label_bytes = 0
        self.max_metadata_bytes = 0

    # --- columns as views over the used rows -------------------------------------------------

    @property
    def vectors(self) -> np.ndarray:
        """float32 [n_rows, dim], dead rows included."""
        return self._vectors[: self.n_rows]

    @property
    def live(self) -> np.ndarray:
        """bool [n_rows]."""
        return self._live[: self.n_rows]

    @property
    def label_codes(self) -> np.ndarray:
        """int32 [n_rows], -1 where the item has no label."""
        return self._codes[: self.n_rows]

    @property
    def predicted_codes(self) -> np.ndarray:
        """int32 [n_rows], -1 where the item has no predicted label."""
        return self._predicted[: self.n_rows]

    @property
    def confidence(self) -> np.ndarray:
        """float32 [n_rows]: confidence of the predicted label (0 where none)."""
        return self._confidence[: self.n_rows]

    @property
    def serials(self) -> np.ndarray:
        """int64 [n_rows]: each row's serial (see __init__)."""
        return self._serial[: self.n_rows]

    @property
    def n_dead(self) -> int:
        return self.n_rows - self.n_live

    @property
    def nbytes(self) -> int:
        return (
            self._vectors.nbytes
            + self._live.nbytes
            + self._codes.nbytes
            + self._predicted.nbytes
            + self._confidence.nbytes
        )

    def label(self, row: int) -> str | None:
        code = int(self._codes[row])
        return self.label_names[code] if code >= 0 else None

    def predicted(self, row: int) -> tuple[str | None, float]:
        """(predicted label or None, its confidence)."""
        code = int(self._predicted[row])
        return (self.label_names[code], float(self._confidence[row])) if code >= 0 else (None, 0.0)

    def labelled_count(self) -> int:
        return int(np.count_nonzero(self.live & (self.label_codes >= 0)))

    def predicted_count(self) -> int:
        return int(np.count_nonzero(self.live & (self.predicted_codes >= 0)))

    # --- lookups -----------------------------------------------------------------------------

    @property
    def row_of(self) -> dict[str, int]:
        """id -> row of every live row (built on first use after a snapshot load)."""
        if self._partial is not None:
            return self._partial
        built = self._row_of
        if built is None:
            with self._row_lock:
                if self._row_of is None:
                    self._row_of = id_rows(self.ids)
                    self._hash_index = None  # the map answers every lookup from now on
                built = self._row_of
        return built

    def build_row_map(self) -> None:
        """Build the id map now if it is not built yet."""
        self.row_of  # noqa: B018  (the property builds it)

    def replaying(self, touched: Iterable[str]) -> None:
        """Until ``replayed``: ``row_of`` maps only the ``touched`` ids (the only ones a log replay
        looks up), found with one scan instead of building the whole map."""
        if self._row_of is not None:
            return
        wanted = set(touched)
        if self._hash_index is None:
            self._partial = {x: r for r, x in enumerate(self.ids) if x in wanted}
            return
        hashes, rows = self._hash_index
        keys = list(wanted)
        asked = np.fromiter(map(zlib.crc32, map(_utf8, keys)), dtype=np.uint32, count=len(keys))
        lo = np.searchsorted(hashes, asked)
        hit = lo < len(hashes)
        hit[hit] = hashes[lo[hit]] == asked[hit]
        first = np.where(hit, rows[np.minimum(lo, len(rows) - 1)], -1).tolist()
        ids, partial = self.ids, {}
        for x, r, i in zip(keys, first, lo.tolist(), strict=True):
            if r < 0:
                continue  # not in the snapshot
            if ids[r] == x:
                partial[x] = r
                continue
            # a hash collision (or a dead row): the other rows with the same hash
            h = hashes[i]
            while i < len(hashes) and hashes[i] == h:
                if ids[int(rows[i])] == x:
                    partial[x] = int(rows[i])
                    break
                i += 1
        self._partial = partial

    def replayed(self) -> None:
        self._partial = None

    def id_hash_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(CRC-32 of every row's id, sorted: uint32 [n_rows]; the rows in that order: int32),
        dead rows included (they hash an empty id, which no live id has), for a snapshot."""
        hashes = np.fromiter(
            map(zlib.crc32, map(_utf8, (x or "" for x in self.ids))), dtype=np.uint32, count=self.n_rows
        )
        order = np.argsort(hashes, kind="stable")
        return hashes[order], order.astype(np.int32)

    def rows(
        self, ids: list[str], collection: str, *, allow_missing: bool = False, noun: str = "item"
    ) -> list[int]:
        """Rows of ``ids`` in order; NotFound names the first unknown one (skipped if allow_missing)."""
        out = []
        for i, item_id in enumerate(ids):
            row = self.row_of.get(item_id)
            if row is None:
                if allow_missing:
                    continue
                raise item_error(
                    NotFound, i, f"id {quote(item_id)} not found in collection '{collection}'", noun=noun
                )
            out.append(row)
        return out

    def filter_mask(
        self,
        labels: set[str] | None,
        labelled_only: bool,
        predicted: set[str] | None = None,
        min_confidence: float = 0.0,
    ) -> tuple[np.ndarray | None, bool]:
        """(bool [n_rows] of rows a search may return or None when every row may, whether the mask
        hides live rows). ``labels``: rows whose label is one of these; ``labelled_only``: rows
        with a label; ``predicted``: rows whose predicted label is one of these with at least
        ``min_confidence``; the conditions given must all hold. A filter that every live row
        passes (labelled_only on a fully labelled collection) hides only tombstones: it is no
        filter, and searches take the unfiltered path (no IDSelector, which would cost FAISS its
        batched BLAS path)."""
        mask = None
        if labels is not None:
            mask = self.live & np.isin(self.label_codes, self._codes_of(labels))
        elif labelled_only:
            mask = self.live & (self.label_codes >= 0)
        if predicted is not None:
            passes = np.isin(self.predicted_codes, self._codes_of(predicted))
            if min_confidence > 0:
                passes &= self.confidence >= min_confidence
            mask = (self.live if mask is None else mask) & passes
        if mask is not None and np.count_nonzero(mask) < self.n_live:
            return mask, True
        return (self.live if self.n_dead else None), False

    def _codes_of(self, labels: set[str]) -> np.ndarray:
        return np.asarray([self._code_of[x] for x in labels if x in self._code_of], dtype=np.int32)

    # --- writes ------------------------------------------------------------------------------

    def append(
        self,
        ids: list[str],
        vectors: np.ndarray,
        labels: list[str | None],
        metadata: list[dict[str, str] | None],
        metadata_bytes: int | None = None,
    ) -> tuple[int, int]:
        """Add rows for a batch (ids unique within it; ``vectors`` float32 [N, dim]); old rows of the
        same ids become dead. ``metadata_bytes``: UTF-8 size of the batch's largest metadata, if the
        caller measured it. Returns (inserted, replaced)."""
        old = [r for r in map(self.row_of.get, ids) if r is not None]
        self.remove(old)
        n, start = len(ids), self.n_rows
        self.reserve(start + n)
        end = start + n
        self._vectors[start:end] = vectors
        self._live[start:end] = True
        self._codes[start:end] = self._codes_for(labels)
        self._predicted[start:end] = -1
        self._confidence[start:end] = 0.0
        self._serial[start:end] = np.arange(self.next_serial, self.next_serial + n)
        self.next_serial += n
        self.ids.extend(ids)
        self.metadata.extend(metadata)  # the caller hands over dicts nobody else holds
        self.row_of.update(zip(ids, range(start, end), strict=True))
        if metadata_bytes is None:
            metadata_bytes = max(map(metadata_size, metadata), default=0)
        self.max_metadata_bytes = max(self.max_metadata_bytes, metadata_bytes)
        self.n_rows = end
        self.n_live += n
        return n - len(old), len(old)

    def remove(self, rows: list[int]) -> None:
        """Mark rows dead (rows live and distinct)."""
        if not rows:
            return
        for r in rows:
            del self.row_of[self.ids[r]]  # type: ignore[arg-type]
            self.ids[r] = None
            self.metadata[r] = None
        self._live[np.asarray(rows, dtype=np.int64)] = False
        self.n_live -= len(rows)

    def set_labels(self, rows: list[int], labels: list[str | None]) -> None:
        """A person's label of live ``rows`` (None clears it); their predictions stay."""
        self._codes[np.asarray(rows, dtype=np.int64)] = self._codes_for(labels)

    def set_predictions(
        self, rows: list[int], labels: list[str], confidence: np.ndarray, *, replace: bool
    ) -> None:
        """Predicted labels and confidences (float32 [len(rows)]) of live ``rows``; ``replace``: every
        other row's prediction is cleared (a propagation run predicts the whole collection)."""
        if replace:
            self._predicted[: self.n_rows] = -1
            self._confidence[: self.n_rows] = 0.0
        index = np.asarray(rows, dtype=np.int64)
        self._predicted[index] = [self._code(x) for x in labels]
        self._confidence[index] = confidence

    def compacted(self) -> ItemTable:
        """A new table with the live rows only, in the same order (this one is left untouched)."""
        keep = np.flatnonzero(self.live)
        out = ItemTable(self.dim)
        out._vectors = self.vectors[keep]  # fancy indexing copies
        out._live = np.ones(len(keep), dtype=bool)
        out._codes = self.label_codes[keep]
        out._predicted = self.predicted_codes[keep]
        out._confidence = self.confidence[keep]
        out._serial = self.serials[keep]
        out.next_serial = self.next_serial
        out.ids = [self.ids[r] for r in keep]
        out.metadata = [self.metadata[r] for r in keep]
        out._row_of = dict(zip(out.ids, range(len(keep)), strict=True))  # type: ignore[arg-type]
        out.label_names = list(self.label_names)
        out._code_of = dict(self._code_of)
        out.max_label_bytes, out.max_metadata_bytes = self.max_label_bytes, self.max_metadata_bytes
        out.n_rows = out.n_live = len(keep)
        return out

    @classmethod
    def from_columns(
        cls,
        vectors: np.ndarray,
        live: np.ndarray,
        codes: np.ndarray,
        ids: list[str | None],
        metadata: list[dict[str, str] | None],
        label_names: list[str],
        max_metadata_bytes: int | None = None,
        buffer: np.ndarray | None = None,
        predicted: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
        hash_index: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> ItemTable:
        """Rebuild a table from its saved columns (see embedserve.store.snapshot); the largest
        metadata is measured if the snapshot did not record it. ``buffer``: float32 [capacity, dim]
        whose first rows are ``vectors``, kept as the table's storage (room for appends).
        ``predicted``/``confidence``: the prediction columns (None: no predictions);
        ``hash_index``: the snapshot's id hash index (see the module docstring), if it has one."""
        out = cls(vectors.shape[1])
        n = len(vectors)
        if not (len(live) == len(codes) == len(ids) == len(metadata) == n):
            raise ValueError("snapshot columns have different lengths")
        if buffer is None:
            buffer = np.ascontiguousarray(vectors, dtype=np.float32)
        out._vectors = buffer
        out._live = np.zeros(len(buffer), dtype=bool)
        out._live[:n] = live
        out._codes = np.full(len(buffer), -1, dtype=np.int32)
        out._codes[:n] = codes
        out._predicted = np.full(len(buffer), -1, dtype=np.int32)
        out._confidence = np.zeros(len(buffer), dtype=np.float32)
        if predicted is not None and confidence is not None:
            if not (len(predicted) == len(confidence) == n):
                raise ValueError("snapshot columns have different lengths")
            out._predicted[:n] = predicted
            out._confidence[:n] = confidence
        out._serial = np.arange(len(buffer), dtype=np.int64)
        out.next_serial = n
        out.ids, out.metadata = ids, metadata
        out._row_of = None  # built on first use
        out._hash_index = hash_index
        out.label_names = label_names
        out._code_of = {x: c for c, x in enumerate(label_names)}
        out.max_label_bytes = max((len(x.encode(errors="replace")) for x in label_names), default=0)
        if max_metadata_bytes is None:
            max_metadata_bytes = max((metadata_size(m) for m in metadata if m), default=0)
        out.max_metadata_bytes = max_metadata_bytes
        out.n_rows, out.n_live = n, int(np.count_nonzero(out._live[:n]))
        return out

    def _codes_for(self, labels: list[str | None]) -> list[int] | int:
        """Label codes of a batch (new labels get codes); one int when every item has the same."""
        first = labels[0] if labels else None
        if labels.count(first) == len(labels):  # the common batch: no label, or one label for all
            return self._code(first)
        return [self._code(x) for x in labels]

    def _code(self, label: str | None) -> int:
        if label is None:
            return -1
        code = self._code_of.get(label)
        if code is None:
            code = self._code_of[label] = len(self.label_names)
            self.label_names.append(label)
            self.max_label_bytes = max(self.max_label_bytes, len(label.encode(errors="replace")))
        return code

    def reserve(self, n: int) -> None:
        """Capacity for ``n`` rows (grown geometrically)."""
        cap = len(self._vectors)
        if n <= cap:
            return
        new_cap = max(n, int(cap * _GROWTH), _MIN_CAPACITY)
        vectors = np.empty((new_cap, self.dim), dtype=np.float32)
        vectors[: self.n_rows] = self.vectors
        live = np.zeros(new_cap, dtype=bool)
        live[: self.n_rows] = self.live
        codes = np.full(new_cap, -1, dtype=np.int32)
        codes[: self.n_rows] = self.label_codes
        predicted = np.full(new_cap, -1, dtype=np.int32)
        predicted[: self.n_rows] = self.predicted_codes
        confidence = np.zeros(new_cap, dtype=np.float32)
        confidence[: self.n_rows] = self.confidence
        serial = np.zeros(new_cap, dtype=np.int64)
        serial[: self.n_rows] = self.serials
        self._serial = serial
        self._vectors, self._live, self._codes = vectors, live, codes
        self._predicted, self._confidence = predicted, confidence


def _utf8(item_id: str) -> bytes:
    """An id's bytes for its hash: CRC-32 is the same in every process (Python's ``hash`` of a
    str is not)."""
    return item_id.encode("utf-8", "surrogatepass")


ROW_MAP_CHUNK = 1 << 16  # ids put in the map per step: each step holds the GIL a few ms


def id_rows(ids: list[str | None]) -> dict[str, int]:
    """id -> row for the live rows (dead rows have id None). Built in chunks: one dict(zip())
    over a million ids is a single C call that holds the GIL for a quarter of a second, and
    the server builds this map in the background while it answers requests."""
    row_of: dict = {}
    for start in range(0, len(ids), ROW_MAP_CHUNK):
        row_of.update(zip(ids[start : start + ROW_MAP_CHUNK], range(start, start + ROW_MAP_CHUNK)))
    row_of.pop(None, None)  # every dead row's None collapsed into this one key
    return row_of


def metadata_size(metadata: dict[str, str] | None) -> int:
    """UTF-8 bytes of a metadata map's keys and values."""
    if not metadata:
        return 0
    return sum(len(k.encode(errors="replace")) + len(v.encode(errors="replace")) for k, v in metadata.items())
