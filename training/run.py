"""A run directory and what it is built from: data, pixel spec, method, checkpoints.

Layout of ``RUN/``::

    config.json        the FitConfig, exactly as trained
    metrics.jsonl      one JSON object per epoch (loss, lr, embedding_std, knn, seconds)
    checkpoints/last.pt   resumable state (model, optimiser, RNG, epoch); ``torch.load(weights_only=True)``
    plot.png           loss, k-NN accuracy and embedding std over epochs
    eval.json          written by ``embedserve-train eval``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.augment import Normalize, preset
from training.backbones import build_backbone
from training.config import FitConfig
from training.data import ImageSet, PixelSpec, channel_stats, load_dataset, render
from training.methods import DEFAULT_AUGMENT, Method, make_method
from training.text.run import (
    TEXT_METHODS,
    PairData,
    PairSpec,
    TextData,
    TextSpec,
    build_text_method,
    prepare_text_data,
)

CHECKPOINT_FORMAT = 1
DATASET_AUGMENT = {"digits": "digits"}  # others get "natural"


@dataclass
class Data:
    """Training (and evaluation) images, rendered once as the server would."""

    train: ImageSet
    eval: ImageSet | None
    spec: PixelSpec  # with the mean/std the bundle will carry
    train_pixels: torch.Tensor  # float32 [N, C, H, W] in [0, 1]
    eval_pixels: torch.Tensor | None

    @property
    def inputs(self) -> tuple[torch.Tensor, ...]:
        """What the loop indexes per batch."""
        return (self.train_pixels,)


def prepare_data(cfg: FitConfig, run_dir: Path | None = None) -> Data | TextData | PairData:
    """The run's data, prepared once: images rendered as the server would, texts tokenized with
    the run's tokenizer (which text runs keep in ``run_dir``)."""
    if cfg.method in TEXT_METHODS:
        if run_dir is None:
            raise ValueError(f"a {cfg.method} run needs its run directory (for its tokenizer)")
        return prepare_text_data(cfg, Path(run_dir))
    train, evaluation = load_dataset(cfg.data, cfg.eval_data, cfg.channels)
    channels = cfg.channels or train.channels
    unit = PixelSpec(channels, tuple(cfg.size), (0.0,) * channels, (1.0,) * channels, cfg.interpolation)
    train_pixels = render(train.images, unit)
    mean, std = channel_stats(train_pixels)
    spec = PixelSpec(
        channels, tuple(cfg.size), tuple(cfg.mean or mean), tuple(cfg.std or std), cfg.interpolation
    )
    eval_pixels = None
    if evaluation is not None and evaluation.labels is not None:
        eval_pixels = torch.from_numpy(render(evaluation.images, unit))
    return Data(train, evaluation, spec, torch.from_numpy(train_pixels), eval_pixels)


def augment_name(cfg: FitConfig) -> str:
    return cfg.augment or DEFAULT_AUGMENT.get(cfg.method) or DATASET_AUGMENT.get(cfg.data, "natural")


def build_method(cfg: FitConfig, spec: PixelSpec | TextSpec | PairSpec) -> Method:
    """A freshly initialised method (seeded by ``cfg.seed``), on the CPU; ``spec`` is ``data.spec``."""
    if cfg.method in TEXT_METHODS:
        return build_text_method(cfg, spec)  # type: ignore[arg-type, return-value]
    assert isinstance(spec, PixelSpec)
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.backbone, spec.channels, spec.size)
    augment = preset(augment_name(cfg), **cfg.augment_overrides)
    return make_method(
        cfg.method,
        backbone,
        Normalize(spec.mean, spec.std),
        augment,
        cfg.method_options,
        (spec.channels, *spec.size),
    )


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {state.get('format')}, expected {CHECKPOINT_FORMAT}")
    return state


def load_run(run_dir: Path) -> tuple[FitConfig, Any, Method, dict[str, Any]]:
    """(config, data, trained method in eval mode, checkpoint state) of a finished or partial run."""
    run_dir = Path(run_dir)
    cfg = FitConfig.load(run_dir / "config.json")
    data = prepare_data(cfg, run_dir)
    method = build_method(cfg, data.spec)
    state = load_checkpoint(checkpoint_path(run_dir))
    method.load_state_dict(state["model"])
    method.eval()
    return cfg, data, method, state


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def labels_of(images: ImageSet) -> np.ndarray:
    if images.labels is None:
        raise ValueError("these images have no labels")
    return images.labels
