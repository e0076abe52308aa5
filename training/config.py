"""A training run's configuration: one typed object, written to ``config.json`` in the run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from training.backbones import BackboneConfig
from training.backbones.text import TextConfig


@dataclass(frozen=True)
class FitConfig:
    method: str = "simclr"
    # images: "digits", "shapes", an image folder, or a .csv/.jsonl manifest;
    # mlm: "pydoc" or a text file/folder; clip: "captioned-shapes" or a .csv/.jsonl of path, caption
    data: str = "digits"
    eval_data: str | None = None  # labelled images for k-NN during training (files only)
    channels: int | None = None  # 1 or 3; None = the dataset's own
    size: tuple[int, int] = (16, 16)  # the bundle's input (H, W); images are resized as the server does
    interpolation: str = "bilinear"
    mean: tuple[float, ...] | None = None  # None = measured on the training images
    std: tuple[float, ...] | None = None
    augment: str | None = None  # preset name; None = the method's default, else the dataset's
    augment_overrides: dict[str, Any] = field(default_factory=dict)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text: TextConfig = field(default_factory=TextConfig)  # mlm and clip: the text tower and tokenizer size
    text_init: str | None = None  # clip: an mlm run directory to start the text tower (and tokenizer) from
    image_init: str | None = None  # clip: an image run directory to start the image backbone from
    method_options: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 256  # per process
    optimizer: str = "adamw"
    lr: float = 2e-3
    min_lr: float = 0.0
    weight_decay: float = 1e-4
    warmup_epochs: int = 10
    clip_grad: float = 3.0  # max gradient norm; 0 = off
    seed: int = 0
    eval_every: int = 10  # epochs between k-NN evaluations (0 = only at the end)
    checkpoint_every: int = 10  # epochs between checkpoints (the last epoch is always saved)
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # mixed precision on CUDA (bf16 where supported); ignored on CPU
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default
    channels_last: bool = True  # faster convolutions on CPU

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FitConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        values = dict(raw)
        if isinstance(values.get("backbone"), dict):
            bb = dict(values["backbone"])
            if "depths" in bb:
                bb["depths"] = tuple(bb["depths"])
            values["backbone"] = BackboneConfig(**bb)
        if isinstance(values.get("text"), dict):
            values["text"] = TextConfig(**values["text"])
        for key in ("size", "mean", "std"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> FitConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def with_(self, **changes: Any) -> FitConfig:
        return replace(self, **changes)


def coerce(default: Any, value: Any) -> Any:
    """A value from the CLI or JSON (string, list) converted to the type of ``default``."""
    if isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        if isinstance(default, tuple) and isinstance(value, tuple) and default:
            return tuple(type(default[0])(v) for v in value)
        return value
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes", "on")
    if isinstance(default, tuple):
        parts = value.strip("()[] ").split(",")
        return tuple(type(default[0])(v) for v in parts) if default else tuple(parts)
    return type(default)(value)
