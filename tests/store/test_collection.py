"""Collection behaviour through the public interface: writes, reads, validation, exact search, filters."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from embedserve.errors import AlreadyExists, InvalidArgument, NotFound
from embedserve.store import CollectionSpec, Hit, Store, StoredItem, UpsertResult
from embedserve.store import collection as collection_module
from embedserve.store import ids as ids_module
from embedserve.store import store as store_module
from tests.store.conftest import brute_force, ids_for, random_vectors, spec, upsert_plain

# Every behaviour here holds for both backends: the embedded FAISS store and Milvus (Lite, from
# PyPI). Tests of the embedded store's own machinery (its locks, its files) take ``faiss_store``.


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    return str(tmp_path_factory.mktemp("milvus") / "lite.db")


@pytest.fixture(params=["faiss", "milvus"])
def store(request, data_dir):
    if request.param == "faiss":
        s = Store(data_dir)
    else:
        from embedserve.store.milvus import MilvusStore

        s = MilvusStore(request.getfixturevalue("milvus_uri"))
    s.open()
    yield s
    if request.param == "milvus" and not s._closed:  # one Lite file per module: leave it empty
        for name in [c.spec.name for c in s.list()]:
            s.delete(name)
    s.close()
    if request.param == "milvus":
        cleaner = type(s)(s.uri)
        for name in [c.spec.name for c in cleaner.list()]:
            cleaner.delete(name)
        cleaner.close()


@pytest.fixture
def faiss_store(data_dir):
    s = Store(data_dir)
    s.open()
    yield s
    s.close()


def reopen(store):
    """A new store over the same data (a restart, as far as the backend is concerned)."""
    store.close()
    return Store(store.data_dir) if isinstance(store, Store) else type(store)(store.uri)


# --- round trip ------------------------------------------------------------------------------


def test_upsert_get_replace_delete_round_trip(store):
    c = store.create(spec(dim=4))
    v = random_vectors(3, 4)
    assert c.upsert(["a", "b", "c"], v, ["x", None, "y"], [{"k": "1"}, {}, {"k": "3"}]) == UpsertResult(3, 0)

    items = c.get(["c", "a"], include_vector=True)
    assert [i.id for i in items] == ["c", "a"]
    assert items[0].label == "y" and items[0].metadata == {"k": "3"}
    np.testing.assert_array_equal(items[1].vector, v[0])
    assert c.get(["b"]) == [StoredItem(id="b", label=None, metadata={}, vector=None)]

    # replace one, insert one
    w = random_vectors(2, 4, seed=1)
    assert c.upsert(["b", "d"], w, ["z", None], [{"n": "2"}, {}]) == UpsertResult(1, 1)
    b = c.get(["b"], include_vector=True)[0]
    assert (b.label, b.metadata) == ("z", {"n": "2"})
    np.testing.assert_array_equal(b.vector, w[0])
    np.testing.assert_array_equal(c.vectors_of(["d", "a"]), np.stack([w[1], v[0]]))
    assert c.stats().count == 4 and c.stats().labelled_count == 3

    assert c.delete(["a", "b"]) == 2
    with pytest.raises(NotFound, match=r"item 0: id 'a' not found in collection 'c'"):
        c.get(["a"])
    assert c.delete(["a", "c"], allow_missing=True) == 1
    assert c.stats().count == 1
    assert [h.id for h in c.search(w[1:2], 5)[0]] == ["d"]


def test_cosine_vectors_are_stored_normalised(store):
    c = store.create(spec(dim=3, metric="cosine"))
    upsert_plain(c, ["a"], np.array([[3.0, 0.0, 4.0]]))
    np.testing.assert_allclose(c.vectors_of(["a"]), [[0.6, 0.0, 0.8]], rtol=1e-6)


def test_returned_metadata_is_a_copy(store):
    c = store.create(spec(dim=2))
    meta = {"k": "v"}
    upsert_plain(c, ["a"], np.ones((1, 2)), metadata=[meta])
    meta["k"] = "changed"
    got = c.get(["a"])[0].metadata
    got["k"] = "changed too"
    assert c.get(["a"])[0].metadata == {"k": "v"}


def test_store_create_get_list_delete(store):
    store.create(spec("b"))
    store.create(spec("a"))
    assert [c.spec.name for c in store.list()] == ["a", "b"]
    assert store.get("a").spec.created_at > 0
    with pytest.raises(AlreadyExists):
        store.create(spec("a"))
    old = store.get("a")
    store.delete("a")
    with pytest.raises(NotFound, match="collection 'a' not found"):
        store.get("a")
    with pytest.raises(NotFound):
        old.search(np.ones((1, 8)), 1)
    with pytest.raises(NotFound):
        store.delete("a")
    assert store.create(spec("a")).stats().count == 0  # the name is free again


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(name="has space"), "name"),
        (dict(name=""), "name"),
        (dict(name="x" * 65), "name"),
        (dict(metric="hamming"), "metric"),
        (dict(dim=0), "dim"),
        (dict(index_spec="Bogus"), "'Bogus' is not one the store supports"),
        (dict(index_spec="IVF4,PQ3", dim=8), "multiple of the number of subquantizers"),
        (dict(index_spec="IDMap,Flat"), "not supported"),
        (dict(index_spec="IVF64,Flat", train_size=10), "below the 64 centroids"),
    ],
)
def test_create_rejects_bad_specs(store, bad, match):
    fields = dict(name="ok", model="m", dim=8, metric="l2", index_spec="Flat") | bad
    with pytest.raises(InvalidArgument, match=match):
        store.create(CollectionSpec(**fields))
    assert store.list() == []
    if isinstance(store, Store):
        assert not any(store.data_dir.joinpath("collections").iterdir())


def _bad_batches(dim: int):
    ok = random_vectors(3, dim)
    nan = ok.copy()
    nan[2, 1] = np.nan
    inf = ok.copy()
    inf[1, 0] = np.inf
    zero = ok.copy()
    zero[1] = 0
    ids = ["a", "b", "c"]
    return [
        (ids, ok[:, :3], r"item 0: vector has dimension 3, collection 'c' expects 4", "l2"),
        (ids, [ok[0], ok[1, :3], ok[2]], r"item 1: vector has dimension 3, collection 'c' expects 4", "l2"),
        (ids, nan, r"item 2: vector contains NaN or Inf", "l2"),
        (ids, inf, r"item 1: vector contains NaN or Inf", "ip"),
        (ids, zero, r"item 1: .*zero", "cosine"),
        (["a", "", "c"], ok, r"item 1: id is empty", "l2"),
        (["a", "b", "x" * 257], ok, r"item 2: id is 257 bytes", "l2"),
        (["a", "b", "é" * 129], ok, r"item 2: id is 258 bytes", "l2"),
        (["a", "b", "a"], ok, r"item 2: id 'a' also appears at item 0", "l2"),
        (["a", "b"], ok, r"same length", "l2"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_bad_upsert_writes_nothing(store, case):
    ids, vectors, match, metric = _bad_batches(4)[case]
    c = store.create(spec(dim=4, metric=metric))
    upsert_plain(c, ["keep"], np.ones((1, 4)))
    n = len(ids)
    with pytest.raises(InvalidArgument, match=match):
        c.upsert(ids, vectors, [None] * n, [{}] * n)
    assert c.stats().count == 1
    with pytest.raises(NotFound):
        c.get(["a"])
    # and nothing reached the log: a reopened store has the same single item
    reopened = reopen(store)
    assert reopened.get("c").stats().count == 1
    reopened.close()


def test_bad_labels_and_metadata(store):
    c = store.create(spec(dim=2))
    with pytest.raises(InvalidArgument, match="item 1: label"):
        c.upsert(["a", "b"], np.ones((2, 2)), [None, 5], [{}, {}])
    with pytest.raises(InvalidArgument, match="item 0: metadata"):
        c.upsert(["a", "b"], np.ones((2, 2)), [None, None], [{"k": 1}, {}])
    assert c.stats().count == 0


def test_empty_batches_are_no_ops(store):
    c = store.create(spec(dim=4))
    assert c.upsert([], np.empty((0, 4), np.float32), [], []) == UpsertResult(0, 0)
    assert c.delete([]) == 0
    assert c.search(np.empty((0, 4)), 3) == []
    assert c.search(np.ones((2, 4)), 3) == [[], []]


def test_unknown_ids_are_not_found_with_their_index(store):
    c = store.create(spec(dim=2))
    upsert_plain(c, ["a", "b"], np.ones((2, 2)))
    with pytest.raises(NotFound, match=r"item 2: id 'zz' not found in collection 'c'"):
        c.vectors_of(["a", "b", "zz"])
    with pytest.raises(NotFound, match=r"item 1: id 'zz'"):
        c.delete(["a", "zz"])
    assert c.stats().count == 2  # a failed delete deletes nothing


def test_search_validation(store):
    c = store.create(spec(dim=4))
    upsert_plain(c, ["a"], np.ones((1, 4)))
    q = np.ones((2, 4), np.float32)
    for k in (0, 1025, -1):
        with pytest.raises(InvalidArgument, match="k must be in 1..1024"):
            c.search(q, k)
    with pytest.raises(InvalidArgument, match=r"query 0: vector has dimension 3, collection 'c' expects 4"):
        c.search(q[:, :3], 1)
    bad = q.copy()
    bad[1, 2] = np.nan
    with pytest.raises(InvalidArgument, match=r"query 1: vector contains NaN or Inf"):
        c.search(bad, 1)
    with pytest.raises(InvalidArgument, match="exclude"):
        c.search(q, 1, exclude=["a"])


# --- exact search ----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_flat_search_matches_brute_force(store, metric):
    base, queries = random_vectors(500, 32, seed=1), random_vectors(25, 32, seed=2)
    c = store.create(spec(dim=32, metric=metric))
    ids = ids_for(500)
    upsert_plain(c, ids, base)
    want_scores, want_rows = brute_force(base, queries, 10, metric)
    hits = c.search(queries, 10)
    assert [[h.id for h in row] for row in hits] == [[ids[r] for r in row] for row in want_rows]
    np.testing.assert_allclose([[h.score for h in row] for row in hits], want_scores, rtol=1e-4, atol=1e-4)
    # fewer items than k: all of them, no padding
    assert len(c.search(queries[:1], 1024)[0]) == 500


def test_label_filter_labelled_only_and_exclude(store):
    base = random_vectors(300, 16, seed=3)
    labels = [("even" if i % 2 == 0 else "odd") if i % 3 else None for i in range(300)]
    ids = ids_for(300)
    c = store.create(spec(dim=16, metric="cosine"))
    upsert_plain(c, ids, base, labels=labels)
    queries = random_vectors(5, 16, seed=4)

    allowed = [i for i in range(300) if labels[i] == "even"]
    hits = c.search(queries, 20, labels={"even", "no-such-label"})
    _, want = brute_force(base[allowed], queries, 20, "cosine")
    assert [[h.id for h in row] for row in hits] == [[ids[allowed[r]] for r in row] for row in want]
    assert all(h.label == "even" for row in hits for h in row)

    hits = c.search(queries, 20, labelled_only=True)
    assert all(len(row) == 20 and all(h.label is not None for h in row) for row in hits)
    labelled = [i for i in range(300) if labels[i] is not None]
    _, want = brute_force(base[labelled], queries, 20, "cosine")
    assert [[h.id for h in row] for row in hits] == [[ids[labelled[r]] for r in row] for row in want]

    assert c.search(queries, 5, labels={"no-such-label"}) == [[]] * 5

    # exclude: search by the stored vector of an item leaves that item out and still returns k
    q = c.vectors_of(["id7", "id8"])
    plain = c.search(q, 10)
    assert plain[0][0].id == "id7"
    hits = c.search(q, 10, exclude=["id7", None])
    assert [h.id for h in hits[0]] == [h.id for h in plain[0][1:]] + [hits[0][-1].id]
    assert len(hits[0]) == 10 and "id7" not in [h.id for h in hits[0]]
    assert hits[1] == plain[1]


def test_deleted_and_replaced_items_never_come_back(store):
    c = store.create(spec(dim=8, metric="l2"))
    base = random_vectors(100, 8)
    upsert_plain(c, ids_for(100), base)
    c.delete(ids_for(10))  # 10 % tombstones: below the rebuild threshold
    upsert_plain(c, ["id10"], base[50:51] + 100)  # replaced: old vector must not match any more
    hits = c.search(base[:11], 100)
    for row in hits:
        got = [h.id for h in row]
        assert len(got) == 90 and len(set(got)) == 90
        assert not set(got) & set(ids_for(10))
    assert c.search(base[10:11], 1)[0][0].id != "id10"


def test_hits_carry_label_and_metadata(store):
    c = store.create(spec(dim=2))
    c.upsert(["a"], np.array([[1.0, 0.0]]), ["cat"], [{"src": "x"}])
    assert c.search(np.array([[1.0, 0.0]]), 1) == [
        [Hit(id="a", score=0.0, label="cat", metadata={"src": "x"})]
    ]


def test_concurrent_writers_and_readers(store):
    """Many threads upserting (group commit) while others search: every write lands, no errors."""
    c = store.create(spec(dim=8))
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for b in range(10):
                upsert_plain(c, ids_for(20, b * 20, prefix=f"t{t}-"), random_vectors(20, 8, seed=t * 100 + b))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def reader() -> None:
        try:
            for _ in range(30):
                for row in c.search(random_vectors(4, 8), 5):
                    assert len({h.id for h in row}) == len(row)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert c.stats().count == 6 * 200


def test_ids_are_packed_as_writes_go_on_while_searches_and_gets_read_them(faiss_store, monkeypatch):
    """The recent rows' ids are folded into the packed form once they pass its threshold, beside
    searches and gets; every stored id stays found, every deleted one gone."""
    monkeypatch.setattr(ids_module, "FOLD_MIN_ROWS", 50)
    c = faiss_store.create(spec(dim=8))
    stop, errors = threading.Event(), []
    kept: set[str] = set()

    def reader() -> None:
        try:
            while not stop.is_set():
                for row in c.search(random_vectors(2, 8), 5):
                    assert len({h.id for h in row}) == len(row) and all(h.id.startswith("w") for h in row)
                some = sorted(kept)[:20]
                assert [x.id for x in c.get(some)] == some
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    folds = 0
    for b in range(30):
        batch = ids_for(40, b * 40, prefix="w")
        upsert_plain(c, batch, random_vectors(40, 8, seed=b))
        c.delete(batch[:5])
        kept.update(batch[5:])
        ids = c._table.id_column
        folds += ids.n_recent == 0
        assert ids.n_recent <= max(50, 0.25 * ids.n_packed) + 40
    stop.set()
    for t in threads:
        t.join()
    assert not errors and folds >= 3
    assert {x.id for x in c.get(sorted(kept))} == kept
    assert c.get(ids_for(5, 0, prefix="w"), allow_missing=True) == []
    assert c.stats().count == len(kept)


# --- the registry never waits for slow work ---------------------------------------------------


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _prompt(fn, timeout: float = 2.0):
    """fn()'s result (or exception) from another thread; fails if it takes longer than ``timeout``."""
    out: list = []

    def run() -> None:
        try:
            out.append(("ok", fn()))
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            out.append(("err", err))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    kind, value = out[0]
    if kind == "err":
        raise value
    return value


def test_delete_waiting_for_a_busy_collection_does_not_block_get(faiss_store):
    busy = faiss_store.create(spec("busy"))
    other = faiss_store.create(spec("other"))
    busy._write_mutex.acquire()  # stands in for a long snapshot, training or rebuild on 'busy'
    deleter = threading.Thread(target=faiss_store.delete, args=("busy",), daemon=True)
    try:
        deleter.start()
        _wait_until(lambda: "busy" not in faiss_store._collections)  # delete has started: now waits on 'busy'
        assert _prompt(lambda: faiss_store.get("other")) is other
        assert _prompt(lambda: [c.spec.name for c in faiss_store.list()]) == ["other"]
        with pytest.raises(NotFound):
            _prompt(lambda: faiss_store.get("busy"))
        with pytest.raises(AlreadyExists):  # the name stays taken until its directory is gone
            _prompt(lambda: faiss_store.create(spec("busy")))
        assert deleter.is_alive()
    finally:
        busy._write_mutex.release()
        deleter.join(10)
    assert not deleter.is_alive()
    assert sorted(p.name for p in (faiss_store.data_dir / "collections").iterdir()) == ["other"]
    assert faiss_store.create(spec("busy")).stats().count == 0


def test_create_does_its_disk_work_outside_the_registry_lock(faiss_store, monkeypatch):
    other = faiss_store.create(spec("other"))
    entered, release = threading.Event(), threading.Event()
    real = store_module.write_durably

    def slow_write(path, data):
        entered.set()
        release.wait(10)
        real(path, data)

    monkeypatch.setattr(store_module, "write_durably", slow_write)
    creator = threading.Thread(target=faiss_store.create, args=(spec("new"),), daemon=True)
    try:
        creator.start()
        assert entered.wait(5)
        assert _prompt(lambda: faiss_store.get("other")) is other
        with pytest.raises(AlreadyExists, match="collection 'new' already exists"):
            _prompt(lambda: faiss_store.create(spec("new")))  # a concurrent duplicate is refused, not raced
        with pytest.raises(NotFound):
            _prompt(lambda: faiss_store.get("new"))  # not there until created
    finally:
        release.set()
        creator.join(10)
    assert faiss_store.get("new").spec.name == "new"
    assert [c.spec.name for c in faiss_store.list()] == ["new", "other"]


@pytest.mark.parametrize("name", ["has space", "", "x" * 65, "../etc", "a/b", 5])
def test_invalid_names_are_invalid_argument_for_get_and_delete(store, name):
    with pytest.raises(InvalidArgument) as created:
        store.create(CollectionSpec(name=name, model="m", dim=4, metric="l2"))
    for call in (store.get, store.delete):
        with pytest.raises(InvalidArgument) as err:
            call(name)
        assert str(err.value) == str(created.value)


def test_a_filter_every_row_passes_is_no_filter(faiss_store):
    """labelled_only on a fully labelled collection takes the unfiltered path (issue 10: it went
    through an IDSelector, off FAISS's BLAS path), and answers the same."""
    c = faiss_store.create(spec(dim=8))
    upsert_plain(c, ids_for(50), random_vectors(50, 8), labels=[str(i % 3) for i in range(50)])
    table = c._table
    assert table.filter_mask(None, True) == (None, False)
    assert table.filter_mask({"0", "1", "2"}, False) == (None, False)
    mask, filtered = table.filter_mask({"0"}, False)
    assert filtered and int(mask.sum()) == 17
    q = random_vectors(4, 8, seed=5)
    assert [[h.id for h in row] for row in c.search(q, 5, labelled_only=True)] == [
        [h.id for h in row] for row in c.search(q, 5)
    ]
    c.delete(ids_for(5))
    mask, filtered = table.filter_mask(None, True)
    assert not filtered and int(mask.sum()) == 45  # only tombstones hidden
    upsert_plain(c, ["unlabelled"], random_vectors(1, 8, seed=6))
    mask, filtered = c._table.filter_mask(None, True)
    assert filtered and int(mask.sum()) == 45


# --- labels and predictions ------------------------------------------------------------------


def test_predictions_land_only_on_the_content_they_were_made_for(store):
    c = store.create(spec(dim=4))
    c.upsert(ids_for(5), random_vectors(5, 4), [None] * 5, [{}] * 5)
    view = c.labelling_view()
    made_for = (view.serials, view.version)
    c.upsert(["id1"], random_vectors(1, 4, seed=9), [None], [{}])  # new content since the view
    c.delete(["id2"])
    n = c.set_predictions(view.ids, ["p"] * 5, np.full(5, 0.5), made_for=made_for)
    assert n == 3
    got = {i.id: i for i in c.get(["id0", "id1", "id3", "id4"])}
    assert got["id0"].predicted_label == "p" and got["id0"].confidence == 0.5
    assert got["id1"].predicted_label is None  # replaced: its prediction was for the old vector
    # nothing changed since a fresh view: every prediction is written
    view = c.labelling_view()
    assert c.set_predictions(view.ids, ["q"] * 4, np.ones(4), made_for=(view.serials, view.version)) == 4


def test_set_labels_is_all_or_nothing_and_a_prediction_never_changes_a_label(store):
    c = store.create(spec(dim=4))
    c.upsert(ids_for(3), random_vectors(3, 4), ["a", None, None], [{}] * 3)
    with pytest.raises(NotFound, match="assignment 1: id 'nope'"):
        c.set_labels(["id1", "nope"], ["b", "b"])
    assert c.get(["id1"])[0].label is None
    with pytest.raises(InvalidArgument, match="assignment 1: id 'id1' also appears at assignment 0"):
        c.set_labels(["id1", "id1"], ["b", "c"])
    result = c.set_labels(["id0", "id1", "id2"], [None, "b", ""])
    assert (result.labelled, result.cleared, result.unchanged) == (1, 1, 1)
    c.set_predictions(["id0", "id1"], ["z", "z"], np.array([0.9, 0.8]))
    assert [(i.label, i.predicted_label) for i in c.get(ids_for(3))] == [
        (None, "z"),
        ("b", "z"),
        (None, None),
    ]
    assert c.stats().labelled_count == 1 and c.stats().predicted_count == 2
    hits = c.search(random_vectors(1, 4), 3, predicted={"z"}, min_confidence=0.85)[0]
    assert [h.id for h in hits] == ["id0"] and hits[0].predicted_label == "z"


def test_search_now_answers_cheap_searches_at_once_and_never_waits(store):
    c = store.create(spec("now", dim=16))
    x = random_vectors(300, 16)
    upsert_plain(c, ids_for(300), x, labels=[f"l{i % 3}" for i in range(300)])
    q = random_vectors(2, 16, seed=1)
    now = c.search_now(q, 5, labels={"l1"}, exclude=["id1", None])
    if c.backend == "milvus":
        assert now is None  # a network call: always the search pool
        return
    assert now == c.search(q, 5, labels={"l1"}, exclude=["id1", None])
    with pytest.raises(InvalidArgument):
        c.search_now(q[:, :8], 5)  # bad input raises, as from search
    # a writer holding (or waiting for) the collection: nothing is done rather than wait
    c._rw._writers_waiting += 1
    try:
        assert _prompt(lambda: c.search_now(q, 5)) is None
    finally:
        c._rw._writers_waiting -= 1
    assert c.search_now(q, 5) is not None
    # more work than INLINE_SEARCH_FLOPS: the pool's
    many = np.repeat(q, 1 + collection_module.INLINE_SEARCH_FLOPS // (300 * 16), axis=0)
    assert c.search_now(many, 5) is None
