"""The id column: lookups across packed and recent rows, dead rows, hash collisions, folds."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pytest

from embedserve.store.ids import IdColumn, PackedIds


def crc_collision() -> tuple[str, str]:
    """Two ids with the same CRC-32 (a birthday search: a few hundred thousand draws)."""
    rng, seen = random.Random(0), {}
    while True:
        x = f"{rng.getrandbits(96):024x}"
        h = zlib.crc32(x.encode())
        if h in seen:
            return seen[h], x
        seen[h] = x


def column(ids: list[str], packed: int) -> tuple[IdColumn, np.ndarray]:
    """The first ``packed`` ids folded, the rest recent; every row live."""
    col = IdColumn()
    col.append(ids[:packed])
    col.adopt(col.folded(None))
    col.append(ids[packed:])
    return col, np.ones(len(ids), dtype=bool)


def test_lookups_and_row_ids_across_packed_and_recent_rows():
    ids = [f"id{i}" for i in range(10)] + ["é-字", "tab\tid", "line\nbreak"]
    col, live = column(ids, 7)
    assert (col.n_packed, col.n_recent, len(col)) == (7, 6, 13)
    assert [col[r] for r in range(13)] == ids
    assert col.find([*reversed(ids), "missing", "id1"], live) == [*range(12, -1, -1), -1, 1]


def test_dead_rows_are_not_found_and_an_id_can_come_back_in_a_later_row():
    col, live = column([f"id{i}" for i in range(6)], 4)
    live[[1, 5]] = False
    col.forget([1, 5])
    assert col.find(["id1", "id5", "id2"], live) == [-1, -1, 2]
    col.append(["id1", "id5"])  # re-inserted: rows 6 and 7
    live = np.append(live, [True, True])
    assert col.find(["id1", "id5"], live) == [6, 7]
    packed = col.folded(live)  # the dead recent row 5 is packed with an empty id
    col.adopt(packed)
    assert col.n_recent == 0 and col[5] == "" and col[1] == "id1"  # a dead packed row keeps its bytes
    assert col.find(["id1", "id5", "id0"], live) == [6, 7, 0]


def test_ids_sharing_a_hash_are_told_apart():
    a, b = crc_collision()
    col, live = column([a, "x", b, "y"], 4)
    assert col.find([b, a], live) == [2, 0]
    live[0] = False
    assert col.find([a, b], live) == [-1, 2]


def test_a_fold_is_refused_once_rows_were_added_after_it():
    col, live = column(["a", "b"], 0)
    packed = col.folded(live)
    col.append(["c"])
    with pytest.raises(RuntimeError, match="cover 2 rows"):
        col.adopt(packed)


def test_the_packed_form_round_trips_through_its_text_and_hash_index():
    ids = [f"item-{i:05d}" for i in range(3000)]
    col, live = column(ids, 2000)
    col.adopt(col.folded(live))
    packed = col.packed
    text = packed.text()
    assert text is not None and bytes(text) == "\n".join(ids).encode()
    loaded = IdColumn(PackedIds.from_text(bytes(text), 3000, (packed.hashes, packed.rows)))
    rebuilt = IdColumn(PackedIds.from_text(bytes(text), 3000, None))  # a snapshot without an index
    for c in (loaded, rebuilt):
        assert c.find(ids[::7], live) == list(range(0, 3000, 7))
    with pytest.raises(ValueError, match="3000 ids"):
        PackedIds.from_text(bytes(text), 2999, None)
    newline, _ = column(["a\nb", "c"], 2)
    assert newline.packed.text() is None  # ids.txt cannot hold it: the snapshot writes a list


def test_compacted_keeps_the_rows_asked_for_renumbered():
    ids = [f"id{i}" for i in range(8)]
    col, live = column(ids, 5)
    out = col.compacted(np.array([0, 3, 6, 7]))
    assert out.n_recent == 0 and [out[r] for r in range(4)] == ["id0", "id3", "id6", "id7"]
    assert out.find(["id6", "id1"], np.ones(4, dtype=bool)) == [2, -1]
