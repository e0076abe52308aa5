"""Datasets: built-in (digits, shapes) or from disk (folder, CSV/JSONL manifest).

``load_dataset(source)`` → (train set, evaluation set or None). The built-in ones
come with their fixed evaluation split; for files, pass a second source to
``--eval-data``. Training never reads the evaluation images.
"""

from __future__ import annotations

from pathlib import Path

from training.data.digits import digits_split
from training.data.files import image_folder, image_manifest
from training.data.images import ImageSet, PixelSpec, channel_stats, encode_png, render
from training.data.shapes import shapes_split

BUILTIN = ("digits", "shapes")


def load_images(source: str, channels: int = 3) -> ImageSet:
    """A folder or a manifest file of images (see ``training.data.files``)."""
    path = Path(source)
    if path.is_dir():
        return image_folder(path, channels)
    if path.is_file():
        return image_manifest(path, channels)
    raise FileNotFoundError(f"{source}: not a built-in dataset ({', '.join(BUILTIN)}), folder or manifest")


def load_dataset(
    source: str, eval_source: str | None = None, channels: int | None = None
) -> tuple[ImageSet, ImageSet | None]:
    """(train, eval) for a built-in name or a path; ``channels`` overrides 1/3 for files."""
    if source == "digits":
        return digits_split()
    if source == "shapes":
        return shapes_split()
    train = load_images(source, channels or 3)
    return train, (load_images(eval_source, channels or 3) if eval_source else None)


__all__ = [
    "BUILTIN",
    "ImageSet",
    "PixelSpec",
    "channel_stats",
    "digits_split",
    "encode_png",
    "image_folder",
    "image_manifest",
    "load_dataset",
    "load_images",
    "render",
    "shapes_split",
]
