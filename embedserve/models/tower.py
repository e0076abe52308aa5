"""One modality of one model: its preprocessor, ONNX Runtime session and dynamic batcher."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from embedserve.config import ServerConfig
from embedserve.errors import BundleError, InvalidArgument, item_error
from embedserve.metric import l2_normalize
from embedserve.models.batcher import Batcher
from embedserve.models.bundle import ImageTowerSpec, Manifest, TextTowerSpec
from embedserve.models.image import ImagePreprocessor
from embedserve.models.runtime import CUDA, TowerSession
from embedserve.models.text import TextPreprocessor, pool_tokens

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def concurrent_batches(provider: str, config: ServerConfig) -> int:
    """How many batches of one tower may run at once.

    On a GPU two: a second batch's host-side work (padding, the copy in, the copy out)
    overlaps the first's kernels. On CPU as many as the cores hold at ``intra_op_threads``
    ORT threads each, within the infer pool: one with ORT's default (a call already uses
    every core); with one thread a call, a batch per core. ORT synchronises its threads
    at every operator, which a small model's many small operators pay for: on 2 cores
    all-MiniLM-L6-v2 served 227-241 sentences/s as two 1-thread batches at once against
    207-222 as one 2-thread batch, and its int8 import (``import-st --int8``) 455-489
    against 186-312. A lone request is then cut into a share per free slot, run at once
    (``Batcher.lone_parts``, ``Model._split_alone``); a lone single item runs on one core."""
    if provider == CUDA:
        return 2
    if config.intra_op_threads <= 0:
        return 1
    return max(1, min(config.infer_threads, (os.cpu_count() or 1) // config.intra_op_threads))


class Tower:
    """Preprocessor + TowerSession + Batcher for ``modality`` ("image" or "text") of a bundle.

    ``run_batch`` (in the infer pool) pads, runs the session, pools and normalises:
    everything after decoding/tokenizing and before the vectors leave the models layer.
    """

    def __init__(
        self,
        manifest: Manifest,
        modality: str,
        config: ServerConfig,
        providers: list[str],
        executor: Executor,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.modality = modality
        self.max_batch_size = config.max_batch_size
        self._dim = manifest.dim
        self._normalize = manifest.normalize
        spec = manifest.image if modality == "image" else manifest.text
        if spec is None:
            raise BundleError(f"model '{manifest.name}' has no {modality} tower")
        self.spec: ImageTowerSpec | TextTowerSpec = spec
        self._pooling = spec.pooling if isinstance(spec, TextTowerSpec) else "none"
        self.session = TowerSession(
            spec.file,
            providers,
            intra_op_threads=config.intra_op_threads,
            modality=modality,
            dim=manifest.dim,
            output_rank=2 if self._pooling == "none" else 3,
            strict=config.device != "auto",
        )
        inputs = self.session.input_names
        self.preprocessor: ImagePreprocessor | TextPreprocessor
        if isinstance(spec, ImageTowerSpec):
            if len(inputs) != 1:
                raise BundleError(f"{spec.file}: an image tower has one input, this one has {inputs}")
            self.preprocessor = ImagePreprocessor(
                spec, max_image_bytes=config.max_image_bytes, max_image_pixels=config.max_image_pixels
            )
        else:
            if not {"input_ids", "attention_mask"} <= set(inputs) <= set(TEXT_INPUTS):
                raise BundleError(
                    f"{spec.file}: text tower inputs are {inputs}; "
                    "needs input_ids and attention_mask (token_type_ids optional)"
                )
            self.preprocessor = TextPreprocessor(spec.tokenizer, spec.max_length, config.max_text_bytes)
        text = isinstance(self.preprocessor, TextPreprocessor)
        self.batcher = Batcher(
            self.run_batch,
            max_batch_size=config.max_batch_size,
            max_delay_ms=config.max_delay_ms,
            executor=executor,
            name=f"{manifest.name}/{modality}",
            on_batch=on_batch,
            item_size=len if text else None,  # a text's cost is its padded length
            max_batch_cost=config.max_batch_tokens if text else 0,
            max_concurrent_batches=concurrent_batches(self.session.execution_provider, config),
            # on CPU a slot is a core: a lone request takes every free one (Model.encode); on a
            # GPU the slots share one device, where one batch costs less than two halves
            split_alone=self.session.execution_provider != CUDA,
        )

    @property
    def execution_provider(self) -> str:
        """The ONNX Runtime provider the session runs on."""
        return self.session.execution_provider

    @property
    def providers(self) -> list[str]:
        return list(self.session.providers)

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary (0 for an image tower)."""
        pre = self.preprocessor
        return pre.vocab_size if isinstance(pre, TextPreprocessor) else 0

    @property
    def queue_depth(self) -> int:
        """Items waiting in the batcher."""
        return self.batcher.queue_depth

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

    def embed_alone(
        self, items: list[Any], positions: list[int], decode: Executor | None = None, workers: int = 1
    ) -> tuple[np.ndarray, list[int]]:
        """One request's raw items (image bytes or texts; ``positions``: their input positions)
        preprocessed and run in this thread, as the batcher's ``run_alone`` calls it: rows in
        item order, and the positions of texts cut to max_length. The first bad item (by
        position) raises its item error before anything runs, as on the queued path. Images
        are decoded here and, when they cost enough, on up to ``workers`` - 1 threads of the
        ``decode`` pool beside (``ImagePreprocessor.preprocess_all``). Texts run longest first
        in batches of at most ``max_batch_tokens`` padded tokens, as the batcher would cut them."""
        pre = self.preprocessor
        if isinstance(pre, ImagePreprocessor):
            arrays = pre.preprocess_all(items, positions, decode, workers)
            self.batcher.observe(len(arrays))
            return self.run_batch(arrays), []
        ids, cut = pre.tokenize(items)
        for i, row in zip(positions, ids, strict=True):
            if row.size == 0:
                raise item_error(InvalidArgument, i, "text has no tokens")
        order = sorted(range(len(ids)), key=lambda j: -len(ids[j]))
        out = np.empty((len(ids), self._dim), dtype=np.float32)
        start = 0
        while start < len(order):
            # sorted longest first: a batch's first text is its longest, so its padded cost is
            # rows x that length (one text always fits)
            chunk = order[start : start + self.batcher.rows_within_cost(len(ids[order[start]]))]
            self.batcher.observe(len(chunk))
            out[chunk] = self.run_batch([ids[j] for j in chunk])
            start += len(chunk)
        return out, [i for i, was_cut in zip(positions, cut, strict=True) if was_cut]

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
