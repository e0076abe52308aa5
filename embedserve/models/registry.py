"""The models a server has loaded, by name: bundles read, towers built and warmed up, batchers run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from embedserve.config import ServerConfig
from embedserve.errors import BundleError, NotFound, quote
from embedserve.models.bundle import Manifest, load_manifest
from embedserve.models.model import Model
from embedserve.models.runtime import resolve_providers
from embedserve.models.tower import Tower

log = logging.getLogger("embedserve.models")


class ModelRegistry:
    """The models a server has loaded, by name; ``default_name`` answers the empty name."""

    def __init__(
        self,
        config: ServerConfig,
        decode_executor: Executor,
        infer_executor: Executor,
        *,
        on_batch: Callable[[str, str], Callable[[int], None]] | None = None,
        decode_workers: int = 1,
    ) -> None:
        """``on_batch(model, modality)`` is called once per tower at load and returns the
        callback that then gets each inference batch's size (metrics). ``decode_workers``: the
        decode executor's threads (a lone request's costly images are split over as many)."""
        self.config = config
        self._decode = decode_executor
        self._decode_workers = decode_workers
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
        providers = resolve_providers(self.config.device)
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
            loaded[manifest.name] = Model(manifest, towers, self._decode, self._decode_workers)
            log.info(
                "loaded model %s %s (dim %d, %s) from %s in %.2f s: %s",
                manifest.name,
                manifest.version,
                manifest.dim,
                manifest.metric,
                manifest.path,
                time.perf_counter() - started,
                ", ".join(f"{m} on {t.execution_provider}" for m, t in towers.items()),
            )
        self._models.update(loaded)
        if not self._default and self._models:
            self._default = next(iter(self._models))

    def _tower(self, manifest: Manifest, modality: str, providers: list[str]) -> Tower:
        on_batch = self._on_batch(manifest.name, modality) if self._on_batch else None
        return Tower(manifest, modality, self.config, providers, self._infer, on_batch)

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
            raise NotFound(f"model {quote(name)} not found; loaded: {loaded}")
        return model

    def _towers(self) -> list[Tower]:
        return [tower for model in self._models.values() for tower in model.towers.values()]

    def list(self) -> list[Model]:
        """Loaded models, in load order."""
        return list(self._models.values())
