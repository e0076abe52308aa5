"""Acknowledged writes survive restarts and crashes; damaged log tails do not stop start-up."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embedserve.errors import NotFound, Unavailable
from embedserve.store import Store
from embedserve.store.index import VectorIndex
from tests.store.conftest import ids_for, random_vectors, spec, upsert_plain

ROOT = Path(__file__).resolve().parents[2]


def _content(collection, candidates: list[str] | None = None) -> dict:
    """id -> (label, metadata, vector bytes) of every stored item among ``candidates``.

    Goes through get(), not search: an HNSW graph need not reach every item.
    """
    out = {}
    for item_id in candidates or [*ids_for(200), "a", "b", "new"]:
        try:
            item = collection.get([item_id], include_vector=True)[0]
        except NotFound:
            continue
        out[item_id] = (item.label, item.metadata, item.vector.tobytes())
    return out


def _write_history(c) -> None:
    """Upserts, a replace, deletes and a re-insert after delete: order matters on replay."""
    base = random_vectors(60, 8, seed=11)
    upsert_plain(
        c,
        ids_for(50),
        base[:50],
        labels=[str(i % 5) for i in range(50)],
        metadata=[{"i": str(i)} for i in range(50)],
    )
    c.delete(ids_for(5))
    upsert_plain(c, ["id7"], base[50:51], labels=["replaced"])
    upsert_plain(c, ["id3"], base[51:52], labels=["back"])  # deleted above, inserted again
    c.delete(["id8"])


def test_reopen_after_close_has_same_content(data_dir):
    s = Store(data_dir)
    c = s.create(spec(dim=8, metric="cosine"))
    _write_history(c)
    before, stats, created = _content(c), c.stats(), c.spec
    s.close()
    s.close()  # idempotent
    assert (data_dir / "collections" / "c" / "wal.log").stat().st_size == 0  # close flushed a snapshot
    c = Store(data_dir).get("c")
    assert c.spec == created
    assert _content(c) == before
    assert c.stats().count == stats.count and c.stats().labelled_count == stats.labelled_count
    assert c.get(["id3"])[0].label == "back" and c.get(["id7"])[0].label == "replaced"
    assert c.spec.created_at > 0 and c.spec.index_spec == "Flat"


def test_crash_without_close_keeps_acknowledged_writes(data_dir):
    s = Store(data_dir)
    c = s.create(spec(dim=8))
    _write_history(c)
    ivf = s.create(spec("ivf", dim=8, index_spec="IVF4,Flat", train_size=40))
    upsert_plain(ivf, ids_for(100), random_vectors(100, 8))
    expected = _content(c)
    # no close(): the first store is simply abandoned, as a killed process would leave it
    s2 = Store(data_dir)
    assert _content(s2.get("c")) == expected
    # replay applies the writes only; training waits for maintain() (the server runs it once serving)
    ivf2 = s2.get("ivf")
    assert ivf2.stats().count == 100 and len(ivf2.search(random_vectors(1, 8), 5)[0]) == 5
    s2.maintain()
    assert ivf2.stats().trained and ivf2.stats().count == 100
    assert "id8" not in expected and "id0" not in expected and "id3" in expected


def test_torn_log_tail_is_dropped_and_earlier_writes_kept(data_dir):
    s = Store(data_dir)
    c = s.create(spec(dim=8))
    upsert_plain(c, ids_for(10), random_vectors(10, 8))
    first = _content(c)
    wal = data_dir / "collections" / "c" / "wal.log"
    good = wal.stat().st_size
    upsert_plain(c, ids_for(10, 10), random_vectors(10, 8, seed=1))
    whole = wal.read_bytes()

    # crash 1: the second record was only half written
    wal.write_bytes(whole[: good + (len(whole) - good) // 2])
    c1 = Store(data_dir).get("c")
    assert _content(c1) == first and wal.stat().st_size == good
    upsert_plain(c1, ["new"], random_vectors(1, 8, seed=2))  # the cut log takes new records
    expected = _content(c1)

    # crash 2: junk after an intact log
    with open(wal, "ab") as f:
        f.write(b"\x00junk" * 10)
    assert _content(Store(data_dir).get("c")) == expected


def test_snapshot_then_writes_then_crash(data_dir):
    s = Store(data_dir)
    c = s.create(spec(dim=8, index_spec="HNSW8"))
    upsert_plain(c, ids_for(40), random_vectors(40, 8))
    c.snapshot()
    coll_dir = data_dir / "collections" / "c"
    assert (coll_dir / "wal.log").stat().st_size == 0
    assert len(list(coll_dir.glob("snap-*"))) == 1
    c.delete(ids_for(3))  # deletes of snapshotted items, after the snapshot
    upsert_plain(c, ids_for(5, 40), random_vectors(5, 8, seed=2))
    upsert_plain(c, ["id1"], random_vectors(1, 8, seed=3))  # back again
    expected = _content(c)
    c2 = Store(data_dir).get("c")  # crash: no close
    assert _content(c2) == expected
    assert "id0" not in expected and "id1" in expected and "id44" in expected


def test_crash_between_snapshot_and_log_truncation_applies_nothing_twice(data_dir, caplog):
    s = Store(data_dir)
    c = s.create(spec(dim=8))
    upsert_plain(c, ["a", "b"], random_vectors(2, 8))
    c.delete(["a"])
    wal = data_dir / "collections" / "c" / "wal.log"
    old_log = wal.read_bytes()
    c.snapshot()
    wal.write_bytes(old_log)  # as if the crash came before the truncation
    expected = _content(c)
    with caplog.at_level(logging.INFO, logger="embedserve.store"):
        c2 = Store(data_dir).get("c")
    assert _content(c2) == expected and set(expected) == {"b"}
    assert "0 log records replayed" in caplog.text


def test_automatic_snapshot_when_log_grows(data_dir):
    s = Store(data_dir, snapshot_wal_bytes=4096)
    c = s.create(spec(dim=8))
    for b in range(10):
        upsert_plain(c, ids_for(20, b * 20), random_vectors(20, 8, seed=b))
    coll_dir = data_dir / "collections" / "c"
    (snap,) = coll_dir.glob("snap-*")
    snap_bytes = sum(f.stat().st_size for f in snap.iterdir())
    # the log may grow to half the last snapshot before the next one (bulk loads stay linear)
    assert (coll_dir / "wal.log").stat().st_size <= max(4096, snap_bytes // 2)
    expected = _content(c)
    assert len(expected) == 200
    assert _content(Store(data_dir).get("c")) == expected  # crash: no close


def test_deleted_collection_stays_deleted(data_dir):
    s = Store(data_dir)
    upsert_plain(s.create(spec("gone", dim=4)), ["a"], np.ones((1, 4)))
    s.create(spec("kept", dim=4))
    s.delete("gone")
    # leftovers of a crash mid-delete / mid-create are cleaned up, never loaded
    (data_dir / "collections" / ".deleted-x-123").mkdir()
    (data_dir / "collections" / ".creating-y-456").mkdir()
    s2 = Store(data_dir)
    assert [c.spec.name for c in s2.list()] == ["kept"]
    assert sorted(p.name for p in (data_dir / "collections").iterdir()) == ["kept"]


_CHILD = textwrap.dedent(
    """
    import sys, threading
    import numpy as np
    from embedserve.store import CollectionSpec, Store

    store = Store(sys.argv[1], snapshot_wal_bytes=200_000)
    c = store.create(CollectionSpec(name="k", model="m", dim=16, metric="l2"))
    lock = threading.Lock()

    def writer(t):
        for b in range(10_000):
            ids = [f"t{t}-b{b}-{i}" for i in range(50)]
            c.upsert(ids, np.full((50, 16), b, np.float32), [None] * 50, [{}] * 50)
            with lock:
                print(f"{t} {b}", flush=True)

    for t in range(4):
        threading.Thread(target=writer, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_kill_9_loses_no_acknowledged_write(data_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    acked = []
    for line in proc.stdout:
        acked.append(tuple(map(int, line.split())))
        if len(acked) == 300:  # well past several automatic snapshots
            os.kill(proc.pid, signal.SIGKILL)
            break
    acked += [tuple(map(int, line.split())) for line in proc.stdout.read().splitlines() if line.strip()]
    proc.wait()
    c = Store(data_dir).get("k")
    for t, b in acked:
        ids = [f"t{t}-b{b}-{i}" for i in range(50)]
        np.testing.assert_array_equal(c.vectors_of(ids), np.full((50, 16), b, np.float32))
    assert c.stats().count % 50 == 0 and c.stats().count >= 50 * len(acked)


def test_write_that_fails_to_apply_is_cut_from_the_log(data_dir, monkeypatch):
    """A write whose in-memory apply fails was never acknowledged; left in the log it would fail again on
    every replay and keep the store from opening."""
    real_add = VectorIndex.add

    def add(self, vectors):
        if len(vectors) and vectors[0, 0] == 999:
            raise RuntimeError("simulated FAISS failure")
        real_add(self, vectors)

    monkeypatch.setattr(VectorIndex, "add", add)
    s = Store(data_dir)
    c = s.create(spec(dim=4))
    upsert_plain(c, ["good"], np.ones((1, 4)))
    with pytest.raises(RuntimeError, match="simulated"):
        upsert_plain(c, ["bad"], np.full((1, 4), 999))
    with pytest.raises(Unavailable, match="refuses writes"):
        upsert_plain(c, ["later"], np.ones((1, 4)))
    s.close()

    c = Store(data_dir).get("c")  # replay would hit the same failure
    assert [item.id for item in c.get(["good"])] == ["good"]
    assert c.stats().count == 1
    upsert_plain(c, ["later"], np.ones((1, 4)))
    assert c.stats().count == 2


def _snapshots(data_dir, name="c"):
    return sorted((data_dir / "collections" / name).glob("snap-*"))


def test_a_snapshot_is_due_when_replay_would_take_too_long(data_dir):
    """snapshot_replay_s bounds replay time: with a tiny budget every write snapshots and the log stays
    empty; with a huge one (and a huge byte limit) the log keeps every record."""
    eager = Store(data_dir / "eager", snapshot_wal_bytes=1 << 40, snapshot_replay_s=1e-9)
    c = eager.create(spec(dim=8))
    upsert_plain(c, ids_for(10), random_vectors(10, 8))
    wal = data_dir / "eager" / "collections" / "c" / "wal.log"
    assert wal.stat().st_size == 0 and len(_snapshots(data_dir / "eager")) == 1
    lazy = Store(data_dir / "lazy", snapshot_wal_bytes=1 << 40, snapshot_replay_s=1e9)
    c = lazy.create(spec(dim=8))
    for i in range(5):
        upsert_plain(c, ids_for(10, 10 * i), random_vectors(10, 8, seed=i))
    assert (data_dir / "lazy" / "collections" / "c" / "wal.log").stat().st_size > 0
    assert not _snapshots(data_dir / "lazy")


def test_replay_never_rebuilds_the_index(data_dir, caplog):
    """Deletes past the rebuild threshold, then a crash: opening replays them as tombstones only (no
    HNSW rebuild on the start-up path); maintain() rebuilds afterwards, with the same items."""
    s = Store(data_dir, snapshot_wal_bytes=1 << 40, snapshot_replay_s=1e9)
    c = s.create(spec(dim=8, index_spec="HNSW16"))
    upsert_plain(c, ids_for(400), random_vectors(400, 8))
    c.delete(ids_for(150))  # 37 % dead: the live collection rebuilt at once
    assert c._table.n_dead == 0
    upsert_plain(c, ids_for(10, 400), random_vectors(10, 8, seed=3))
    expected = _content(c, ids_for(410))
    # crash: the store is abandoned; the log holds the whole history, no snapshot exists
    assert not _snapshots(data_dir)
    with caplog.at_level(logging.INFO, logger="embedserve.store"):
        s2 = Store(data_dir, snapshot_wal_bytes=1 << 40, snapshot_replay_s=1e9)
        c2 = s2.get("c")
    assert c2._table.n_dead == 150  # replayed as tombstones, not rebuilt
    assert "3 log records replayed" in caplog.text
    assert _content(c2, ids_for(410)) == expected
    assert len(c2.search(random_vectors(1, 8, seed=9), 20)[0]) == 20
    s2.maintain()
    assert c2._table.n_dead == 0 and _content(c2, ids_for(410)) == expected


def test_snapshots_keep_awkward_ids_and_read_the_previous_format(data_dir):
    """Ids with line breaks or non-ASCII survive a snapshot (ids.txt falls back to JSON); a version-1
    snapshot (ids and every row's metadata in items.json) still loads."""
    import json

    s = Store(data_dir)
    c = s.create(spec(dim=8))
    ids = ["plain", "line\nbreak", "é-ü-字", "tab\tid"]
    upsert_plain(c, ids, random_vectors(4, 8), metadata=[{"k": "v"}, {}, {"x": "y"}, {}])
    c.delete(["tab\tid"])
    expected = _content(c, ids)
    s.close()
    snap = _snapshots(data_dir)[0]
    assert not (snap / "ids.txt").exists()  # an id holds a line break
    assert _content(Store(data_dir).get("c"), ids) == expected
    # rewrite it as version 1
    items = json.loads((snap / "items.json").read_text())
    rows = json.loads((snap / "manifest.json").read_text())["rows"]
    dense = [None] * rows
    for r, m in zip(items.pop("metadata_rows"), items["metadata"]):
        dense[r] = m
    dense = [m if m is not None or items["ids"][r] is None else {} for r, m in enumerate(dense)]
    (snap / "items.json").write_text(json.dumps({**items, "metadata": dense}))
    manifest = json.loads((snap / "manifest.json").read_text())
    (snap / "manifest.json").write_text(json.dumps({**manifest, "version": 1}))
    assert _content(Store(data_dir).get("c"), ids) == expected


def test_a_snapshot_load_reads_the_ids_packed_and_lookups_span_both_parts(data_dir):
    """A snapshot stores the ids packed and a load keeps them so (no str per row); the log's rows
    are recent; replaces, deletes and re-inserts across the snapshot come out right, and a
    snapshot packs the recent rows again."""
    s = Store(data_dir, snapshot_wal_bytes=1 << 40, snapshot_replay_s=1e9)
    c = s.create(spec(dim=8))
    upsert_plain(c, ids_for(100), random_vectors(100, 8), labels=["a"] * 100)
    c.delete(["id7"])
    c.snapshot()
    upsert_plain(c, ["id3", "new", "id7"], random_vectors(3, 8, seed=4), labels=["replaced", "n", "back"])
    c.delete(["id5", "new"])
    upsert_plain(c, ["id5"], random_vectors(1, 8, seed=6), labels=["again"])  # deleted, then back
    expected = _content(c, [*ids_for(100), "new"])
    c2 = Store(data_dir).get("c")
    ids = c2._table.id_column
    assert (ids.n_packed, ids.n_recent) == (100, 4)  # the snapshot's rows, the log's
    assert _content(c2, [*ids_for(100), "new"]) == expected
    assert [c2.get([x])[0].label for x in ("id3", "id5", "id7")] == ["replaced", "again", "back"]
    assert c2.get(["new", "id6"], allow_missing=True)[0].id == "id6"
    c2.snapshot()
    assert (ids := c2._table.id_column).n_packed == 104 and ids.n_recent == 0
    assert _content(c2, [*ids_for(100), "new"]) == expected
    assert _content(Store(data_dir).get("c"), [*ids_for(100), "new"]) == expected


def test_replay_finds_snapshot_rows_by_id_hash_even_when_two_ids_share_one(data_dir):
    import zlib

    seen: dict[int, str] = {}
    pair = None
    import random

    rng = random.Random(0)
    for _ in range(400_000):  # a CRC-32 collision: two ids the hash index cannot tell apart
        x = f"{rng.getrandbits(96):024x}"  # (similar ids like k1, k2 ... never collide: CRC
        h = zlib.crc32(x.encode())  # detects every burst of up to 32 bits)
        if h in seen:
            pair = (seen[h], x)
            break
        seen[h] = x
    assert pair is not None
    a, b = pair
    s = Store(data_dir, snapshot_wal_bytes=1 << 40, snapshot_replay_s=1e9)
    c = s.create(spec(dim=8))
    upsert_plain(c, [a, b, *ids_for(50)], random_vectors(52, 8), labels=["x"] * 52)
    c.delete(["id7"])  # a dead row in the snapshot too
    c.snapshot()
    assert list(data_dir.glob("collections/c/snap-*/idhash.npy"))
    upsert_plain(c, [b], random_vectors(1, 8, seed=5), labels=["b2"])  # replaces b (second of the pair)
    c.delete([a, "id9"])
    c.set_labels(["id1"], ["relabelled"])
    expected = _content(c, [a, b, *ids_for(50)])
    c2 = Store(data_dir).get("c")  # crash: the log is replayed over the snapshot
    assert _content(c2, [a, b, *ids_for(50)]) == expected
    assert c2.stats().count == 52 - 3 and c2.get([b])[0].label == "b2"
