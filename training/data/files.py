"""Images from disk: an image folder, or a CSV / JSONL manifest of paths.

- Folder: if it has sub-folders holding images, each sub-folder is a class (labels are
  for evaluation only); otherwise the folder is one flat, unlabelled set.
- CSV: a header row with a ``path`` column and optionally ``label``.
- JSONL: one object per line, ``{"path": ..., "label": ...}`` (label optional).
Relative paths in a manifest are relative to the manifest's directory. Either all
rows have a label or none does.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from training.data.images import ImageSet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _labelled(paths: list[Path], names: list[str | None], channels: int) -> ImageSet:
    images = [p.read_bytes() for p in paths]
    if all(n is None for n in names):
        return ImageSet(images, None, (), channels)
    if any(n is None for n in names):
        raise ValueError("either every image has a label or none does")
    classes = tuple(sorted(set(names)))  # type: ignore[arg-type]
    index = {c: i for i, c in enumerate(classes)}
    return ImageSet(images, np.asarray([index[n] for n in names], dtype=np.int64), classes, channels)


def image_folder(root: Path, channels: int = 3) -> ImageSet:
    """Every image under ``root``: labelled by class sub-folder, or flat and unlabelled."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and any(_is_image(f) for f in d.rglob("*")))
    if class_dirs:
        paths, names = [], []
        for d in class_dirs:
            for f in sorted(d.rglob("*")):
                if _is_image(f):
                    paths.append(f)
                    names.append(d.name)
        return _labelled(paths, names, channels)
    paths = sorted(f for f in root.iterdir() if _is_image(f))
    if not paths:
        raise ValueError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return _labelled(paths, [None] * len(paths), channels)


def manifest_rows(path: Path, required: tuple[str, ...] = ("path",)) -> list[dict]:
    """The rows of a ``.csv`` (with a header) or ``.jsonl`` manifest; each must have ``required``."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise ValueError(f"{path}: a manifest is .csv or .jsonl")
    if not rows or any(key not in r for r in rows for key in required):
        raise ValueError(f"{path}: every row needs {', '.join(repr(k) for k in required)}")
    return rows


def image_manifest(path: Path, channels: int = 3) -> ImageSet:
    """Images listed in a ``.csv`` (columns path[, label]) or ``.jsonl`` file."""
    path = Path(path)
    rows = manifest_rows(path)
    paths = [(path.parent / r["path"]).resolve() for r in rows]
    names = [None if r.get("label") in (None, "") else str(r["label"]) for r in rows]
    return _labelled(paths, names, channels)
