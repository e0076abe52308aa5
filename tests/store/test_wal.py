"""The write-ahead log format and its recovery rules, tested on the file itself."""

from __future__ import annotations

import struct
import threading
import zlib

import numpy as np
import pytest

from embedserve.errors import FailedPrecondition
from embedserve.store.wal import OP_DELETE, OP_UPSERT, WriteAheadLog, encode_delete, encode_upsert, read_log


def _write(path, *records) -> list[int]:
    """Append encoded records; returns the file offset after each."""
    wal = WriteAheadLog(path)
    ends = []
    for parts in records:
        wal.sync(wal.append(parts))
        ends.append(wal.size)
    wal.close()
    return ends


def _upsert(seq: int, n: int = 3, dim: int = 4):
    vectors = np.arange(n * dim, dtype=np.float32).reshape(n, dim) + seq
    ids = [f"s{seq}-{i}" for i in range(n)]
    return encode_upsert(seq, ids, vectors, ["x"] + [None] * (n - 1), [{"k": "é"}] + [{}] * (n - 1))


def test_record_layout(tmp_path):
    path = tmp_path / "wal.log"
    _write(path, encode_delete(7, ["a", "b"]))
    data = path.read_bytes()
    magic, length, crc = struct.unpack_from("<4sII", data)
    assert magic == b"ESW\x01" and length == len(data) - 12 and crc == zlib.crc32(data[12:])
    seq, op, count, dim, json_len = struct.unpack_from("<QB3xIII", data, 12)
    assert (seq, op, count, dim) == (7, OP_DELETE, 2, 0)
    assert data[36 : 36 + json_len] == b'{"ids":["a","b"]}'


def test_round_trip(tmp_path):
    path = tmp_path / "wal.log"
    _write(path, _upsert(1), encode_delete(2, ["s1-0"]), _upsert(3, n=2))
    records = list(read_log(path))
    assert [(r.seq, r.op) for r in records] == [(1, OP_UPSERT), (2, OP_DELETE), (3, OP_UPSERT)]
    first = records[0]
    assert first.ids == ["s1-0", "s1-1", "s1-2"] and first.labels == ["x", None, None]
    assert first.metadata == [{"k": "é"}, {}, {}]
    np.testing.assert_array_equal(first.vectors, np.arange(12, dtype=np.float32).reshape(3, 4) + 1)
    assert records[1].ids == ["s1-0"]


@pytest.mark.parametrize("damage", ["cut_payload", "cut_header", "garbage", "zeros", "flip_bit"])
def test_torn_tail_is_truncated(tmp_path, damage):
    path = tmp_path / "wal.log"
    ends = _write(path, _upsert(1), _upsert(2), _upsert(3))
    data = path.read_bytes()
    if damage == "cut_payload":
        path.write_bytes(data[: ends[2] - 5])
    elif damage == "cut_header":
        path.write_bytes(data[: ends[1] + 7])
    elif damage == "garbage":
        path.write_bytes(data[: ends[1]] + np.random.default_rng(0).bytes(100))
    elif damage == "zeros":  # a file extended by the crash but never written
        path.write_bytes(data[: ends[1]] + bytes(4096))
    else:
        flipped = bytearray(data)
        flipped[ends[2] - 3] ^= 0x01
        path.write_bytes(bytes(flipped))
    assert [r.seq for r in read_log(path)] == [1, 2]
    assert path.stat().st_size == ends[1]
    # the log is usable afterwards
    _write(path, _upsert(4))
    assert [r.seq for r in read_log(path)] == [1, 2, 4]


def test_unknown_version_is_refused_not_truncated(tmp_path):
    path = tmp_path / "wal.log"
    _write(path, _upsert(1))
    data = bytearray(path.read_bytes())
    data[3] = 9
    path.write_bytes(bytes(data))
    with pytest.raises(FailedPrecondition, match="version 9"):
        list(read_log(path))
    assert path.stat().st_size == len(data)


def test_group_commit_shares_fsyncs(tmp_path, monkeypatch):
    """Writers that queue behind one fsync find their record already covered."""
    import embedserve.store.wal as wal_module

    calls = []
    real = wal_module.os.fdatasync
    gate, started = threading.Event(), threading.Event()

    def slow_fdatasync(fd):
        calls.append(fd)
        started.set()
        gate.wait(5)
        real(fd)

    monkeypatch.setattr(wal_module.os, "fdatasync", slow_fdatasync)
    wal = WriteAheadLog(tmp_path / "wal.log")
    first = threading.Thread(target=lambda: wal.sync(wal.append(_upsert(1))))
    first.start()
    assert started.wait(5)  # the first fsync is in progress; now ten more writers append and wait
    tickets = [wal.append(_upsert(i)) for i in range(2, 12)]
    waiters = [threading.Thread(target=wal.sync, args=(t,)) for t in tickets]
    for t in waiters:
        t.start()
    gate.set()
    for t in [first, *waiters]:
        t.join()
    assert len(calls) == 2  # one for the first record, one covering all ten others
    wal.close()
    assert [r.seq for r in read_log(tmp_path / "wal.log")] == list(range(1, 12))
