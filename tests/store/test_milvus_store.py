"""What is particular to the Milvus backend (its shared behaviour is in test_collection.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from embedserve.errors import InvalidArgument
from embedserve.store.spec import CollectionSpec
from tests.store.conftest import ids_for, random_vectors, spec, upsert_plain

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from embedserve.store import milvus  # noqa: E402


def test_names_map_one_to_one_onto_what_milvus_allows():
    names = ["a", "a_b", "a-b", "a__b", "a_-b", "a-_b", "0", "_", "-", "x" * 64]
    mapped = [milvus.milvus_name(n) for n in names]
    assert len(set(mapped)) == len(names)
    assert all(m.startswith("es_") and m.replace("_", "").isalnum() for m in mapped)


@pytest.mark.parametrize(
    "index_spec, want",
    [
        ("Flat", ("FLAT", {})),
        ("HNSW32", ("HNSW", {"M": 32, "efConstruction": 40})),
        ("HNSW16,Flat", ("HNSW", {"M": 16, "efConstruction": 40})),
        ("IVF64,Flat", ("IVF_FLAT", {"nlist": 64})),
        ("IVF64,SQ8", ("IVF_SQ8", {"nlist": 64})),
        ("IVF64,PQ8", ("IVF_PQ", {"nlist": 64, "m": 8, "nbits": 8})),
    ],
)
def test_index_specs_map_to_milvus_index_types(index_spec, want):
    assert milvus.index_params(spec(index_spec=index_spec)) == want


def test_unmappable_specs_are_refused_before_anything_is_created(tmp_path):
    store = milvus.MilvusStore(str(tmp_path / "lite.db"))
    for bad in ("PQ8", "OPQ8,IVF64,PQ8", "LSH"):
        with pytest.raises(InvalidArgument, match="no Milvus equivalent"):
            store.create(CollectionSpec(name="x", model="m", dim=8, metric="l2", index_spec=bad))
    assert store.list() == []
    store.close()


def test_rows_are_sealed_by_a_background_flush_and_stay_searchable(tmp_path, monkeypatch):
    monkeypatch.setattr(milvus, "FLUSH_ROWS", 50)
    store = milvus.MilvusStore(str(tmp_path / "lite.db"))
    c = store.create(spec(dim=8, metric="l2"))
    base = random_vectors(200, 8)
    for start in range(0, 200, 40):
        upsert_plain(c, ids_for(40, start), base[start : start + 40])
    deadline = time.monotonic() + 30
    while c._flushing.locked():  # the last flush finishing
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert c._unflushed < 50
    hits = c.search(base[:5], 1)
    assert [row[0].id for row in hits] == ids_for(5)
    assert c.stats().count == 200
    np.testing.assert_array_equal(c.vectors_of(["id7"]), base[7:8])
    store.close()
