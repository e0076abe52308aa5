"""Item ids of a table's rows: row -> id and id -> row, without a Python object per stored row.

Rows ``0 .. n_packed - 1`` are *packed* (``PackedIds``)::

    blob      bytes          every id in UTF-8 followed by b"\\n", in row order
    offsets   int64 [n + 1]  row r's id is blob[offsets[r] : offsets[r + 1] - 1]
    hashes    uint32 [n]     CRC-32 of every row's id, sorted
    rows      int32 [n]      the rows in that order: a lookup is a binary search

Rows from ``n_packed`` on are *recent*: the str objects the writes brought, in a list, and a
dict id -> row. A fold (``folded``, then ``adopt``) packs them; the collection folds once the
recent rows pass a quarter of the packed ones (so a row is packed again O(1) times on average)
and before every snapshot,
which stores the packed form as it is (``ids.txt`` is the blob without its last b"\\n";
``idhash.npy``/``idhash_rows.npy`` the hash index), so that loading one builds no str at all.

A million 8-character ids take about 25 MB packed (blob 9, offsets 8, index 8) against about
200 MB as strs in a list and a dict; a load reads them in a few ms instead of splitting and
hashing a million strs.

Liveness is the table's (``live``, bool [n_rows]): a lookup answers a row only where it is live.
A packed row keeps its id's bytes after it dies (a compaction drops them); a recent row that
dies leaves the dict at once. An id is live in at most one row, but may be stored in several
(dead ones, then the live one), so a lookup skips dead candidates and goes on.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np

_encode = partial(str.encode, encoding="utf-8", errors="surrogatepass")
FOLD_MIN_ROWS = 1 << 16  # recent rows below this are never folded except for a snapshot
FOLD_FRACTION = 0.25  # ... above it, once they reach this fraction of the packed rows


def crc32s(encoded: Iterable[bytes], count: int) -> np.ndarray:
    """uint32 [count]: the CRC-32 of each id's UTF-8 bytes (the same in every process, unlike
    Python's ``hash`` of a str)."""
    return np.fromiter(map(zlib.crc32, encoded), dtype=np.uint32, count=count)


@dataclass(frozen=True)
class PackedIds:
    """The packed rows' ids and their hash index (see the module docstring); never changed in place."""

    blob: bytes
    offsets: np.ndarray  # int64 [n + 1]
    hashes: np.ndarray  # uint32 [n], sorted
    rows: np.ndarray  # int32 [n]

    @property
    def n(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return len(self.blob) + self.offsets.nbytes + self.hashes.nbytes + self.rows.nbytes

    @classmethod
    def empty(cls) -> PackedIds:
        return cls(b"", np.zeros(1, np.int64), np.empty(0, np.uint32), np.empty(0, np.int32))

    @classmethod
    def from_text(cls, text: bytes, n: int, index: tuple[np.ndarray, np.ndarray] | None) -> PackedIds:
        """From ``ids.txt`` (the ``n`` ids joined by b"\\n"; none holds one) and its hash index
        (None: computed here, for a snapshot written before it had one)."""
        blob = text + b"\n" if n else b""
        ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 10)
        if len(ends) != n:
            raise ValueError(f"ids.txt holds {len(ends)} ids, the snapshot has {n} rows")
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[1:] = ends + 1
        if index is None:
            return cls.of(blob, offsets, _hashes_of(blob, offsets))
        hashes, rows = index
        if not (len(hashes) == len(rows) == n):
            raise ValueError("the id hash index does not match ids.txt")
        return cls(blob, offsets, hashes, rows.astype(np.int32, copy=False))

    @classmethod
    def of(cls, blob: bytes, offsets: np.ndarray, row_hashes: np.ndarray) -> PackedIds:
        """From a blob, its offsets and each row's hash in row order (sorted here)."""
        order = np.argsort(row_hashes, kind="stable")
        return cls(blob, offsets, row_hashes[order], order.astype(np.int32))

    def text(self) -> memoryview | None:
        """The ids joined by b"\\n" (ids.txt, without a copy), or None if some id holds a b"\\n"."""
        if self.blob.count(b"\n") != self.n:
            return None
        return memoryview(self.blob)[: max(len(self.blob) - 1, 0)]


def _joined(encoded: list[bytes]) -> tuple[bytes, np.ndarray]:
    """(the ids each followed by b"\\n", offsets int64 [len + 1] from 0) of UTF-8 ids."""
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)) + 1, out=offsets[1:])
    return (b"\n".join(encoded) + b"\n" if encoded else b""), offsets


def _hashes_of(blob: bytes, offsets: np.ndarray) -> np.ndarray:
    """uint32 [n]: each packed row's hash, in row order."""
    bounds = offsets.data
    n = len(offsets) - 1
    return crc32s((blob[bounds[r] : bounds[r + 1] - 1] for r in range(n)), n)


class IdColumn:
    """The ids of rows 0..len-1: packed ones, then recent ones (see the module docstring).

    Changed only by the table's writer; ``folded`` builds the packed form of every row without
    changing anything and ``adopt`` swaps it in, so the collection builds it while searches go on."""

    def __init__(self, packed: PackedIds | None = None) -> None:
        self._packed = packed if packed is not None else PackedIds.empty()
        self._n = self._packed.n  # rows packed
        self._bounds = self._packed.offsets.data
        self._recent: list[str] = []  # ids of rows n_packed.. (dead ones included)
        self._recent_row: dict[str, int] = {}  # live recent ids -> row

    @classmethod
    def from_list(cls, ids: list[str | None]) -> IdColumn:
        """Every id packed (None, a dead row: an empty id)."""
        out = cls()
        out._recent = [x or "" for x in ids]
        out.adopt(out.folded(None))
        return out

    def __len__(self) -> int:
        return self._n + len(self._recent)

    def __getitem__(self, row: int) -> str:
        """The id stored for ``row``, live or dead (a dead one's may be empty)."""
        n = self._n
        if row >= n:
            return self._recent[row - n]
        bounds = self._bounds
        return self._packed.blob[bounds[row] : bounds[row + 1] - 1].decode("utf-8", "surrogatepass")

    def many(self, rows: Iterable[int]) -> list[str]:
        """``[self[r] for r in rows]``, with the lookups' attributes read once."""
        n, blob, bounds, recent = self._n, self._packed.blob, self._bounds, self._recent
        return [
            blob[bounds[r] : bounds[r + 1] - 1].decode("utf-8", "surrogatepass") if r < n else recent[r - n]
            for r in rows
        ]

    def _encoded(self, row: int) -> bytes:
        """``self[row]`` in UTF-8."""
        n = self._n
        if row >= n:
            return _encode(self._recent[row - n])
        bounds = self._bounds
        return self._packed.blob[bounds[row] : bounds[row + 1] - 1]

    @property
    def n_packed(self) -> int:
        return self._n

    @property
    def n_recent(self) -> int:
        return len(self._recent)

    @property
    def packed(self) -> PackedIds:
        return self._packed

    @property
    def nbytes(self) -> int:
        """Bytes of the packed form (the recent strs and dict are not counted)."""
        return self._packed.nbytes

    def fold_due(self) -> bool:
        return self.n_recent >= max(FOLD_MIN_ROWS, FOLD_FRACTION * self.n_packed)

    # --- lookups -----------------------------------------------------------------------------

    def find(self, ids: list[str], live: np.ndarray) -> list[int]:
        """The live row of each id, -1 where it has none (``live``: bool [len(self)])."""
        recent = self._recent_row
        out = [recent.get(x, -1) for x in ids]
        packed = self._packed
        if not packed.n:
            return out
        todo = [i for i, r in enumerate(out) if r < 0]
        if not todo:
            return out
        keys = [_encode(ids[i]) for i in todo]
        asked = crc32s(keys, len(keys))
        hashes, rows, blob, bounds = packed.hashes, packed.rows, packed.blob, self._bounds
        at = np.searchsorted(hashes, asked)
        hit = at < len(hashes)
        hit[hit] = hashes[at[hit]] == asked[hit]
        for j in np.flatnonzero(hit).tolist():  # most new ids stop here: no row has their hash
            i, h, key = int(at[j]), asked[j], keys[j]
            while i < len(hashes) and hashes[i] == h:  # every row with this hash (collisions, dead rows)
                r = int(rows[i])
                if live[r] and blob[bounds[r] : bounds[r + 1] - 1] == key:
                    out[todo[j]] = r
                    break
                i += 1
        return out

    # --- writes ------------------------------------------------------------------------------

    def append(self, ids: list[str]) -> None:
        """Ids of new rows len(self).. (none of them live elsewhere: the table removed those)."""
        start = len(self)
        self._recent.extend(ids)
        self._recent_row.update(zip(ids, range(start, start + len(ids)), strict=True))

    def forget(self, rows: list[int]) -> None:
        """``rows`` died: recent ones leave the id map (packed ones are hidden by ``live``)."""
        n = self._n
        recent, row_of = self._recent, self._recent_row
        for r in rows:
            if r >= n:
                del row_of[recent[r - n]]

    def folded(self, live: np.ndarray | None) -> PackedIds:
        """Every row packed (dead recent rows with an empty id; ``live`` None: all live). Changes
        nothing: ``adopt`` swaps it in, provided no row was added meanwhile."""
        n, packed = self._n, self._packed
        recent = self._recent
        if live is not None and len(self._recent_row) < len(recent):
            dead = np.flatnonzero(~live[n : n + len(recent)]).tolist()
            recent = list(recent)
            for r in dead:
                recent[r] = ""
        encoded = [_encode(x) for x in recent]
        tail, tail_offsets = _joined(encoded)
        offsets = np.concatenate([packed.offsets, tail_offsets[1:] + packed.offsets[n]])
        new_hashes = crc32s(encoded, len(encoded))
        order = np.argsort(new_hashes, kind="stable")
        # two sorted runs: a stable argsort merges them in linear time
        hashes = np.concatenate([packed.hashes, new_hashes[order]])
        rows = np.concatenate([packed.rows, (order + n).astype(np.int32)])
        merge = np.argsort(hashes, kind="stable")
        return PackedIds(packed.blob + tail, offsets, hashes[merge], rows[merge])

    def adopt(self, packed: PackedIds) -> None:
        """Swap in ``folded``'s result (it must cover every row)."""
        if packed.n != len(self):
            raise RuntimeError(f"folded ids cover {packed.n} rows, the column has {len(self)}")
        self._packed, self._n, self._bounds = packed, packed.n, packed.offsets.data
        self._recent, self._recent_row = [], {}

    def compacted(self, keep: np.ndarray) -> IdColumn:
        """A column of rows ``keep`` (int64, ascending) only, renumbered 0.., all packed."""
        encoded = [self._encoded(r) for r in keep.tolist()]
        blob, offsets = _joined(encoded)
        return IdColumn(PackedIds.of(blob, offsets, crc32s(encoded, len(encoded))))
