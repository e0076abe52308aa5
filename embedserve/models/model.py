"""A loaded bundle and its request path: validate → decode/tokenize → batch → run → reassemble.

``Model.embed``: validate every input → decode images / tokenize texts in the
decode pool → submit to the tower batchers (image and text at once) → inference
in the infer pool (padding, pooling and L2 normalisation happen there, off the
event loop) → rows reassembled in input order. A request for one tower that
finds it idle skips the queue: decoding (or tokenizing) and inference run in one
infer-pool call (``Batcher.run_alone``, ``Tower.embed_alone``), one hand-off from
the event loop and one back; on a CPU tower that runs a 1-thread batch per core
(``intra_op_threads`` 1) it is cut into a share per free core, each such a call, all
at once (``Batcher.lone_parts``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedserve.errors import DeadlineExceeded, EmbedServeError, InvalidArgument, item_error
from embedserve.models.bundle import Manifest
from embedserve.models.image import IMAGES_PER_PART, ImagePreprocessor
from embedserve.models.inputs import ImageInput, ModelInput, TextInput
from embedserve.models.text import TextPreprocessor
from embedserve.models.tower import Tower


class Model:
    """A loaded bundle: its manifest and its towers ("image" and/or "text")."""

    def __init__(
        self, manifest: Manifest, towers: dict[str, Tower], decode_executor: Executor, decode_workers: int = 1
    ) -> None:
        """``decode_workers``: the decode pool's threads (a lone request's images split over as many)."""
        self.manifest = manifest
        self.towers = towers
        self._decode = decode_executor
        self._decode_workers = decode_workers

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def dim(self) -> int:
        return self.manifest.dim

    async def embed(self, inputs: list[ModelInput], *, deadline: float | None = None) -> np.ndarray:
        """Embed a mixed list of inputs → float32 [len(inputs), dim], in input order (see ``encode``)."""
        return (await self.encode(inputs, deadline=deadline)).vectors

    async def encode(
        self, inputs: list[ModelInput], *, deadline: float | None = None, inline: bool = False
    ) -> Embedded:
        """Embed a mixed list of inputs; also report which texts were truncated.

        All-or-nothing: the first bad item (by index) fails the call as a typed
        error "item i: ..."; nothing is computed unless every item is valid.
        ``inline``: the caller has nothing else to do meanwhile (a call alone in the server),
        so a small lone request may run on its thread (``Batcher.run_alone``).
        """
        by_modality: dict[str, list[int]] = {"image": [], "text": []}
        for i, item in enumerate(inputs):
            modality = (
                "image" if isinstance(item, ImageInput) else "text" if isinstance(item, TextInput) else ""
            )
            if not modality:
                raise item_error(
                    InvalidArgument, i, f"expected an image or a text, got {type(item).__name__}"
                )
            tower = self.towers.get(modality)
            if tower is None:
                raise item_error(InvalidArgument, i, f"model '{self.name}' has no {modality} tower")
            if isinstance(item, TextInput):
                assert isinstance(tower.preprocessor, TextPreprocessor)
                tower.preprocessor.check(item.text, i)
            by_modality[modality].append(i)
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        if not inputs:
            return Embedded(out, [])
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded(f"model '{self.name}': deadline exceeded before preprocessing")

        used = [m for m, idx in by_modality.items() if idx]
        if len(used) == 1:  # one tower: if it is idle, the whole request is one executor call
            tower, positions = self.towers[used[0]], by_modality[used[0]]
            parts = tower.batcher.lone_parts(len(positions), inline)
            if parts == 1:
                alone = await self._run_alone(
                    tower, inputs, positions, deadline, inline, self._decode_workers
                )
                if alone is not None:
                    out[positions], truncated = alone
                    return Embedded(out, truncated)
            elif parts > 1:
                return await self._split_alone(tower, inputs, positions, parts, out, deadline)

        return await self._queued(by_modality, inputs, out, deadline)

    async def _run_alone(
        self, tower: Tower, inputs: list[Any], positions: list[int], deadline, inline: bool, workers: int
    ) -> tuple[np.ndarray, list[int]] | None:
        raw = [_raw(inputs[i]) for i in positions]
        run = functools.partial(tower.embed_alone, raw, positions, self._decode, workers)
        return await tower.batcher.run_alone(len(raw), run, deadline, inline=inline)

    async def _split_alone(
        self, tower: Tower, inputs: list[Any], positions: list[int], parts: int, out: np.ndarray, deadline
    ) -> Embedded:
        """A lone request over ``parts`` of the tower's free slots: contiguous shares of its items,
        each decoded and run by its own ``run_alone`` call (or, if a slot was taken meanwhile,
        queued), all at once. Every part finishes before an error is raised, so the error is
        the first bad item's by position, as on the other paths."""
        size = -(-len(positions) // parts)
        shares = [positions[i : i + size] for i in range(0, len(positions), size)]
        workers = max(1, self._decode_workers // len(shares))

        async def part(share: list[int]) -> list[int]:
            """Its rows into ``out`` (the parts' positions are disjoint); its truncated positions."""
            alone = await self._run_alone(tower, inputs, share, deadline, False, workers)
            if alone is None:
                return (await self._queued({tower.modality: share}, inputs, out, deadline)).truncated
            out[share], cut = alone
            return cut

        truncated: list[int] = []
        for result in await asyncio.gather(*(part(share) for share in shares), return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
            truncated += result
        return Embedded(out, sorted(truncated))

    async def _queued(
        self, by_modality: dict[str, list[int]], inputs: list[Any], out: np.ndarray, deadline
    ) -> Embedded:
        """Preprocess in the decode pool and submit to the batchers: the rows of ``by_modality``'s
        positions into ``out``."""
        jobs = {m: self._preprocess(m, idx, inputs) for m, idx in by_modality.items() if idx}
        prepared: dict[str, _Prepared] = dict(zip(jobs, await _all(list(jobs.values())), strict=True))
        errors = [p.error for p in prepared.values() if p.error is not None]
        if errors:
            raise min(errors, key=lambda e: e[0])[1]

        submits = [self.towers[m].batcher.submit(p.items, deadline) for m, p in prepared.items()]
        for p, vectors in zip(prepared.values(), await _all(submits), strict=True):
            out[p.positions] = vectors
        truncated = sorted(i for p in prepared.values() for i in p.truncated)
        return Embedded(out, truncated)

    async def _preprocess(self, modality: str, indices: list[int], inputs: list[Any]) -> _Prepared:
        """Preprocessed items of one modality, and their first item error (index, error) if any."""
        loop = asyncio.get_running_loop()
        pre = self.towers[modality].preprocessor
        if isinstance(pre, TextPreprocessor):
            texts = [inputs[i].text for i in indices]
            ids, cut = await loop.run_in_executor(self._decode, pre.tokenize, texts)
            empty = [i for i, row in zip(indices, ids, strict=True) if row.size == 0]
            if empty:
                return _Prepared(
                    [], [], [], (empty[0], item_error(InvalidArgument, empty[0], "text has no tokens"))
                )
            # longest first: consecutive batches hold texts of similar length, so padding stays short
            order = sorted(range(len(ids)), key=lambda j: -len(ids[j]))
            truncated = [i for i, was_cut in zip(indices, cut, strict=True) if was_cut]
            return _Prepared([ids[j] for j in order], [indices[j] for j in order], truncated, None)
        assert isinstance(pre, ImagePreprocessor)
        # a few chunks, not a task per image: each executor hop costs more than a small decode
        chunks = [indices[j : j + IMAGES_PER_PART] for j in range(0, len(indices), IMAGES_PER_PART)]
        jobs = [
            loop.run_in_executor(self._decode, pre.preprocess_many, [inputs[i].data for i in chunk], chunk)
            for chunk in chunks
        ]
        arrays: list[np.ndarray] = []
        for result in await asyncio.gather(*jobs):
            chunk_arrays, error = result
            if error is not None:
                return _Prepared([], [], [], error)
            arrays.extend(chunk_arrays)
        return _Prepared(arrays, indices, [], None)


@dataclass(frozen=True)
class Embedded:
    """What ``Model.encode`` returns."""

    vectors: np.ndarray  # float32 [N, dim], in input order
    truncated: list[int]  # positions of the texts cut to the tower's max_length, ascending


@dataclass(frozen=True)
class _Prepared:
    """One modality's preprocessed items, in the order they go to the batcher."""

    items: list[np.ndarray]
    positions: list[int]  # input position of each item
    truncated: list[int]  # input positions of truncated texts
    error: tuple[int, EmbedServeError] | None  # the first bad item (position, error)


def _raw(item: ModelInput) -> bytes | str:
    return item.data if isinstance(item, ImageInput) else item.text


async def _all(aws: Sequence[Awaitable[Any]]) -> list[Any]:
    """Await all; on the first failure cancel the rest and raise it."""
    if len(aws) == 1:
        return [await aws[0]]
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # no-op for finished tasks
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]
