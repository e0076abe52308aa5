"""Dynamic batching: coalescing, splitting, deadlines, cancellation, failures, draining."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedserve.errors import DeadlineExceeded, EmbedServeError, InvalidArgument, Unavailable
from embedserve.models import Batcher


def rows(items: list) -> np.ndarray:
    """Item (request, position) → row [request, position]: each caller can check its own rows."""
    return np.array(items, dtype=np.float32).reshape(len(items), 2)


class Recorder:
    """A run_batch that records what it saw and can be held (to keep the worker busy)."""

    def __init__(self) -> None:
        self.seen: list = []
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.calls = 0

    def __call__(self, items: list) -> np.ndarray:
        self.calls += 1
        self.entered.set()
        self.release.wait(5)
        self.seen.extend(items)
        return rows(items)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


def batcher(run_batch, pool, **kwargs) -> Batcher:
    options = {"max_batch_size": 8, "max_delay_ms": 5.0, "executor": pool, "name": "test"}
    return Batcher(run_batch, **(options | kwargs))


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_concurrent_submits_are_coalesced_and_get_their_own_rows(pool) -> None:
    sizes: list[int] = []
    b = batcher(rows, pool, on_batch=sizes.append)

    async def main() -> None:
        b.start()
        requests = [[(r, j) for j in range(1 + r % 7)] for r in range(50)]
        results = await asyncio.gather(*(b.submit(items) for items in requests))
        for items, out in zip(requests, results, strict=True):
            np.testing.assert_array_equal(out, rows(items))
        await b.stop()
        assert sum(sizes) == sum(len(items) for items in requests)
        assert max(sizes) <= 8 and max(sizes) > 1
        assert len(sizes) < 50  # coalesced, not one batch per request

    asyncio.run(main())


def test_oversized_request_is_split_and_reassembled(pool) -> None:
    sizes: list[int] = []
    b = batcher(rows, pool, max_batch_size=4, on_batch=sizes.append)

    async def main() -> None:
        b.start()
        items = [(7, j) for j in range(10)]
        np.testing.assert_array_equal(await b.submit(items), rows(items))
        await b.stop()

    asyncio.run(main())
    assert sizes == [4, 4, 2]


def test_item_cost_budget_cuts_batches_before_padding_explodes(pool) -> None:
    """With item_size and max_batch_cost, rows x largest item stays within the cost (texts padded to the
    longest): a long item gets a small batch, short ones fill a large one; a single item always fits."""
    seen: list[list] = []

    def run(items: list) -> np.ndarray:
        seen.append(list(items))
        return np.zeros((len(items), 2), np.float32)

    b = batcher(run, pool, max_batch_size=8, item_size=len, max_batch_cost=12)

    async def main() -> None:
        b.start()
        texts = ["x" * 20, "x" * 6, "x" * 6, "x" * 3, "x" * 3, "x" * 3, "x" * 2, "x", "x", "x"]
        out = await b.submit(texts)
        await b.stop()
        assert out.shape == (10, 2)

    asyncio.run(main())
    assert [[len(t) for t in batch] for batch in seen] == [[20], [6, 6], [3, 3, 3, 2], [1, 1, 1]]
    assert all(len(batch) * max(len(t) for t in batch) <= 12 for batch in seen[1:])


def test_waiting_texts_are_batched_by_length_across_requests(pool) -> None:
    """Requests queued behind a running batch are merged costliest first (each request's items come
    sorted longest first), so like lengths share a batch: 3 batches padded to 47 cost units where
    taking each request's items in turn makes 4 batches of 57. Every request still gets its rows."""
    seen: list[list[str]] = []
    gate = threading.Event()

    def run(items: list) -> np.ndarray:
        if items == ["z"]:
            gate.wait(5)  # hold the worker while the requests below queue
        else:
            seen.append(list(items))
        return np.array([[len(t), ord(t[0])] for t in items], np.float32)

    b = batcher(run, pool, max_batch_size=8, max_delay_ms=0, item_size=len, max_batch_cost=18)
    requests = [["a" * 9, "a" * 2, "a"], ["b" * 8, "b" * 7, "b"], ["c" * 3, "c" * 3, "c" * 2]]

    async def main() -> list[np.ndarray]:
        b.start()
        holder = asyncio.ensure_future(b.submit(["z"]))
        await wait_for(lambda: b._busy == 1)
        waiting = [asyncio.ensure_future(b.submit(items)) for items in requests]
        await wait_for(lambda: b.queue_depth == 9)
        gate.set()
        await holder
        results = await asyncio.gather(*waiting)
        await b.stop()
        return results

    results = asyncio.run(main())
    for items, out in zip(requests, results, strict=True):
        np.testing.assert_array_equal(out, [[len(t), ord(t[0])] for t in items])
    lengths = [sorted((len(t) for t in batch), reverse=True) for batch in seen]
    assert lengths == [[9, 8], [7, 3], [3, 2, 2, 1, 1]]
    assert sum(len(batch) * batch[0] for batch in lengths) == 47
    assert b.stats.requests == 4  # the holder and the three merged ones, each counted once


def test_expired_request_is_not_computed(pool) -> None:
    run = Recorder()
    b = batcher(run, pool, max_delay_ms=0)

    async def main() -> None:
        b.start()
        run.release.clear()
        busy = asyncio.ensure_future(b.submit([(0, 0)]))
        await wait_for(run.entered.is_set)  # the worker is stuck in the first batch
        late = asyncio.ensure_future(b.submit([(1, 0), (1, 1)], deadline=time.monotonic() + 0.02))
        with pytest.raises(DeadlineExceeded, match="deadline exceeded while queued"):
            await late  # fails at its deadline, while the first batch still runs
        assert not busy.done()
        assert b.queue_depth == 0
        run.release.set()
        await busy
        np.testing.assert_array_equal(await b.submit([(2, 0)]), rows([(2, 0)]))
        await b.stop()

    asyncio.run(main())
    assert (1, 0) not in run.seen and (1, 1) not in run.seen


def test_past_deadline_is_refused_at_once(pool) -> None:
    b = batcher(rows, pool)

    async def main() -> None:
        b.start()
        with pytest.raises(DeadlineExceeded):
            await b.submit([(0, 0)], deadline=time.monotonic() - 1)
        await b.stop()

    asyncio.run(main())


def test_cancelled_submit_leaves_the_queue(pool) -> None:
    run = Recorder()
    b = batcher(run, pool, max_delay_ms=0)

    async def main() -> None:
        b.start()
        run.release.clear()
        busy = asyncio.ensure_future(b.submit([(0, 0)]))
        await wait_for(run.entered.is_set)
        gone = asyncio.ensure_future(b.submit([(1, 0), (1, 1), (1, 2)]))
        await wait_for(lambda: b.queue_depth == 3)
        gone.cancel()
        await asyncio.sleep(0)
        assert b.queue_depth == 0
        run.release.set()
        await busy
        await b.stop()

    asyncio.run(main())
    assert run.seen == [(0, 0)]


def test_failing_batch_fails_only_its_requests(pool) -> None:
    def flaky(items: list) -> np.ndarray:
        if any(item[0] == "boom" for item in items):
            raise ValueError("kaput")
        if any(item[0] == "typed" for item in items):
            raise InvalidArgument("item 0: typed error")
        return rows(items)

    b = batcher(flaky, pool, max_delay_ms=0)

    async def main() -> None:
        b.start()
        with pytest.raises(EmbedServeError, match="test: inference failed: ValueError: kaput") as info:
            await b.submit([("boom", 0)])
        assert type(info.value) is EmbedServeError
        with pytest.raises(InvalidArgument, match="typed error"):
            await b.submit([("typed", 0)])
        np.testing.assert_array_equal(await b.submit([(3, 1)]), rows([(3, 1)]))
        assert b.healthy
        await b.stop()

    asyncio.run(main())


def test_wrong_output_shape_is_an_error(pool) -> None:
    b = batcher(lambda items: np.zeros((len(items) + 1, 4), np.float32), pool)

    async def main() -> None:
        b.start()
        with pytest.raises(EmbedServeError, match=r"batch of 2 returned \(3, 4\)"):
            await b.submit([(0, 0), (0, 1)])
        await b.stop()

    asyncio.run(main())


def test_stop_drains_then_refuses(pool) -> None:
    run = Recorder()
    b = batcher(run, pool, max_batch_size=2, max_delay_ms=50)

    async def main() -> None:
        assert not b.healthy
        b.start()
        assert b.healthy
        pending = [asyncio.ensure_future(b.submit([(r, 0), (r, 1), (r, 2)])) for r in range(5)]
        await asyncio.sleep(0)
        await b.stop()
        assert all(task.done() and not task.exception() for task in pending)
        assert not b.healthy
        with pytest.raises(Unavailable):
            await b.submit([(9, 0)])

    asyncio.run(main())
    assert len(run.seen) == 15


def test_concurrent_batches(pool) -> None:
    run = Recorder()
    b = batcher(run, pool, max_batch_size=1, max_delay_ms=0, max_concurrent_batches=2)

    async def main() -> None:
        b.start()
        run.release.clear()
        first = asyncio.ensure_future(b.submit([(0, 0)]))
        second = asyncio.ensure_future(b.submit([(1, 0)]))
        await wait_for(lambda: run.calls == 2)  # both batches are running at once
        run.release.set()
        await asyncio.gather(first, second)
        await b.stop()

    asyncio.run(main())


def test_dead_worker_fails_waiting_requests_and_reports_unhealthy(pool, monkeypatch) -> None:
    b = batcher(rows, pool, max_delay_ms=0)

    def broken_take():
        raise RuntimeError("bug in batch forming")

    monkeypatch.setattr(b, "_take", broken_take)  # stands in for any bug inside the worker loop

    async def main() -> None:
        b.start()
        with pytest.raises(Unavailable, match="batch worker stopped"):
            await b.submit([(0, 0)])
        assert not b.healthy
        with pytest.raises(Unavailable):
            await b.submit([(1, 0)])

    asyncio.run(main())


def test_run_alone_runs_at_once_when_idle_and_queued_requests_wait_for_it(pool) -> None:
    run = Recorder()
    b = batcher(run, pool, max_delay_ms=0)
    held = threading.Event()

    def alone() -> str:
        held.wait(5)
        return "alone"

    async def main() -> None:
        b.start()
        first = asyncio.ensure_future(b.run_alone(3, alone))
        await wait_for(lambda: b._busy == 1)
        # the batcher is busy now: a second request is refused the shortcut and queues
        assert await b.run_alone(1, lambda: "again") is None
        queued = asyncio.ensure_future(b.submit([(1, 0), (1, 1)]))
        await asyncio.sleep(0.05)
        assert run.calls == 0 and not queued.done()  # no batch starts beside the alone one
        held.set()
        assert await first == "alone"
        np.testing.assert_array_equal(await queued, rows([(1, 0), (1, 1)]))
        # idle again: the shortcut is taken; a request larger than a batch never takes it
        assert await b.run_alone(8, lambda: "idle") == "idle"
        assert await b.run_alone(9, lambda: "too big") is None
        await b.stop()

    asyncio.run(main())


def test_run_alone_deadline_errors_and_stop(pool) -> None:
    b = batcher(rows, pool)
    release = threading.Event()
    ended = threading.Event()

    def slow() -> None:
        release.wait(5)
        ended.set()

    def broken() -> None:
        raise ZeroDivisionError("boom")

    def refused() -> None:
        raise InvalidArgument("item 2: cannot decode image")

    async def main() -> None:
        b.start()
        with pytest.raises(DeadlineExceeded, match="during inference"):
            await b.run_alone(1, slow, deadline=time.monotonic() + 0.02)
        # the abandoned call still holds its slot until it really ends: no batch runs beside it
        assert b._busy == 1
        assert await b.run_alone(1, lambda: "x") is None
        release.set()
        await wait_for(lambda: b._busy == 0)
        assert ended.is_set()
        with pytest.raises(DeadlineExceeded, match="before queueing"):
            await b.run_alone(1, slow, deadline=time.monotonic() - 1)
        with pytest.raises(InvalidArgument, match="item 2"):
            await b.run_alone(1, refused)  # typed errors pass through unchanged
        with pytest.raises(EmbedServeError, match="inference failed: ZeroDivisionError: boom"):
            await b.run_alone(1, broken)
        assert b._busy == 0 and b.healthy
        await b.stop()
        with pytest.raises(Unavailable):
            await b.run_alone(1, lambda: "stopped")

    asyncio.run(main())


def test_run_alone_inline_runs_small_lone_requests_on_the_callers_thread(pool) -> None:
    b = batcher(rows, pool)

    def where() -> int:
        return threading.get_ident()

    def slow() -> int:
        time.sleep(0.02)  # 4x INLINE_RUN_S per item: too slow to hold the caller's thread
        return threading.get_ident()

    async def main() -> None:
        b.start()
        here = threading.get_ident()
        assert await b.run_alone(1, where, inline=True) != here  # no estimate yet: the executor
        assert await b.run_alone(1, where, inline=True) == here  # measured cheap: the caller's thread
        assert await b.run_alone(1, where) != here  # the caller did not offer its thread
        assert await b.run_alone(9, where, inline=True) is None  # more than a batch
        for _ in range(3):
            await b.run_alone(1, slow, inline=True)  # the estimate follows the runs
        assert await b.run_alone(1, where, inline=True) != here
        with pytest.raises(EmbedServeError, match="inference failed: ZeroDivisionError"):
            b._item_s = 0.0
            await b.run_alone(1, lambda: 1 / 0, inline=True)
        assert b._busy == 0
        await b.stop()

    asyncio.run(main())


def test_lone_parts_is_one_per_free_slot_only_where_the_batcher_splits(pool) -> None:
    """lone_parts: 0 when a lone run cannot start, 1 without split_alone or for a cheap inline run,
    else a part per free slot (at most one per item)."""
    plain = batcher(rows, pool, max_concurrent_batches=3)
    split = batcher(rows, pool, max_concurrent_batches=3, split_alone=True)

    async def main() -> None:
        for b in (plain, split):
            b.start()
        assert plain.lone_parts(8) == 1
        assert (split.lone_parts(8), split.lone_parts(2), split.lone_parts(9)) == (3, 2, 0)
        split._busy = 1  # a batch running: the free slots
        assert split.lone_parts(8) == 2
        split._busy = 3
        assert split.lone_parts(8) == plain.lone_parts(9) == 0
        split._busy = 0
        split._item_s = 1e-6  # measured cheap: it would run on the caller's thread, whole
        assert (split.lone_parts(8, inline=True), split.lone_parts(8)) == (1, 3)
        queued = asyncio.ensure_future(split.submit([(0, 0)]))
        await asyncio.sleep(0)  # the submit has queued its item; the worker has not yet run
        assert split.lone_parts(1) == 0  # work queued: nothing runs alone
        await queued
        for b in (plain, split):
            await b.stop()

    asyncio.run(main())


def test_stats_count_runs_items_busy_time_and_queue_wait(pool) -> None:
    run = Recorder()
    b = batcher(run, pool, max_batch_size=4, max_delay_ms=0)

    async def main() -> None:
        b.start()
        assert await b.run_alone(2, lambda: "x") == "x"
        run.release.clear()
        first = asyncio.ensure_future(b.submit([(0, 0)]))
        await wait_for(run.entered.is_set)
        later = asyncio.ensure_future(b.submit([(1, j) for j in range(6)]))  # waits, then 2 batches
        await asyncio.sleep(0.05)
        run.release.set()
        await asyncio.gather(first, later)
        await b.stop()

    asyncio.run(main())
    stats = b.stats
    assert (stats.batches, stats.items, stats.requests) == (4, 9, 3)
    assert stats.busy_seconds >= 0.04  # the held batch
    assert stats.wait_seconds >= 0.04  # the request queued behind it
