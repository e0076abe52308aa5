"""A bundle's towers outside the server: synchronous embedding for batch jobs (embedserve.batch).

``Encoder`` runs exactly the server's path minus the event loop and the dynamic batcher: the same
``ImagePreprocessor`` / ``TextPreprocessor``, the same ``Tower.run_batch`` (padding, pooling, L2
normalisation), the same limits from a ``ServerConfig``. So a vector a job computes is the vector
the server returns for the same file (up to ONNX Runtime's batch-size rounding, ~1e-6).

A bad item never fails a batch here: each call returns, per item, either a vector or the reason
it has none, so one undecodable file in a million costs one row of an errors file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedserve.config import ServerConfig, default_models_dir
from embedserve.errors import BundleError, EmbedServeError
from embedserve.models.bundle import MANIFEST_NAME, Manifest, discover_bundles, load_manifest
from embedserve.models.image import ImagePreprocessor
from embedserve.models.runtime import resolve_providers
from embedserve.models.text import TextPreprocessor
from embedserve.models.tower import Tower


def find_bundle(name_or_path: str, search: list[Path] | None = None) -> Path:
    """A bundle directory: ``name_or_path`` itself if it holds a manifest, else the bundle of that
    name among ``search`` (default: the bundles shipped with embedserve). BundleError if none."""
    path = Path(name_or_path)
    if (path / MANIFEST_NAME).is_file():
        return path
    roots = search or [default_models_dir()]
    names = []
    for root in roots:
        for bundle in discover_bundles(root):
            manifest = load_manifest(bundle)
            if manifest.name == name_or_path:
                return bundle
            names.append(manifest.name)
    raise BundleError(
        f"model {name_or_path!r}: not a bundle directory, nor a bundle name in "
        f"{', '.join(map(str, roots))} (found: {', '.join(names) or 'none'})"
    )


@dataclass(frozen=True)
class Encoded:
    """One call's result: ``vectors`` float32 [N, dim] (rows of failed items are zero) and, per item,
    None or the reason it could not be embedded (``errors``), and whether a text was cut (``truncated``)."""

    vectors: np.ndarray
    errors: list[str | None]
    truncated: list[bool]


class Encoder:
    """The towers of one bundle, built as the server builds them (``config``: device, limits, threads)."""

    def __init__(self, bundle_dir: Path, config: ServerConfig | None = None) -> None:
        config = config or ServerConfig()
        self.config = config
        self.manifest: Manifest = load_manifest(Path(bundle_dir))
        providers = resolve_providers(config.device)
        # the towers' batchers are never started here: the executor is only there to build them
        self._unused = ThreadPoolExecutor(max_workers=1)
        self.towers = {
            m: Tower(self.manifest, m, config, providers, self._unused) for m in self.manifest.modalities
        }
        self._batch = config.max_batch_size

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def execution_provider(self) -> str:
        return next(iter(self.towers.values())).execution_provider

    def _tower(self, modality: str) -> Tower:
        tower = self.towers.get(modality)
        if tower is None:
            raise BundleError(f"model '{self.manifest.name}' has no {modality} tower")
        return tower

    def encode_images(self, datas: list[bytes | None]) -> Encoded:
        """Encoded images (None: an item with nothing to decode, given its error by the caller)."""
        tower = self._tower("image")
        pre = tower.preprocessor
        assert isinstance(pre, ImagePreprocessor)
        errors: list[str | None] = [None] * len(datas)
        arrays: list[np.ndarray] = []
        good: list[int] = []
        for i, data in enumerate(datas):
            if data is None:
                errors[i] = "no image data"
                continue
            try:
                arrays.append(pre.preprocess(data, i))
                good.append(i)
            except EmbedServeError as err:
                errors[i] = _reason(err)
        return Encoded(self._run(tower, arrays, good, len(datas)), errors, [False] * len(datas))

    def encode_texts(self, texts: list[str | None]) -> Encoded:
        tower = self._tower("text")
        pre = tower.preprocessor
        assert isinstance(pre, TextPreprocessor)
        errors: list[str | None] = [None] * len(texts)
        candidates: list[int] = []
        for i, text in enumerate(texts):
            if text is None:
                errors[i] = "no text"
                continue
            try:
                pre.check(text, i)
                candidates.append(i)
            except EmbedServeError as err:
                errors[i] = _reason(err)
        ids, cut = pre.tokenize([texts[i] for i in candidates])  # type: ignore[misc]
        truncated = [False] * len(texts)
        good, rows = [], []
        for i, row, was_cut in zip(candidates, ids, cut, strict=True):
            if row.size == 0:
                errors[i] = "text has no tokens"
                continue
            good.append(i)
            rows.append(row)
            truncated[i] = was_cut
        # longest first, as the server's batcher sees them: batches of similar lengths pad little
        order = sorted(range(len(rows)), key=lambda j: -len(rows[j]))
        vectors = self._run(tower, [rows[j] for j in order], [good[j] for j in order], len(texts))
        return Encoded(vectors, errors, truncated)

    def _run(self, tower: Tower, items: list[np.ndarray], positions: list[int], n: int) -> np.ndarray:
        out = np.zeros((n, self.dim), dtype=np.float32)
        for start in range(0, len(items), self._batch):
            chunk = positions[start : start + self._batch]
            out[chunk] = tower.run_batch(items[start : start + self._batch])
        return out

    def close(self) -> None:
        self._unused.shutdown(wait=False)


def _reason(err: EmbedServeError) -> str:
    """The bare reason, without the "item i: " the server adds (a job names the item itself)."""
    return err.detail
