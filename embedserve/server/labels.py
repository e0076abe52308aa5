"""LabelService: which items to label next, labels by id, label propagation, label audit.

The jobs themselves are ``embedserve.labelling``; here they are run in the label pool
(``embedserve.server.pools``) with the call's deadline, cancelled when the call is, and their
results turned into messages. PropagateLabels streams one message per unlabelled item (with
``report_progress``, progress messages before and between them), after the write-back, if asked for, is durable.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from embedserve.labelling.job import Job, Progress
from embedserve.server import admission
from embedserve.server.base import Parts, deadline_of, rpc
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc

T = TypeVar("T")
DEFAULT_COUNT = admission.DEFAULT_COUNT
PROGRESS_EVERY_S = 0.2  # at most this often a progress message per stage
SEND_PROGRESS_EVERY = 10_000  # predictions between "sending" progress messages


class LabelService(pb_grpc.LabelServiceServicer):
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def _run(self, context, fn: Callable[[Job], T], on_progress: Progress | None = None) -> T:
        """``fn(job)`` in the label pool, stopped at the call's deadline or when the call is cancelled."""
        job = Job(deadline_of(context), on_progress)
        future = asyncio.get_running_loop().run_in_executor(self.parts.pools.label, fn, job)
        try:
            return await future
        except asyncio.CancelledError:
            job.cancel()  # the thread stops at its next step
            raise

    @rpc("SuggestLabels", admit=admission.suggest_labels)
    async def SuggestLabels(self, request: pb.SuggestLabelsRequest, context) -> pb.SuggestLabelsResponse:
        collection = self.parts.store.get(request.collection)
        strategy, picked = await self._run(
            context,
            lambda job: self.parts.labeller.suggest(
                collection,
                request.count or DEFAULT_COUNT,
                request.strategy,
                job,
                seed=request.seed,
                k=request.k,
            ),
        )
        return pb.SuggestLabelsResponse(
            suggestions=[pb.LabelSuggestion(id=s.id, score=s.score, reason=s.reason) for s in picked],
            strategy=strategy,
        )

    @rpc("SetLabels", admit=admission.set_labels)
    async def SetLabels(self, request: pb.SetLabelsRequest, context) -> pb.SetLabelsResponse:
        collection = self.parts.store.get(request.collection)
        ids = [a.id for a in request.assignments]
        labels = [a.label or None for a in request.assignments]
        result = await self.parts.pools.writing(collection.set_labels, ids, labels)
        self.parts.metrics.items.labels(collection.spec.name, "label").inc(result.labelled + result.cleared)
        return pb.SetLabelsResponse(
            labelled=result.labelled, cleared=result.cleared, unchanged=result.unchanged
        )

    @rpc("PropagateLabels", admit=admission.propagate_labels)
    async def PropagateLabels(self, request: pb.PropagateLabelsRequest, context) -> None:
        collection = self.parts.store.get(request.collection)
        progress: asyncio.Queue[tuple[str, int, int]] = asyncio.Queue()
        report = _progress_reporter(asyncio.get_running_loop(), progress) if request.report_progress else None
        task = asyncio.ensure_future(
            self._run(
                context,
                lambda job: self.parts.labeller.propagate(
                    collection,
                    request.method,
                    job,
                    k=request.k,
                    temperature=request.temperature,
                    alpha=request.alpha,
                    max_iterations=request.max_iterations,
                ),
                report,
            )
        )
        try:
            while report is not None and not task.done():
                getter = asyncio.ensure_future(progress.get())
                await asyncio.wait([task, getter], return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    await context.write(_progress(*getter.result()))
                else:
                    getter.cancel()
            while not progress.empty():  # reports the job made just before it finished
                await context.write(_progress(*progress.get_nowait()))
            result = await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        if request.write_back:
            await self.parts.pools.writing(
                lambda: collection.set_predictions(
                    result.ids, result.labels, result.confidence, made_for=result.made_for
                )
            )
        n = len(result.ids)
        confidence, margin = result.confidence.tolist(), result.margin.tolist()
        for i, (item_id, label) in enumerate(zip(result.ids, result.labels, strict=True)):
            if report is not None and i % SEND_PROGRESS_EVERY == 0:
                await context.write(_progress("sending", i, n))
            await context.write(
                pb.PropagateLabelsResponse(
                    id=item_id, label=label, confidence=confidence[i], margin=margin[i]
                )
            )
        if report is not None:
            await context.write(_progress("sending", n, n))

    @rpc("AuditLabels", admit=admission.audit_labels)
    async def AuditLabels(self, request: pb.AuditLabelsRequest, context) -> pb.AuditLabelsResponse:
        collection = self.parts.store.get(request.collection)
        found = await self._run(
            context,
            lambda job: self.parts.labeller.audit(
                collection, request.count or DEFAULT_COUNT, job, k=request.k, temperature=request.temperature
            ),
        )
        return pb.AuditLabelsResponse(
            findings=[
                pb.LabelFinding(id=f.id, label=f.label, suggested_label=f.suggested_label, score=f.score)
                for f in found
            ]
        )


def _progress(stage: str, done: int, total: int) -> pb.PropagateLabelsResponse:
    return pb.PropagateLabelsResponse(progress=pb.JobProgress(stage=stage, done=done, total=total))


def _progress_reporter(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Progress:
    """A job's progress callback (called in its thread): hands reports to the event loop, at most
    one per PROGRESS_EVERY_S within a stage, and the first and last of every stage."""
    lock = threading.Lock()
    last: dict[str, float] = {}

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        with lock:
            if done not in (0, total) and now - last.get(stage, 0.0) < PROGRESS_EVERY_S:
                return
            last[stage] = now
        loop.call_soon_threadsafe(queue.put_nowait, (stage, done, total))

    return report
