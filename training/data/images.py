"""Image sets and the one way images become tensors: the server's own preprocessing.

An ``ImageSet`` holds encoded image files (PNG/JPEG bytes, exactly what a client
would send) and optional labels. ``render`` turns them into float32 pixels
[N, C, H, W] in [0, 1] with ``embedserve.models.ImagePreprocessor`` (decode, mode,
resize, centre crop), so training sees bit for bit the pixels serving will see;
mean/std normalisation is applied later, by ``Normalize``, and recorded in the
bundle manifest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from embedserve.models.bundle import ImageTowerSpec
from embedserve.models.image import ImagePreprocessor

# Generous limits: training reads files we were given, not requests from strangers.
_MAX_BYTES = 1 << 30
_MAX_PIXELS = 1 << 30


@dataclass(frozen=True)
class ImageSet:
    """Encoded images with optional integer labels.

    ``images``: encoded files, one per item; ``labels``: int64 [N] or None when
    unlabelled; ``classes``: label index → class name.
    """

    images: list[bytes]
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    channels: int = 1  # what the images are meant to be read as: 1 = grayscale, 3 = RGB

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> ImageSet:
        labels = None if self.labels is None else self.labels[index]
        return ImageSet([self.images[i] for i in index], labels, self.classes, self.channels)


@dataclass(frozen=True)
class PixelSpec:
    """How images become pixels, as the bundle manifest will say (``image`` section)."""

    channels: int
    size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def tower_spec(self, onnx_file: Path) -> ImageTowerSpec:
        """The bundle manifest's ``image`` tower for a graph at ``onnx_file`` fed these pixels."""
        return ImageTowerSpec(
            file=Path(onnx_file),
            channels=self.channels,
            size=self.size,
            mean=self.mean,
            std=self.std,
            interpolation=self.interpolation,
        )


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W] (grayscale) or [H, W, 3] (RGB) → PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def render(images: list[bytes], spec: PixelSpec) -> np.ndarray:
    """Encoded images → float32 [N, C, H, W] in [0, 1], through the server's preprocessor.

    Normalisation is left out here (mean 0, std 1) and applied by ``Normalize``.
    """
    unit = ImageTowerSpec(
        file=Path("unused.onnx"),
        channels=spec.channels,
        size=spec.size,
        mean=(0.0,) * spec.channels,
        std=(1.0,) * spec.channels,
        interpolation=spec.interpolation,
    )
    pre = ImagePreprocessor(unit, max_image_bytes=_MAX_BYTES, max_image_pixels=_MAX_PIXELS)
    out = np.empty((len(images), spec.channels, *spec.size), dtype=np.float32)
    for i, data in enumerate(images):
        out[i] = pre.preprocess(data, i)
    return out


def channel_stats(pixels: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of float [N, C, H, W] pixels, rounded for the manifest."""
    mean = pixels.mean(axis=(0, 2, 3))
    std = np.maximum(pixels.std(axis=(0, 2, 3)), 1e-3)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)
