"""Approximate and trained index types: recall, training, search params, tombstones and rebuilds."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from embedserve.store import Store
from embedserve.store import search as search_module
from tests.store.conftest import brute_force, clustered, ids_for, random_vectors, spec, upsert_plain

N, DIM = 20_000, 64


@pytest.fixture(scope="module")
def data():
    base = clustered(N, DIM, clusters=50, seed=0)
    rng = np.random.default_rng(1)  # queries: perturbed copies of stored points, so near the same clusters
    queries = base[rng.choice(N, 200, replace=False)] + 0.1 * rng.standard_normal((200, DIM)).astype(
        np.float32
    )
    _, truth = brute_force(base, queries, 10, "l2")
    return base, queries.astype(np.float32), truth


def _recall(hits, truth, ids) -> float:
    found = sum(
        len({h.id for h in row} & {ids[r] for r in want}) for row, want in zip(hits, truth, strict=True)
    )
    return found / truth.size


@pytest.mark.parametrize(
    "index_spec, params", [("IVF64,Flat", dict(nprobe=8)), ("HNSW32", dict(ef_search=64))]
)
def test_approximate_recall_on_clustered_data(store, data, index_spec, params):
    base, queries, truth = data
    c = store.create(spec(dim=DIM, metric="l2", index_spec=index_spec))
    ids = ids_for(N)
    for start in range(0, N, 5000):  # several batches: training happens part-way through
        upsert_plain(c, ids[start : start + 5000], base[start : start + 5000])
    assert c.stats().trained
    hits = c.search(queries, 10, **params)
    assert all(len(row) == 10 for row in hits)
    assert _recall(hits, truth, ids) >= 0.95


def test_nprobe_changes_ivf_results(store, data):
    base, queries, truth = data
    c = store.create(spec(dim=DIM, index_spec="IVF64,Flat"))
    ids = ids_for(N)
    upsert_plain(c, ids, base)
    low = _recall(c.search(queries, 10, nprobe=1), truth, ids)
    high = _recall(c.search(queries, 10, nprobe=64), truth, ids)
    assert high == 1.0 and low < high
    # ef_search does not apply to IVF and is ignored
    assert _recall(c.search(queries, 10, nprobe=64, ef_search=5), truth, ids) == 1.0


def test_untrained_ivf_is_exact_then_trains(store):
    base = random_vectors(1200, 16, seed=5)
    c = store.create(spec(dim=16, metric="ip", index_spec="IVF16,Flat"))
    st = c.stats()
    assert (st.trained, st.train_size) == (False, 1000)  # max(1000, 39 * 16)
    ids = ids_for(1200)
    upsert_plain(c, ids[:999], base[:999])
    assert not c.stats().trained
    queries = random_vectors(10, 16, seed=6)
    _, want = brute_force(base[:999], queries, 10, "ip")
    assert [[h.id for h in row] for row in c.search(queries, 10, nprobe=1)] == [
        [ids[r] for r in row] for row in want
    ]
    upsert_plain(c, ids[999:1200], base[999:1200])
    st = c.stats()
    assert st.trained and st.count == 1200
    hits = c.search(queries, 10, nprobe=16)  # all lists probed: exact again
    _, want = brute_force(base, queries, 10, "ip")
    assert [[h.id for h in row] for row in hits] == [[ids[r] for r in row] for row in want]


def test_explicit_train_size_and_pq_auto_size(store):
    c = store.create(spec("a", dim=16, index_spec="IVF8,Flat", train_size=50))
    upsert_plain(c, ids_for(50), random_vectors(50, 16))
    assert c.stats().trained and c.stats().train_size == 50
    assert store.create(spec("b", dim=16, index_spec="IVF8,PQ4")).stats().train_size == 39 * 256
    assert store.create(spec("d", dim=16, index_spec="HNSW16")).stats().trained


@pytest.mark.parametrize(
    "index_spec", ["HNSW16", "IVF8,Flat", "PCA8,IVF8,Flat", "IVF8,PQ4x4", "PQ4x4", "SQ8"]
)
def test_deleted_ids_never_appear(store, index_spec):
    """Tombstones work for every type, including those with no remove_ids (HNSW) or no IDSelector (PQ)."""
    base = clustered(3000, 16, clusters=10, seed=7)
    c = store.create(spec(dim=16, index_spec=index_spec))
    ids = ids_for(3000)
    upsert_plain(c, ids, base)
    assert c.stats().trained
    gone = set(ids[::10])  # 10 %: stays as tombstones
    c.delete(sorted(gone))
    for row in c.search(base[::10][:50], 50, nprobe=8):
        assert len(row) == 50 and not {h.id for h in row} & gone
    more = set(ids[1::10]) | set(ids[2::10])  # now 30 %: triggers a rebuild from live rows
    c.delete(sorted(more))
    gone |= more
    assert c.stats().count == 2100
    for row in c.search(base[:60], 50, nprobe=8, labels=None):
        assert len(row) == 50 and not {h.id for h in row} & gone
    # the survivors are still found
    kept = [i for i in range(3000) if ids[i] not in gone][:20]
    hits = c.search(base[kept], 1, nprobe=8, ef_search=64)
    assert sum(row[0].id == ids[i] for row, i in zip(hits, kept, strict=True)) >= 18


@pytest.mark.parametrize("index_spec", ["PQ4x4", "IVF8,Flat,RFlat"])
def test_types_without_selectors_still_filter(store, index_spec):
    """PQ and refine indexes take no IDSelector: a filtered search falls back to exact search."""
    base = clustered(1500, 16, clusters=10, seed=9)
    labels = [str(i % 3) for i in range(1500)]
    ids = ids_for(1500)
    c = store.create(spec(dim=16, index_spec=index_spec))
    upsert_plain(c, ids, base, labels=labels)
    assert c.stats().trained
    queries = base[:5]
    allowed = [i for i in range(1500) if labels[i] == "2"]
    _, want = brute_force(base[allowed], queries, 10, "l2")
    hits = c.search(queries, 10, labels={"2"})
    assert [[h.id for h in row] for row in hits] == [[ids[allowed[r]] for r in row] for row in want]
    c.delete(ids[1:100])  # tombstones only: over-fetched past, never returned
    for row in c.search(queries, 10):
        assert len(row) == 10 and not {h.id for h in row} & set(ids[1:100])


def test_hnsw_label_filter_returns_k(store):
    base = clustered(4000, 16, clusters=10, seed=8)
    labels = [str(i % 4) for i in range(4000)]
    c = store.create(spec(dim=16, metric="cosine", index_spec="HNSW16"))
    upsert_plain(c, ids_for(4000), base, labels=labels)
    for row in c.search(base[:20], 30, labels={"3"}, ef_search=64):
        assert len(row) == 30 and all(h.label == "3" for h in row)


def test_rebuild_keeps_content_across_reopen(data_dir):
    s = Store(data_dir)
    c = s.create(spec(dim=8, index_spec="HNSW8"))
    base = random_vectors(500, 8)
    upsert_plain(c, ids_for(500), base, labels=[str(i % 3) for i in range(500)])
    c.delete(ids_for(200))  # 40 %: rebuilt
    s.close()
    c = Store(data_dir).get("c")
    assert c.stats().count == 300 and c.stats().labelled_count == 300
    got = c.get(ids_for(300, 200), include_vector=True)
    np.testing.assert_array_equal(np.stack([g.vector for g in got]), base[200:])
    assert [g.label for g in got] == [str(i % 3) for i in range(200, 500)]


@pytest.mark.gpu
@pytest.mark.skipif(
    not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0, reason="needs FAISS with a GPU"
)
def test_gpu_search_matches_cpu(data_dir):
    base, queries = random_vectors(5000, 32, seed=9), random_vectors(20, 32, seed=10)
    s = Store(data_dir, use_gpu=True)
    c = s.create(spec(dim=32, metric="cosine"))
    ids = ids_for(5000)
    upsert_plain(c, ids, base)
    c.delete(ids[:100])  # tombstones: the GPU path over-fetches and drops them
    assert c.stats().gpu
    _, want = brute_force(base[100:], queries, 10, "cosine")
    assert [[h.id for h in row] for row in c.search(queries, 10)] == [
        [ids[100 + r] for r in row] for row in want
    ]
    # filtered searches go to the CPU index and still respect the filter
    assert c.search(queries, 5, labels={"none"}) == [[]] * 20
    s.close()


# --- restricted searches return k hits whenever k items qualify ---------------------------------


def _ids_of(hits) -> list[list[str]]:
    return [[h.id for h in row] for row in hits]


@pytest.mark.parametrize("index_spec, train_size", [("HNSW32", 0), ("IVF16,Flat", 1000)])
def test_selective_filters_return_k_exact_hits(store, index_spec, train_size):
    """25 of 5000 items qualify: k=20 gives exactly the 20 nearest of them, by label or labelled_only."""
    base = random_vectors(5000, 16, seed=12)
    ids = ids_for(5000)
    rare = list(range(0, 5000, 200))
    queries = base[:5]
    _, want = brute_force(base[rare], queries, 20, "l2")
    want_ids = [[ids[rare[r]] for r in row] for row in want]

    by_label = store.create(spec("by_label", dim=16, index_spec=index_spec, train_size=train_size))
    upsert_plain(by_label, ids, base, labels=["rare" if i % 200 == 0 else "common" for i in range(5000)])
    assert by_label.stats().trained
    hits = by_label.search(queries, 20, labels={"rare"})
    assert _ids_of(hits) == want_ids
    assert all(h.label == "rare" for row in hits for h in row)

    labelled = store.create(spec("labelled", dim=16, index_spec=index_spec, train_size=train_size))
    upsert_plain(labelled, ids, base, labels=["rare" if i % 200 == 0 else None for i in range(5000)])
    hits = labelled.search(queries, 20, labelled_only=True)
    assert _ids_of(hits) == want_ids
    # fewer qualify than asked: all of them
    assert [len(row) for row in labelled.search(queries, 100, labelled_only=True)] == [25] * 5


def test_short_index_answers_are_redone_exactly(store):
    """A filter too broad for the exact path whose rows lie away from the query's IVF lists: nprobe=1
    finds none of them, so the query is redone exactly."""
    rng = np.random.default_rng(13)
    near = rng.standard_normal((17_000, 16)).astype(np.float32)
    far = (10 + rng.standard_normal((3_000, 16))).astype(np.float32)  # 15 % of rows: above 2048 and 5 %
    base = np.vstack([near, far])
    ids = ids_for(len(base))
    labels = [None] * len(near) + ["far"] * len(far)
    c = store.create(spec(dim=16, index_spec="IVF16,Flat"))
    upsert_plain(c, ids, base, labels=labels)
    assert c.stats().trained
    queries = near[:8]
    _, want = brute_force(far, queries, 20, "l2")
    want_ids = [[ids[len(near) + r] for r in row] for row in want]
    assert _ids_of(c.search(queries, 20, labels={"far"}, nprobe=1)) == want_ids
    assert _ids_of(c.search(queries, 20, labelled_only=True, nprobe=1)) == want_ids


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_filtered_search_merges_chunks(store, monkeypatch, metric):
    monkeypatch.setattr(search_module, "EXACT_CHUNK_BYTES", 4 * 16 * 100)  # 100 rows per chunk
    base = random_vectors(3000, 16, seed=16)
    labels = [str(i % 3) for i in range(3000)]
    ids = ids_for(3000)
    c = store.create(spec(dim=16, metric=metric))
    upsert_plain(c, ids, base, labels=labels)
    allowed = [i for i in range(3000) if labels[i] == "1"]
    queries = random_vectors(7, 16, seed=17)
    want_scores, want = brute_force(base[allowed], queries, 30, metric)
    hits = c.search(queries, 30, labels={"1"})
    assert _ids_of(hits) == [[ids[allowed[r]] for r in row] for row in want]
    np.testing.assert_allclose([[h.score for h in row] for row in hits], want_scores, rtol=1e-4, atol=1e-4)


def test_few_tombstones_search_flat_without_a_selector(store, monkeypatch):
    """Up to 1024 tombstones: over-fetch and drop (a selector makes Flat ~3x slower); more: a selector.
    Exact either way."""
    selectors = []
    real = faiss.IDSelectorBitmap
    monkeypatch.setattr(faiss, "IDSelectorBitmap", lambda *a: selectors.append(a) or real(*a))
    base = random_vectors(10_000, 16, seed=14)
    ids = ids_for(10_000)
    c = store.create(spec(dim=16, metric="ip"))
    upsert_plain(c, ids, base)
    queries = random_vectors(10, 16, seed=15)

    def check(n_dead: int) -> None:
        live = list(range(n_dead, 10_000))
        _, want = brute_force(base[live], queries, 10, "ip")
        assert _ids_of(c.search(queries, 10)) == [[ids[live[r]] for r in row] for row in want]

    c.delete(ids[:1])
    check(1)
    c.delete(ids[1:1000])
    check(1000)
    assert selectors == []
    c.delete(ids[1000:1500])  # 15 %: still tombstones, but too many to over-fetch past
    check(1500)
    assert selectors
