"""Loaded models: per bundle one ``Model``, per tower a preprocessor, an ORT session and a batcher.

Request path (``Model.embed``): validate every input → decode images / tokenize
texts in the decode pool → submit to the tower batchers (image and text at once)
→ inference in the infer pool (padding, pooling and L2 normalisation happen
there, off the event loop) → rows reassembled in input order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedserve.errors import DeadlineExceeded, EmbedServeError, InvalidArgument, NotFound, item_error
from embedserve.models.batcher import Batcher
from embedserve.models.bundle import BundleError, ImageTowerSpec, Manifest, TextTowerSpec, load_manifest
from embedserve.models.image import ImagePreprocessor
from embedserve.models.runtime import DEVICES, TowerSession, resolve_providers
from embedserve.models.text import TextPreprocessor, pool_tokens

log = logging.getLogger("embedserve.models")

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMAGE_CHUNK = 8  # images decoded per executor task


@dataclass(frozen=True)
class ImageInput:
    data: bytes  # encoded JPEG / PNG / WebP / BMP / GIF


@dataclass(frozen=True)
class TextInput:
    text: str


@dataclass(frozen=True)
class RuntimeOptions:
    """How towers run; one object built by the CLI from flags."""

    device: str = "auto"  # auto | cpu | cuda
    max_batch_size: int = 32  # items per ORT call
    max_delay_ms: float = 2.0  # how long a batch waits for more requests
    max_image_bytes: int = 20 << 20
    max_image_pixels: int = 40_000_000  # width * height, checked before decoding
    intra_op_threads: int = 0  # ORT threads per session; 0 = ORT's default (all cores)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got '{self.device}'")
        if self.max_batch_size < 1 or self.max_delay_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_delay_ms >= 0")
        if self.max_image_bytes < 1 or self.max_image_pixels < 1 or self.intra_op_threads < 0:
            raise ValueError("max_image_bytes and max_image_pixels must be >= 1, intra_op_threads >= 0")


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of [N, D] scaled to unit L2 norm; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)


class Tower:
    """One modality of one model: preprocessor + TowerSession + Batcher."""

    def __init__(
        self,
        manifest: Manifest,
        modality: str,
        options: RuntimeOptions,
        providers: list[str],
        executor: Executor,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.modality = modality
        self.max_batch_size = options.max_batch_size
        self._normalize = manifest.normalize
        spec = manifest.image if modality == "image" else manifest.text
        if spec is None:
            raise ValueError(f"model '{manifest.name}' has no {modality} tower")
        self.spec = spec
        self._pooling = spec.pooling if isinstance(spec, TextTowerSpec) else "none"
        self.session = TowerSession(
            spec.file,
            providers,
            intra_op_threads=options.intra_op_threads,
            modality=modality,
            dim=manifest.dim,
            output_rank=2 if self._pooling == "none" else 3,
            strict=options.device != "auto",
        )
        inputs = self.session.input_names
        self.preprocessor: ImagePreprocessor | TextPreprocessor
        if isinstance(spec, ImageTowerSpec):
            if len(inputs) != 1:
                raise BundleError(f"{spec.file}: an image tower has one input, this one has {inputs}")
            self.preprocessor = ImagePreprocessor(
                spec, max_image_bytes=options.max_image_bytes, max_image_pixels=options.max_image_pixels
            )
        else:
            if not {"input_ids", "attention_mask"} <= set(inputs) <= set(TEXT_INPUTS):
                raise BundleError(
                    f"{spec.file}: text tower inputs are {inputs}; "
                    "needs input_ids and attention_mask (token_type_ids optional)"
                )
            self.preprocessor = TextPreprocessor(spec.tokenizer, spec.max_length)
        self.batcher = Batcher(
            self.run_batch,
            max_batch_size=options.max_batch_size,
            max_delay_ms=options.max_delay_ms,
            executor=executor,
            name=f"{manifest.name}/{modality}",
            on_batch=on_batch,
        )

    def run_batch(self, items: list[np.ndarray]) -> np.ndarray:
        """Preprocessed items (image [C, H, W] or text ids [T_i]) → float32 [N, D]."""
        if isinstance(self.preprocessor, TextPreprocessor):
            input_ids, attention_mask = self.preprocessor.pad(items)
            known = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": np.zeros_like(input_ids),
            }
            out = self.session.run({name: known[name] for name in self.session.input_names})
            if self._pooling != "none":
                out = pool_tokens(out, attention_mask, self._pooling)
        else:
            out = self.session.run({self.session.input_names[0]: np.stack(items)})
        return l2_normalize(out) if self._normalize else out

    def warm_up(self) -> None:
        """Run one batch of two dummy items (also proves the batch axis is dynamic)."""
        try:
            if isinstance(self.preprocessor, TextPreprocessor):
                items = self.preprocessor.encode(["warm up", "a"])
            else:
                shape = (self.preprocessor.spec.channels, *self.preprocessor.spec.size)
                items = [np.zeros(shape, np.float32)] * 2
            self.run_batch(items)
        except Exception as e:
            raise BundleError(
                f"{self.spec.file}: warm-up batch of 2 failed (is the batch axis dynamic, "
                f"the output [N, dim]?): {e}"
            ) from None


class Model:
    """A loaded bundle: its manifest and its towers ("image" and/or "text")."""

    def __init__(self, manifest: Manifest, towers: dict[str, Tower], decode_executor: Executor) -> None:
        self.manifest = manifest
        self.towers = towers
        self._decode = decode_executor

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def dim(self) -> int:
        return self.manifest.dim

    async def embed(
        self, inputs: list[ImageInput | TextInput], *, deadline: float | None = None
    ) -> np.ndarray:
        """Embed a mixed list of inputs → float32 [len(inputs), dim], in input order.

        All-or-nothing: the first bad item (by index) fails the call as a typed
        error "item i: ..."; nothing is computed unless every item is valid.
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
            if modality not in self.towers:
                raise item_error(InvalidArgument, i, f"model '{self.name}' has no {modality} tower")
            if modality == "text" and not item.text.strip():  # type: ignore[union-attr]
                raise item_error(InvalidArgument, i, "text is empty")
            by_modality[modality].append(i)
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        if not inputs:
            return out
        if deadline is not None and deadline <= time.monotonic():
            raise DeadlineExceeded(f"model '{self.name}': deadline exceeded before preprocessing")

        jobs = {m: self._preprocess(m, idx, inputs) for m, idx in by_modality.items() if idx}
        prepared = dict(zip(jobs, await _all(list(jobs.values())), strict=True))
        errors = [error for _, error in prepared.values() if error is not None]
        if errors:
            raise min(errors, key=lambda e: e[0])[1]

        submits = [self.towers[m].batcher.submit(items, deadline) for m, (items, _) in prepared.items()]
        for m, rows in zip(prepared, await _all(submits), strict=True):
            out[by_modality[m]] = rows
        return out

    async def _preprocess(
        self, modality: str, indices: list[int], inputs: list[Any]
    ) -> tuple[list[np.ndarray], tuple[int, EmbedServeError] | None]:
        """Preprocessed items of one modality, and their first item error (index, error) if any."""
        loop = asyncio.get_running_loop()
        pre = self.towers[modality].preprocessor
        if isinstance(pre, TextPreprocessor):
            texts = [inputs[i].text for i in indices]
            ids = await loop.run_in_executor(self._decode, pre.tokenize, texts)
            empty = [i for i, row in zip(indices, ids, strict=True) if row.size == 0]
            if empty:
                return ids, (empty[0], item_error(InvalidArgument, empty[0], "text has no tokens"))
            return ids, None
        assert isinstance(pre, ImagePreprocessor)
        # a few chunks, not a task per image: each executor hop costs more than a small decode
        chunks = [indices[j : j + IMAGE_CHUNK] for j in range(0, len(indices), IMAGE_CHUNK)]
        jobs = [
            loop.run_in_executor(
                self._decode, _preprocess_images, pre, [inputs[i].data for i in chunk], chunk
            )
            for chunk in chunks
        ]
        arrays: list[np.ndarray] = []
        for result in await asyncio.gather(*jobs):
            chunk_arrays, error = result
            if error is not None:
                return [], error
            arrays.extend(chunk_arrays)
        return arrays, None


def _preprocess_images(
    pre: ImagePreprocessor, datas: list[bytes], indices: list[int]
) -> tuple[list[np.ndarray], tuple[int, EmbedServeError] | None]:
    """Decode one chunk of images; stop at the first bad one and return it as (index, error)."""
    out = []
    for data, i in zip(datas, indices, strict=True):
        try:
            out.append(pre.preprocess(data, i))
        except EmbedServeError as err:
            return [], (i, err)
    return out, None


async def _all(aws: list[Awaitable[Any]]) -> list[Any]:
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


class ModelRegistry:
    """The models a server has loaded, by name; ``default_name`` answers the empty name."""

    def __init__(
        self,
        options: RuntimeOptions,
        decode_executor: Executor,
        infer_executor: Executor,
        *,
        on_batch: Callable[[str, str], Callable[[int], None]] | None = None,
    ) -> None:
        """``on_batch(model, modality)`` is called once per tower at load and returns the
        callback that then gets each inference batch's size (metrics)."""
        self.options = options
        self._decode = decode_executor
        self._infer = infer_executor
        self._on_batch = on_batch
        self._models: dict[str, Model] = {}
        self._default = ""

    @property
    def default_name(self) -> str:
        """The model used for an empty name: the first loaded unless set."""
        return self._default

    @default_name.setter
    def default_name(self, name: str) -> None:
        self._default = self.get(name).name

    def load(self, bundle_dirs: list[Path]) -> None:
        """Load bundles: sessions built and warmed up (sync, slow). Raises BundleError,
        or RuntimeError when the requested device cannot be used; all or nothing."""
        providers = resolve_providers(self.options.device)
        loaded: dict[str, Model] = {}
        for bundle_dir in bundle_dirs:
            manifest = load_manifest(bundle_dir)
            if manifest.name in self._models or manifest.name in loaded:
                other = (self._models | loaded)[manifest.name].manifest.path
                raise BundleError(f"{manifest.path}: model name '{manifest.name}' is already used by {other}")
            started = time.perf_counter()
            towers = {m: self._tower(manifest, m, providers) for m in manifest.modalities}
            for tower in towers.values():
                tower.warm_up()
            loaded[manifest.name] = Model(manifest, towers, self._decode)
            log.info(
                "loaded model %s %s (dim %d, %s) from %s in %.2f s: %s",
                manifest.name,
                manifest.version,
                manifest.dim,
                manifest.metric,
                manifest.path,
                time.perf_counter() - started,
                ", ".join(f"{m} on {t.session.execution_provider}" for m, t in towers.items()),
            )
        self._models.update(loaded)
        if not self._default and self._models:
            self._default = next(iter(self._models))

    def _tower(self, manifest: Manifest, modality: str, providers: list[str]) -> Tower:
        on_batch = self._on_batch(manifest.name, modality) if self._on_batch else None
        return Tower(manifest, modality, self.options, providers, self._infer, on_batch)

    def start(self) -> None:
        """Start every batcher; call from inside the running event loop."""
        for tower in self._towers():
            tower.batcher.start()

    async def stop(self) -> None:
        """Drain and stop every batcher."""
        await asyncio.gather(*(tower.batcher.stop() for tower in self._towers()))

    @property
    def healthy(self) -> bool:
        """At least one model, and every batcher running."""
        return bool(self._models) and all(t.batcher.healthy for t in self._towers())

    def get(self, name: str) -> Model:
        """The model called ``name`` ("" = the default); NotFound otherwise."""
        model = self._models.get(name or self._default)
        if model is None:
            loaded = ", ".join(self._models) or "none"
            raise NotFound(f"model '{name}' not found; loaded: {loaded}")
        return model

    def _towers(self) -> list[Tower]:
        return [tower for model in self._models.values() for tower in model.towers.values()]

    def list(self) -> list[Model]:
        """Loaded models, in load order."""
        return list(self._models.values())
