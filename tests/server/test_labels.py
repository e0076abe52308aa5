"""LabelService over a real server: suggest, set, propagate (with write-back), audit; typed errors;
labels and predictions durable across kill -9; long jobs never hold up searches."""

from __future__ import annotations

import signal
import threading

import grpc
import numpy as np

from embedserve.client import Client, item
from embedserve.metric import l2_normalize
from tests.conftest import ServerThread, make_config, start_subprocess_server, status_of

DIM = 16  # the tiny bundles' dim: raw vectors of this size go into any of their collections


def blobs(sizes, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((len(sizes), DIM)))
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    return l2_normalize(centres[cluster] + spread * rng.standard_normal((len(cluster), DIM))), cluster


def fill(client, name, x, labels=None):
    client.create_collection(name)
    for start in range(0, len(x), 5000):
        client.upsert(
            name,
            [
                item(f"i{i}", vector=x[i], label=None if labels is None else labels[i])
                for i in range(start, min(len(x), start + 5000))
            ],
        )


def test_a_labelling_session_from_no_labels_to_every_item_predicted(client):
    x, cluster = blobs([80, 60, 50, 40, 30])
    fill(client, "session", x)
    reply = client.suggest_labels("session", 5)
    assert reply.strategy == "typical"
    picked = [s.id for s in reply.suggestions]
    assert len(set(picked)) == 5
    assert sorted(cluster[int(i[1:])] for i in picked) == [0, 1, 2, 3, 4]  # every cluster once
    assert all(s.reason.startswith("typical:") for s in reply.suggestions)

    answer = {i: f"c{cluster[int(i[1:])]}" for i in picked}
    counts = client.set_labels("session", answer)
    assert (counts.labelled, counts.cleared, counts.unchanged) == (5, 0, 0)
    assert client.set_labels("session", answer).unchanged == 5

    for method in ("spread", "knn"):
        got = {p.id: p for p in client.propagate_labels("session", method)}
        assert len(got) == len(x) - 5 and not set(got) & set(picked)  # every unlabelled item, once
        assert all(p.label == f"c{cluster[int(i[1:])]}" for i, p in got.items())
        assert all(0 < p.margin <= p.confidence <= 1 for p in got.values())

    # the next suggestion, with labels for all five classes... still cold (one each): typical,
    # and none of the labelled items
    again = client.suggest_labels("session", 5)
    assert not {s.id for s in again.suggestions} & set(picked)
    info = client.describe_collection("session")
    assert info.labelled_count == 5 and info.predicted_count == 0


def test_write_back_is_searchable_and_never_touches_a_persons_label(client):
    x, cluster = blobs([40, 40], spread=0.25)  # close enough for one graph: confidences differ
    labels = [None] * 80
    labels[0], labels[40] = "left", "right"
    fill(client, "writeback", x, labels)
    progress = []
    got = list(
        client.propagate_labels("writeback", write_back=True, on_progress=lambda *p: progress.append(p))
    )
    assert len(got) == 78
    assert {stage for stage, _, _ in progress} >= {"graph", "spreading", "sending"}
    items = {s.id: s for s in client.get("writeback", [f"i{i}" for i in range(80)])}
    assert items["i0"].label == "left" and not items["i0"].HasField("predicted_label")
    assert not items["i5"].HasField("label") and items["i5"].predicted_label == "left"
    assert items["i45"].predicted_label == "right" and items["i45"].confidence > 0.5
    assert client.describe_collection("writeback").predicted_count == 78

    # a person labels an item that has a prediction: both are kept, each in its own field
    client.set_labels("writeback", {"i5": "mine"})
    got5 = client.get("writeback", ["i5"])[0]
    assert got5.label == "mine" and got5.predicted_label == "left"
    # predictions filter searches (and show in the hits)
    hits = client.search("writeback", [x[45]], k=100, predicted_label_filter=["right"])[0]
    right = {p.id for p in got if p.label == "right"}
    assert {h.id for h in hits} == right and all(
        h.predicted_label == "right" and not h.HasField("label") for h in hits
    )
    threshold = float(np.median([h.confidence for h in hits]))
    sure = client.search(
        "writeback", [x[45]], k=100, predicted_label_filter=["right"], min_confidence=threshold
    )[0]
    assert 0 < len(sure) < len(right) and all(h.confidence >= threshold for h in sure)
    assert {h.id for h in sure} == {h.id for h in hits if h.confidence >= threshold}
    # a new write-back replaces every earlier prediction (i5 is labelled now: it gets none)
    client.set_labels("writeback", {"i6": "", "i0": ""})  # clearing "left": only "mine" and "right" stay
    list(client.propagate_labels("writeback", write_back=True))
    after = {s.id: s for s in client.get("writeback", ["i5", "i0", "i1"])}
    assert after["i5"].label == "mine" and not after["i5"].HasField("predicted_label")
    assert not after["i0"].HasField("label") and after["i0"].predicted_label in ("mine", "right")


def test_audit_finds_planted_flips(client):
    x, cluster = blobs([60, 60, 60], spread=0.2, seed=2)
    labels = [f"c{c}" for c in cluster]
    flipped = [3, 70, 150, 151]
    for i in flipped:
        labels[i] = f"c{(cluster[i] + 1) % 3}"
    fill(client, "audited", x, labels)
    findings = client.audit_labels("audited", 4)
    assert {f.id for f in findings} == {f"i{i}" for i in flipped}
    for f in findings:
        assert f.suggested_label == f"c{cluster[int(f.id[1:])]}" and f.label != f.suggested_label
    assert [f.score for f in findings] == sorted(f.score for f in findings)


def test_every_label_rpc_answers_bad_input_with_a_typed_code(client):
    x, _ = blobs([20, 20])
    fill(client, "typed", x)
    bad = grpc.StatusCode
    cases = [
        (lambda: client.suggest_labels("nope"), bad.NOT_FOUND, "collection 'nope' not found"),
        (lambda: client.suggest_labels("typed", strategy="greedy"), bad.INVALID_ARGUMENT, "strategy"),
        (lambda: client.suggest_labels("typed", 10_001), bad.RESOURCE_EXHAUSTED, "max_batch_items"),
        (lambda: client.suggest_labels("typed", -1), bad.INVALID_ARGUMENT, "count"),
        (lambda: client.suggest_labels("typed", k=101), bad.INVALID_ARGUMENT, "max_label_k"),
        (lambda: client.suggest_labels("typed", strategy="uncertain"), bad.FAILED_PRECONDITION, "labelled"),
        (lambda: list(client.propagate_labels("typed")), bad.FAILED_PRECONDITION, "no labelled items"),
        (lambda: list(client.propagate_labels("typed", "magic")), bad.INVALID_ARGUMENT, "method"),
        (lambda: list(client.propagate_labels("typed", alpha=1.5)), bad.INVALID_ARGUMENT, "alpha"),
        (lambda: list(client.propagate_labels("typed", temperature=-1)), bad.INVALID_ARGUMENT, "temperature"),
        (
            lambda: list(client.propagate_labels("typed", max_iterations=5000)),
            bad.INVALID_ARGUMENT,
            "max_label_iterations",
        ),
        (lambda: client.set_labels("typed", {"i1": "a", "zz": "b"}), bad.NOT_FOUND, "assignment 1: id 'zz'"),
        (
            lambda: client.set_labels("typed", [("i1", "a"), ("i1", "b")]),
            bad.INVALID_ARGUMENT,
            "assignment 1",
        ),
        (lambda: client.set_labels("typed", {"i1": "x" * 2000}), bad.RESOURCE_EXHAUSTED, "max_label_bytes"),
        (
            lambda: client.audit_labels("typed", 0, k=0, temperature=float("nan")),
            bad.INVALID_ARGUMENT,
            "temperature",
        ),
        (
            lambda: client.search("typed", [x[0]], min_confidence=0.5),
            bad.INVALID_ARGUMENT,
            "predicted_label_filter",
        ),
        (
            lambda: client.search("typed", [x[0]], predicted_label_filter=["a"], min_confidence=2),
            bad.INVALID_ARGUMENT,
            "min_confidence",
        ),
    ]
    for call, code, words in cases:
        got, message = status_of(call)
        assert got == code and words in message, (got, message)
    # nothing above changed the collection; it still answers
    assert client.describe_collection("typed").labelled_count == 0
    assert client.audit_labels("typed") == []


def test_a_job_over_its_memory_limit_is_refused_before_it_starts(bundles, tmp_path):
    server = ServerThread(make_config(bundles, tmp_path, limits=_limits(max_label_job_bytes=100_000)))
    try:
        with server.client() as c:
            x, _ = blobs([300, 300])
            fill(c, "big", x, ["a"] + [None] * 599)
            code, message = status_of(lambda: list(c.propagate_labels("big")))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_label_job_bytes" in message
            assert "MiB, over max_label_job_bytes (0.1 MiB)" in message
            assert len(c.suggest_labels("big", 3, strategy="random").suggestions) == 3  # no graph needed
    finally:
        server.stop()


def _limits(**kw):
    from embedserve.limits import Limits

    return Limits(**kw)


def test_long_jobs_stop_at_the_deadline_and_never_hold_up_searches(bundles, tmp_path):
    # one search thread and one write thread: a job that ran in either pool would hold them up
    server = ServerThread(make_config(bundles, tmp_path, search_threads=1, write_threads=1))
    try:
        with server.client() as c, server.client(timeout=1.0) as quick:
            x, cluster = blobs([6_000] * 4, spread=0.5)
            fill(c, "long", x, [None if i % 500 else f"c{cluster[i]}" for i in range(len(x))])
            code, _ = status_of(lambda: list(c.propagate_labels("long", timeout=0.05)))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED

            running, finished = threading.Event(), threading.Event()
            result: list = []

            def job():
                stream = c.propagate_labels(
                    "long", alpha=0.999, max_iterations=1000, on_progress=lambda *p: running.set()
                )
                for prediction in stream:
                    finished.set()  # the job is over once its first prediction arrives
                    result.append(prediction)

            thread = threading.Thread(target=job)
            thread.start()
            assert running.wait(30)
            answered = 0
            while not finished.is_set():  # 1 s deadlines: a search waiting on the job would fail
                assert len(quick.search("long", [x[answered]], k=3)[0]) == 3
                quick.set_labels("long", {f"i{answered + 1}": None})
                answered += 1
            thread.join()
            assert answered > 0 and len(result) > 23_000
    finally:
        server.stop()


def test_labels_and_predictions_survive_kill_9(bundles, tmp_path):
    data = tmp_path / "data"
    args = ["--models", str(bundles), "--data", str(data), "--device", "cpu", "--default-model", "tiny-image"]
    x, cluster = blobs([30, 30])
    proc, target = start_subprocess_server(args)
    try:
        with Client(target) as c:
            fill(c, "kept", x)
            c.set_labels("kept", {"i0": "a", "i30": "b", "i1": "a"})
            c.set_labels("kept", {"i1": ""})  # cleared, durably too
            predicted = {p.id: p.label for p in c.propagate_labels("kept", write_back=True)}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for restart in range(2):  # from the log, then (after a clean stop's snapshot) from the snapshot
            proc, target = start_subprocess_server(args)
            with Client(target) as c:
                items = {s.id: s for s in c.get("kept", [f"i{i}" for i in range(60)])}
                assert items["i0"].label == "a" and items["i30"].label == "b"
                assert not items["i1"].HasField("label")
                assert {
                    i: s.predicted_label for i, s in items.items() if s.HasField("predicted_label")
                } == predicted
                assert c.describe_collection("kept").labelled_count == 2
            proc.send_signal(signal.SIGTERM if restart == 0 else signal.SIGKILL)
            proc.wait(timeout=30)
        assert list(data.glob("collections/kept/snap-*/predicted.npy"))
    finally:
        if proc.poll() is None:
            proc.kill()
