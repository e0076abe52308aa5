"""Dynamic batching: coalesce concurrent requests into batches for one tower.

Requests wait in a FIFO queue. The worker takes up to ``max_batch_size`` items
from its head once the batch is full, or once ``max_delay_ms`` have passed since
the oldest waiting request arrived. With an item cost (a text's padded length),
a batch instead takes the costliest waiting items of the oldest requests within
a cost budget, so texts of like length share a batch (``_take_by_cost``). A
request larger than a batch is split over consecutive batches and reassembled.
Batches run in ``executor`` (ORT releases the GIL); at most
``max_concurrent_batches`` run at once (the tower decides how many:
``embedserve.models.tower.concurrent_batches``).

A request that finds the batcher idle (nothing queued, no batch running) has
nothing to be batched with: ``run_alone`` runs it at once as its own batch, in
one executor call that also does its preprocessing, which saves the hand-offs
of queueing (the loop's cost per request, not the model's, is what a small
model or an accelerator leaves). Requests that arrive meanwhile queue as usual
and form the next batch when it ends.

Deadlines are ``time.monotonic()`` instants. A request whose deadline passes is
failed with DeadlineExceeded at that moment; its items not yet in a batch are
never computed. A cancelled ``submit`` (client went away) leaves the queue the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from embedserve.errors import DeadlineExceeded, EmbedServeError, Unavailable

log = logging.getLogger("embedserve.models")

T = TypeVar("T")

# run_alone(inline=True) runs on the caller's thread when this batcher's lone runs have cost
# under this for the items asked: a call that arrives meanwhile waits at most about this long
# (small models: the bench CNN or the digits encoder take ~1 ms an image; a ResNet-18 at
# 224x224 takes ~30 ms on 2 cores and always goes to the executor)
INLINE_RUN_S = 0.005


@dataclass
class BatcherStats:
    """Running totals of one batcher, read at scrape time (``embedserve.server.metrics``): busy
    seconds over wall time is its utilisation; wait seconds over requests its mean queue delay."""

    batches: int = 0  # runs of the model: queued batches and lone runs
    items: int = 0
    busy_seconds: float = 0.0  # summed wall time of those runs (a lone run's preprocessing included)
    requests: int = 0  # requests that reached a batch or a lone run
    wait_seconds: float = 0.0  # summed time from arrival to the first batch (0 for a lone run)

    def ran(self, items: int, seconds: float) -> None:
        self.batches += 1
        self.items += items
        self.busy_seconds += seconds


@dataclass(eq=False)
class _Request:
    items: list[Any]
    future: asyncio.Future[np.ndarray]
    deadline: float | None
    arrived: float  # time.monotonic()
    taken: int = 0  # items already put into batches (or dropped)
    filled: int = 0  # rows of ``out`` already computed
    out: np.ndarray | None = None  # [len(items), D], allocated when the request is split
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Part:
    """``count`` items of ``request`` from ``start`` sit at ``offset`` in a batch."""

    request: _Request
    start: int
    count: int
    offset: int


@dataclass
class _Batch:
    items: list[Any] = field(default_factory=list)
    parts: list[_Part] = field(default_factory=list)
    longest: int = 0  # the largest item_size among items (with an item budget)


class Batcher:
    """Coalesces ``submit`` calls into ``run_batch`` calls of at most ``max_batch_size`` items.

    ``run_batch(items) -> [len(items), D]`` is synchronous and runs in ``executor``.
    ``on_batch(n)`` is called with each batch's size before it runs (for metrics).
    With ``item_size`` and ``max_batch_cost``, a batch also stops growing before
    len(items) x max(item_size) would pass the cost: texts are padded to the
    longest in their batch, so a long one among short ones makes a smaller batch
    rather than padding every other row to its length (one item always fits).
    Use from one event loop: ``start()`` inside it, ``await stop()`` to drain.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any]], np.ndarray],
        *,
        max_batch_size: int,
        max_delay_ms: float,
        executor: Executor,
        name: str,
        on_batch: Callable[[int], None] | None = None,
        max_concurrent_batches: int = 1,
        item_size: Callable[[Any], int] | None = None,
        max_batch_cost: int = 0,
        split_alone: bool = False,
    ) -> None:
        if max_batch_size < 1 or max_delay_ms < 0 or max_concurrent_batches < 1:
            raise ValueError("need max_batch_size >= 1, max_delay_ms >= 0, max_concurrent_batches >= 1")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay_ms / 1000.0
        self.executor = executor
        self.name = name
        self.on_batch = on_batch
        self.max_concurrent_batches = max_concurrent_batches
        self.split_alone = split_alone
        self.item_size = item_size if max_batch_cost > 0 else None
        self.max_batch_cost = max_batch_cost
        self._queue: deque[_Request] = deque()
        self._pending = 0  # items queued, not yet in a batch, of live requests
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = 0  # batches running: the worker's and run_alone's
        self._item_s: float | None = None  # seconds per item of recent lone runs (run_alone)
        self.stats = BatcherStats()

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch."""
        return self._pending

    @property
    def healthy(self) -> bool:
        """True while the worker runs (False before start, after stop, or if it died)."""
        return self._worker is not None and not self._worker.done() and not self._stopping

    def start(self) -> None:
        """Start the worker task; call from inside the running event loop."""
        if self._worker is not None:
            raise RuntimeError(f"batcher {self.name} already started")
        self._wakeup = asyncio.Event()
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"batcher:{self.name}")
        self._worker.add_done_callback(self._on_worker_done)

    async def stop(self) -> None:
        """Refuse new work, finish everything queued or running, then stop."""
        if self._worker is None:
            return
        self._stopping = True
        assert self._wakeup is not None
        self._wakeup.set()
        if self._worker.done():
            return  # it died earlier (reported by _on_worker_done); nothing to drain
        await asyncio.shield(self._worker)

    async def submit(self, items: list[Any], deadline: float | None = None) -> np.ndarray:
        """Embed ``items`` with other requests' items; returns [len(items), D] in order."""
        if not self.healthy:
            raise Unavailable(f"{self.name}: not accepting work (stopped or failed)")
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded(f"{self.name}: deadline exceeded before queueing")
        if not items:
            raise ValueError("submit needs at least one item")
        loop = asyncio.get_running_loop()
        request = _Request(list(items), loop.create_future(), deadline, now)
        if deadline is not None:
            request.timer = loop.call_later(deadline - now, self._expire, request)
        self._queue.append(request)
        self._pending += len(request.items)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await request.future
        finally:
            self._retire(request)  # no-op unless cancelled: drop its unbatched items

    def lone_parts(self, count: int, inline: bool = False) -> int:
        """How many parts a lone request of ``count`` items should run as, each ``run_alone``
        on a slot of its own: 0 if it cannot run alone now (work queued, no slot free, more
        items than a batch); 1 if it would run on the caller's thread (``inline``, cheap), or
        this batcher does not split (``split_alone``); else one per free slot, at most one per
        item. With ``split_alone`` (a CPU tower of 1-thread runs: each slot is a core) a lone
        request then uses every core, as ORT's own threads would, instead of one."""
        if self._queue or self._busy >= self.max_concurrent_batches or count > self.max_batch_size:
            return 0
        if not self.split_alone or (inline and self._inline_cost(count)):
            return 1
        return max(1, min(count, self.max_concurrent_batches - self._busy))

    def _inline_cost(self, count: int) -> bool:
        """Whether lone runs of ``count`` items have cost at most ``INLINE_RUN_S`` (known once one ran)."""
        return self._item_s is not None and count * self._item_s <= INLINE_RUN_S

    async def run_alone(
        self, count: int, fn: Callable[[], T], deadline: float | None = None, *, inline: bool = False
    ) -> T | None:
        """Run ``fn`` (one request's ``count`` items, preprocessed and run as one batch) now if the
        batcher is idle and they fit one batch; None, having run nothing, if not (then ``submit``
        them). ``fn`` runs in the executor, where a deadline that passes while it runs fails the
        call with DeadlineExceeded at that moment (``fn`` finishes unobserved); or, with
        ``inline`` (the caller has nothing else to do meanwhile: the server passes it for a
        call alone in flight) and when this batcher's lone runs have cost under
        ``INLINE_RUN_S`` for that many items, on the caller's thread, which saves the hand-off
        to the executor and back (on the bench machine more CPU than a small model's run)."""
        if self._queue or self._busy >= self.max_concurrent_batches or count > self.max_batch_size:
            return None
        if not self.healthy:
            raise Unavailable(f"{self.name}: not accepting work (stopped or failed)")
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceeded(f"{self.name}: deadline exceeded before queueing")
        loop = asyncio.get_running_loop()
        timed = functools.partial(self._timed, count, fn, True)
        self._busy += 1
        if inline and self._inline_cost(count):
            try:
                return _checked(self.name, count, timed)
            finally:
                self._batch_done()
        done = self.executor.submit(timed)
        result = asyncio.wrap_future(done, loop=loop)
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            result.cancel()

        timer = loop.call_later(deadline - now, expire) if deadline is not None else None
        try:
            return await result
        except asyncio.CancelledError:
            if expired:
                waited = 1000 * (time.monotonic() - now)
                raise DeadlineExceeded(
                    f"{self.name}: deadline exceeded during inference ({waited:.0f} ms)"
                ) from None
            raise
        except Exception as e:
            raise _inference_error(self.name, count, e) from None
        finally:
            if timer is not None:
                timer.cancel()
            if done.done():
                self._batch_done()
            else:  # abandoned (deadline, cancelled call): the slot is free once fn really ends
                done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._batch_done))

    def _timed(self, count: int, fn: Callable[[], T], lone: bool) -> T:
        """``fn()``, a run of ``count`` items, counted in ``stats``; a ``lone`` run (``run_alone``:
        one request) also counts its request and folds its seconds per item into the estimate
        that decides whether a lone run may take the caller's thread."""
        started = time.perf_counter()
        try:
            out = fn()
        finally:
            seconds = time.perf_counter() - started
            self.stats.ran(count, seconds)
        if lone:
            self.stats.requests += 1
            per_item = seconds / max(count, 1)
            self._item_s = per_item if self._item_s is None else 0.8 * self._item_s + 0.2 * per_item
        return out

    def _batch_done(self) -> None:
        self._busy -= 1
        assert self._wakeup is not None
        self._wakeup.set()

    def _retire(self, request: _Request) -> None:
        """The request is settled: its items not yet in a batch will never be."""
        self._pending -= len(request.items) - request.taken
        request.taken = len(request.items)
        if request.timer is not None:
            request.timer.cancel()

    def _fail(self, request: _Request, error: BaseException) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        self._retire(request)

    def _expire(self, request: _Request) -> None:
        state = "while queued" if request.taken < len(request.items) else "during inference"
        waited = 1000 * (time.monotonic() - request.arrived)
        self._fail(request, DeadlineExceeded(f"{self.name}: deadline exceeded {state} ({waited:.0f} ms)"))

    async def _work(self) -> None:
        running: set[asyncio.Task[None]] = set()
        while True:
            batch = await self._next_batch()
            if batch is None:
                break
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._execute(batch))
            running.add(task)
            task.add_done_callback(running.discard)
        if running:
            await asyncio.gather(*running)

    async def _next_batch(self) -> _Batch | None:
        """Wait until a batch is due and may run, then take it; None once stopping with nothing left.

        A batch is taken only once one may start (fewer than ``max_concurrent_batches`` running),
        so requests arriving while batches run join the next one."""
        assert self._wakeup is not None
        while True:
            while self._queue and self._queue[0].taken == len(self._queue[0].items):
                self._queue.popleft()  # settled (expired / cancelled) requests
            if not self._queue:
                if self._stopping and not self._busy:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._busy >= self.max_concurrent_batches:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._queue[0].arrived + self.max_delay - time.monotonic()
            if self._pending < self.max_batch_size and wait > 0 and not self._stopping:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                continue
            return self._take()

    def _take(self) -> _Batch:
        """The next batch: with an item cost, the costliest waiting items (``_take_by_cost``);
        otherwise up to ``max_batch_size`` items from the head of the queue, in order."""
        if self.item_size is not None:
            return self._take_by_cost(self.item_size)
        batch = _Batch()
        while self._queue and len(batch.items) < self.max_batch_size:
            request = self._queue[0]
            if request.taken == len(request.items):
                self._queue.popleft()  # settled while waiting
                continue
            count = min(len(request.items) - request.taken, self.max_batch_size - len(batch.items))
            self._add_part(batch, request, count)
            if request.taken == len(request.items):
                self._queue.popleft()
        return batch

    def _take_by_cost(self, size: Callable[[Any], int]) -> _Batch:
        """The costliest items waiting in the oldest ``max_batch_size`` requests, costliest first,
        while len(items) x the largest cost stays within ``max_batch_cost`` (one item always fits).

        Texts are padded to the longest in their batch, so a batch of texts of like length
        wastes least: one request's texts come sorted longest first, and this merges the
        waiting requests' texts the same way rather than batching one request's short tail
        with the next one's long head. Each request thus gives a contiguous run of its next
        items. Ties go to the older request, and a request joins the window only as an older
        one leaves it, so none waits behind more than a window's items."""
        window: list[_Request] = []
        for request in self._queue:
            if request.taken < len(request.items):
                window.append(request)
                if len(window) == self.max_batch_size:
                    break
        heads = [(-size(r.items[r.taken]), i) for i, r in enumerate(window)]
        heapq.heapify(heads)
        counts = [0] * len(window)
        batch, n = _Batch(), 0
        while heads and n < self.max_batch_size:
            cost, i = heads[0]
            longest = max(batch.longest, -cost)
            if n > 0 and (n + 1) * longest > self.max_batch_cost:
                break
            batch.longest, n = longest, n + 1
            counts[i] += 1
            request, following = window[i], window[i].taken + counts[i]
            if following < len(request.items):
                heapq.heapreplace(heads, (-size(request.items[following]), i))
            else:
                heapq.heappop(heads)
        for request, count in zip(window, counts, strict=True):
            if count:
                self._add_part(batch, request, count)
        while self._queue and self._queue[0].taken == len(self._queue[0].items):
            self._queue.popleft()
        return batch

    def _add_part(self, batch: _Batch, request: _Request, count: int) -> None:
        """Put ``request``'s next ``count`` items into ``batch``."""
        if request.taken == 0:  # its first items into a batch: its time in the queue ends
            self.stats.requests += 1
            self.stats.wait_seconds += time.monotonic() - request.arrived
        batch.parts.append(_Part(request, request.taken, count, len(batch.items)))
        batch.items.extend(request.items[request.taken : request.taken + count])
        request.taken += count
        self._pending -= count

    def observe(self, n: int) -> None:
        """Report a model run of ``n`` items to ``on_batch`` (a failing callback is logged, never raised):
        every batch the worker runs, and each run a lone request's preprocessing makes."""
        if self.on_batch is not None:
            try:
                self.on_batch(n)
            except Exception:
                log.exception("%s: on_batch callback failed", self.name)

    def rows_within_cost(self, longest: int) -> int:
        """Items of cost ``longest`` (and no more) that one batch may hold: the item budget
        (``max_batch_cost // longest``, at least one) within ``max_batch_size``. The rule
        ``_take_by_cost`` applies item by item, for a caller that cuts its own batches of
        items sorted most costly first."""
        if self.item_size is None:
            return self.max_batch_size
        return max(1, min(self.max_batch_size, self.max_batch_cost // max(1, longest)))

    async def _execute(self, batch: _Batch) -> None:
        try:
            self.observe(len(batch.items))
            loop = asyncio.get_running_loop()
            try:
                run = functools.partial(self.run_batch, batch.items)
                out = await loop.run_in_executor(self.executor, self._timed, len(batch.items), run, False)
                if not isinstance(out, np.ndarray) or out.ndim != 2 or len(out) != len(batch.items):
                    shape = getattr(out, "shape", type(out).__name__)
                    raise EmbedServeError(
                        f"{self.name}: batch of {len(batch.items)} returned {shape}, expected [N, D]"
                    )
            except Exception as e:
                error: BaseException = _inference_error(self.name, len(batch.items), e)
            else:
                self._deliver(batch, out)
                return
            for part in batch.parts:
                self._fail(part.request, error)
        finally:
            self._batch_done()

    def _deliver(self, batch: _Batch, out: np.ndarray) -> None:
        for part in batch.parts:
            request = part.request
            if request.future.done():
                continue  # expired or cancelled meanwhile
            rows = out[part.offset : part.offset + part.count]
            if part.count == len(request.items):
                request.future.set_result(rows)
                continue
            if request.out is None:
                request.out = np.empty((len(request.items), out.shape[1]), dtype=out.dtype)
            request.out[part.start : part.start + part.count] = rows
            request.filled += part.count
            if request.filled == len(request.items):
                request.future.set_result(request.out)

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        if self._stopping and not task.cancelled() and task.exception() is None:
            return  # drained by stop()
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("%s: batch worker died", self.name, exc_info=error)
        else:
            log.warning("%s: batch worker cancelled", self.name)
        for request in list(self._queue):
            self._fail(request, Unavailable(f"{self.name}: batch worker stopped"))
        self._queue.clear()


def _checked(name: str, count: int, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except Exception as e:
        raise _inference_error(name, count, e) from None


def _inference_error(name: str, count: int, error: Exception) -> EmbedServeError:
    """A run's exception as the caller sees it: typed errors (an item's) as they are, anything
    else logged and reported as the inference failing."""
    if isinstance(error, EmbedServeError):
        return error
    log.error("%s: batch of %d failed", name, count, exc_info=error)
    return EmbedServeError(f"{name}: inference failed: {type(error).__name__}: {error}")
