"""The rows of a collection: ids, vectors, labels and metadata, kept in numpy/Python columns.

Row r of the table is FAISS id r of the collection's index. Rows are only
appended; a delete or a replace marks the old row dead (a tombstone) and
searches leave dead rows out with an IDSelector. ``compacted`` drops dead rows
when the index is rebuilt.

Each row has two label columns: ``label`` (a person's, set by upsert or SetLabels) and
``predicted`` with its ``confidence`` (written back by label propagation; it never touches
``label``). Both hold codes into one list of label names.

Ids live in an ``IdColumn`` (embedserve.store.ids): packed bytes with a hash index, and the
recent rows' strs, so a table of a million items holds no million Python objects and a snapshot
load builds none. ``id_of`` answers None for a dead row.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from embedserve.errors import NotFound, item_error, quote
from embedserve.store.ids import IdColumn

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
        self._ids = IdColumn()
        self.metadata: list[dict[str, str] | None] = []
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
            + self._serial.nbytes
            + self._ids.nbytes
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
    def id_column(self) -> IdColumn:
        return self._ids

    def id_of(self, row: int) -> str | None:
        """The id of ``row``, None if the row is dead."""
        return self._ids[row] if self._live[row] else None

    def ids_of(self, rows: Iterable[int]) -> list[str]:
        """The ids of ``rows`` (live ones: a dead row's id may be empty)."""
        return self._ids.many(rows)

    def find(self, ids: list[str]) -> list[int]:
        """The row of each id, -1 for one not stored."""
        return self._ids.find(ids, self._live)

    def rows(
        self, ids: list[str], collection: str, *, allow_missing: bool = False, noun: str = "item"
    ) -> list[int]:
        """Rows of ``ids`` in order; NotFound names the first unknown one (skipped if allow_missing)."""
        found = self.find(ids)
        if allow_missing:
            return [r for r in found if r >= 0]
        if -1 in found:
            i = found.index(-1)
            raise item_error(
                NotFound, i, f"id {quote(ids[i])} not found in collection '{collection}'", noun=noun
            )
        return found

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
        old = [r for r in self.find(ids) if r >= 0]
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
        self._ids.append(ids)
        self.metadata.extend(metadata)  # the caller hands over dicts nobody else holds
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
        self._ids.forget(rows)
        for r in rows:
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
        out._ids = self._ids.compacted(keep)
        out.metadata = [self.metadata[r] for r in keep]
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
        ids: IdColumn,
        metadata: list[dict[str, str] | None],
        label_names: list[str],
        max_metadata_bytes: int | None = None,
        buffer: np.ndarray | None = None,
        predicted: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
    ) -> ItemTable:
        """Rebuild a table from its saved columns (see embedserve.store.snapshot); the largest
        metadata is measured if the snapshot did not record it. ``buffer``: float32 [capacity, dim]
        whose first rows are ``vectors``, kept as the table's storage (room for appends).
        ``predicted``/``confidence``: the prediction columns (None: no predictions)."""
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
        out._ids, out.metadata = ids, metadata
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


def metadata_size(metadata: dict[str, str] | None) -> int:
    """UTF-8 bytes of a metadata map's keys and values."""
    if not metadata:
        return 0
    return sum(len(k.encode(errors="replace")) + len(v.encode(errors="replace")) for k, v in metadata.items())
