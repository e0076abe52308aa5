"""The write-ahead log: one append-only file per collection, one record per write batch.

Record layout (all integers little-endian)::

    header   12 bytes  b"ESW" + u8 format version (1) | u32 payload length | u32 crc32(payload)
    payload
      head   24 bytes  u64 seq | u8 op | 3 pad | u32 count | u32 dim | u32 json length
      json             UTF-8 (ASCII) JSON, by op:
                         1 upsert   {"ids", "labels", "metadata"}
                         2 delete   {"ids"}
                         3 label    {"ids", "labels"}: a person's labels (null clears one)
                         4 predict  {"ids", "labels", "replace"}: predicted labels; replace = clear
                                    every other item's prediction first
      floats           float32 [count, dim], C order: upsert the vectors, predict the confidences
                       (dim 1); absent (dim 0) for delete and label

``seq`` increases by one per record; a snapshot records the last seq it contains,
so replay skips records the snapshot already holds. A record that is cut short or
fails its CRC marks the end of the log: it and everything after it are truncated
away at open (only a crash mid-write leaves one, and such a write was never
acknowledged because acknowledgement waits for the fsync that covers it).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedserve.errors import FailedPrecondition, ResourceExhausted, Unavailable
from embedserve.store.fsio import fsync_dir, write_all

log = logging.getLogger("embedserve.store")

MAGIC = b"ESW"
VERSION = 1
OP_UPSERT = 1
OP_DELETE = 2
OP_LABEL = 3
OP_PREDICT = 4
_HEADER = struct.Struct("<4sII")
_HEAD = struct.Struct("<QB3xIII")
_MAX_PAYLOAD = (1 << 32) - 1


@dataclass(frozen=True)
class WalRecord:
    """One decoded record; ``vectors`` is float32 [count, dim] for upserts, [count, 1] (the
    confidences) for predictions, None otherwise."""

    seq: int
    op: int
    ids: list[str]
    vectors: np.ndarray | None = None
    labels: list[str | None] | None = None
    metadata: list[dict[str, str] | None] | None = None
    replace: bool = False


def encode_upsert(
    seq: int,
    ids: list[str],
    vectors: np.ndarray,
    labels: list[str | None],
    metadata: list[dict[str, str] | None],
) -> list[bytes | memoryview]:
    """The record's parts, ready to write in order; ``vectors`` float32 [N, D] C-contiguous is not copied."""
    doc = {"ids": ids, "labels": labels, "metadata": metadata}
    vec = memoryview(np.ascontiguousarray(vectors, dtype="<f4")).cast("B")  # type: ignore[arg-type]
    return _frame(seq, OP_UPSERT, len(ids), vectors.shape[1], doc, vec)


def encode_delete(seq: int, ids: list[str]) -> list[bytes | memoryview]:
    return _frame(seq, OP_DELETE, len(ids), 0, {"ids": ids}, None)


def encode_labels(seq: int, ids: list[str], labels: list[str | None]) -> list[bytes | memoryview]:
    return _frame(seq, OP_LABEL, len(ids), 0, {"ids": ids, "labels": labels}, None)


def encode_predictions(
    seq: int, ids: list[str], labels: list[str], confidence: np.ndarray, replace: bool
) -> list[bytes | memoryview]:
    """``confidence`` float32 [len(ids)]."""
    conf = memoryview(np.ascontiguousarray(confidence, dtype="<f4")).cast("B")  # type: ignore[arg-type]
    return _frame(seq, OP_PREDICT, len(ids), 1, {"ids": ids, "labels": labels, "replace": replace}, conf)


def _frame(
    seq: int, op: int, count: int, dim: int, doc: dict, vec: memoryview | None
) -> list[bytes | memoryview]:
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    head = _HEAD.pack(seq, op, count, dim, len(text))
    length = len(head) + len(text) + (vec.nbytes if vec is not None else 0)
    if length > _MAX_PAYLOAD:
        raise ResourceExhausted(
            f"a batch of {count} items is {length} bytes, over the 4 GiB a log record holds; split it"
        )
    crc = zlib.crc32(text, zlib.crc32(head))
    if vec is not None:
        crc = zlib.crc32(vec, crc)
    parts: list[bytes | memoryview] = [_HEADER.pack(MAGIC + bytes([VERSION]), length, crc), head, text]
    if vec is not None:
        parts.append(vec)
    return parts


def _decode(payload: bytes, where: str) -> WalRecord:
    seq, op, count, dim, text_len = _HEAD.unpack_from(payload)
    doc = json.loads(payload[_HEAD.size : _HEAD.size + text_len])
    if op == OP_DELETE:
        return WalRecord(seq, op, doc["ids"])
    if op == OP_LABEL:
        return WalRecord(seq, op, doc["ids"], labels=doc["labels"])
    if op not in (OP_UPSERT, OP_PREDICT):
        raise FailedPrecondition(f"{where}: record {seq} has unknown op {op}")
    floats = np.frombuffer(payload, dtype="<f4", count=count * dim, offset=_HEAD.size + text_len)
    floats = floats.reshape(count, dim)
    if op == OP_PREDICT:
        return WalRecord(seq, op, doc["ids"], floats, doc["labels"], replace=bool(doc["replace"]))
    return WalRecord(seq, op, doc["ids"], floats, doc["labels"], doc["metadata"])


def read_log(path: Path) -> Iterator[WalRecord]:
    """Yield the intact records of ``path`` in order; truncate a torn or corrupt tail away.

    A header with our magic but another format version is not a torn write: it is
    a log this code cannot read, so it raises FailedPrecondition instead.
    """
    if not path.exists():
        return
    with open(path, "r+b") as f:
        offset = 0
        while True:
            header = f.read(_HEADER.size)
            if not header:
                return
            reason = None
            if len(header) < _HEADER.size:
                reason = "a cut-short header"
            else:
                magic, length, crc = _HEADER.unpack(header)
                if magic[:3] == MAGIC and magic[3] != VERSION:
                    raise FailedPrecondition(f"{path}: log format version {magic[3]} is not supported")
                if magic != MAGIC + bytes([VERSION]):
                    reason = "a bad magic number"
                else:
                    payload = f.read(length)
                    if len(payload) < length:
                        reason = "a cut-short record"
                    elif zlib.crc32(payload) != crc:
                        reason = "a CRC mismatch"
            if reason is not None:
                size = os.fstat(f.fileno()).st_size
                log.warning(
                    "%s: %s at byte %d; truncating %d bytes of unacknowledged tail",
                    path,
                    reason,
                    offset,
                    size - offset,
                )
                f.truncate(offset)
                f.flush()
                os.fsync(f.fileno())
                return
            yield _decode(payload, str(path))
            offset += _HEADER.size + length


class WriteAheadLog:
    """Appends records and makes them durable with group commit.

    ``append`` runs under the collection's writer mutex (one appender at a time)
    and returns a ticket: the log's logical end after the record. ``sync(ticket)``
    runs outside that mutex; one fsync covers every record appended before it,
    so concurrent writers that queue on ``_sync_lock`` usually find their record
    already covered and return without an fsync of their own.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if created:  # the file's directory entry must be durable before any record in it is acknowledged
            fsync_dir(path.parent)
        self._size = os.fstat(self._fd).st_size  # bytes in the file now
        self._written = 0  # logical bytes appended since open; never goes back, unlike the file
        self._synced = 0
        self._last_start = self._size  # file offset of the last appended record (see drop_last)
        self._sync_lock = threading.Lock()
        self._failed: Unavailable | None = None

    @property
    def size(self) -> int:
        """Bytes in the log file."""
        return self._size

    def append(self, parts: list[bytes | memoryview]) -> int:
        """Write one record (not yet durable); returns the ticket for ``sync``."""
        self._check()
        start = self._size
        try:
            for part in parts:
                write_all(self._fd, part)
        except OSError as err:
            # leave no partial record behind: the caller reports the write as failed
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._failed = Unavailable(f"{self.path}: write failed and could not be rolled back: {err}")
            raise Unavailable(f"{self.path}: write failed: {err}") from err
        n = sum(memoryview(p).nbytes for p in parts)
        self._last_start = start
        self._size += n
        self._written += n
        return self._written

    def drop_last(self) -> None:
        """Cut the record of the last ``append`` back out of the file, durably.

        For a write that could not be applied in memory: it was never acknowledged,
        and left in the log it would be replayed (and fail again) at every start.
        The caller still holds the writer mutex it appended under, so that record is
        the last one in the file.
        """
        with self._sync_lock:
            self._check()
            try:
                os.ftruncate(self._fd, self._last_start)
                os.fdatasync(self._fd)
            except OSError as err:
                self._failed = Unavailable(f"{self.path}: could not remove an unapplied record: {err}")
                raise self._failed from err
            self._size = self._last_start

    def sync(self, ticket: int) -> None:
        """Return once everything up to ``ticket`` is on disk (sharing one fsync with concurrent writers)."""
        with self._sync_lock:
            self._check()
            if self._synced >= ticket:
                return
            target = self._written  # every byte counted here was written before the fsync below
            try:
                os.fdatasync(self._fd)
            except OSError as err:
                # the page cache may have dropped the dirty pages: nothing after this is trustworthy
                self._failed = Unavailable(f"{self.path}: fsync failed, writes refused until restart: {err}")
                raise self._failed from err
            self._synced = target

    def reset(self) -> None:
        """Empty the log; the caller has made everything appended so far durable elsewhere (a snapshot)."""
        with self._sync_lock:
            self._check()
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._size = 0
            self._synced = self._written

    def close(self) -> None:
        with self._sync_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self._failed = self._failed or Unavailable(f"{self.path}: log is closed")

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed
