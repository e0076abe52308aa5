"""Captioned shapes: the seeded shapes images with English captions built from what was drawn.

Each image of ``training.data.shapes`` gets ``len(TEMPLATES)`` captions, one per
phrasing, from its attributes: shape, colour, size (``small`` when the radius is
under 0.3 of the image, else ``large``) and position (the centre's cell in a 3x3
grid: "top left" ... "bottom right", "centre"). Some phrasings name every
attribute, some only colour and shape.

``HELD_OUT`` shape x colour combinations (one per shape, each with a different
colour: every green triangle, every blue circle, ...) never appear in training
images or captions: zero-shot accuracy on them measures whether a model composes
"green" and "triangle" it has only seen apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data.files import manifest_rows
from training.data.images import encode_png
from training.data.shapes import COLOUR_NAMES, SHAPES, ShapeAttributes, shape_sample

TEMPLATES = (
    "a {size} {colour} {shape} at the {position}",
    "{position}: a {size} {colour} {shape}",
    "a {colour} {shape}, {size}, in the {position}",
    "the {shape} is {colour} and {size}",
    "a {colour} {shape}",
    "a {shape} in {colour} near the {position}",
)
HELD_OUT = ((2, 1), (0, 2), (4, 3), (1, 4), (3, 0))  # (shape, colour): triangle-green, circle-blue, ...
_ROWS = ("top", "", "bottom")
_COLS = ("left", "", "right")


def position_name(attributes: ShapeAttributes, size: int) -> str:
    """The 3x3 grid cell of the shape's centre: "top left", "top", ..., "centre", ..., "bottom right"."""
    row = _ROWS[min(2, int(3 * attributes.cy / size))]
    col = _COLS[min(2, int(3 * attributes.cx / size))]
    return " ".join(p for p in (row, col) if p) or "centre"


def captions(attributes: ShapeAttributes, size: int) -> list[str]:
    """One caption per template for one image."""
    words = {
        "shape": SHAPES[attributes.shape],
        "colour": COLOUR_NAMES[attributes.colour],
        "size": "small" if attributes.radius < 0.3 * size else "large",
        "position": position_name(attributes, size),
    }
    return [t.format(**words) for t in TEMPLATES]


def combo_name(shape: int, colour: int) -> str:
    return f"{COLOUR_NAMES[colour]} {SHAPES[shape]}"


@dataclass(frozen=True)
class CaptionedImages:
    """PNG images with their captions (``len(TEMPLATES)`` per image) and shape x colour combos."""

    images: list[bytes]
    captions: list[list[str]]
    combos: np.ndarray  # int64 [N]: shape * len(COLOUR_NAMES) + colour

    def __len__(self) -> int:
        return len(self.images)


def captioned_shapes(
    n: int,
    *,
    size: int = 32,
    seed: int = 0,
    combos: tuple[tuple[int, int], ...] | None = None,
    exclude: tuple[tuple[int, int], ...] = (),
) -> CaptionedImages:
    """``n`` captioned images from the stream ``seed``: shape and colour drawn at random, or cycled
    through ``combos`` when given; images whose combination is in ``exclude`` are skipped."""
    rng = np.random.default_rng(seed)
    images, texts, combo_ids = [], [], []
    while len(images) < n:
        force = combos[len(images) % len(combos)] if combos else None
        pixels, attributes = shape_sample(rng, size, force)
        if (attributes.shape, attributes.colour) in exclude:
            continue
        images.append(encode_png(pixels))
        texts.append(captions(attributes, size))
        combo_ids.append(attributes.shape * len(COLOUR_NAMES) + attributes.colour)
    return CaptionedImages(images, texts, np.asarray(combo_ids, dtype=np.int64))


def all_combos() -> list[tuple[int, int]]:
    return [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOUR_NAMES))]


def captioned_split(
    n_train: int = 6000, n_test: int = 600, size: int = 32, seed: int = 0
) -> tuple[CaptionedImages, CaptionedImages, CaptionedImages]:
    """(train, test of seen combinations, test of held-out combinations), from independent streams.

    Training never sees a ``HELD_OUT`` combination; the seen test set cycles through the 25
    others (``n_test`` images), the held-out one through the 5 held out (``n_test // 3`` images).
    """
    seen = tuple(c for c in all_combos() if c not in HELD_OUT)
    train = captioned_shapes(n_train, size=size, seed=seed, exclude=HELD_OUT)
    test_seen = captioned_shapes(n_test, size=size, seed=seed + 1, combos=seen)
    test_held_out = captioned_shapes(n_test // 3, size=size, seed=seed + 2, combos=HELD_OUT)
    return train, test_seen, test_held_out


def caption_manifest(path: Path) -> CaptionedImages:
    """(image, caption) pairs from a ``.csv`` / ``.jsonl`` manifest with ``path`` and ``caption``.

    Rows naming the same image give it several captions; an image with fewer captions
    than the most-captioned one repeats its own, so every image has the same number.
    Relative paths are relative to the manifest's directory. Combos are -1 (unknown).
    """
    path = Path(path)
    by_image: dict[Path, list[str]] = {}
    for row in manifest_rows(path, ("path", "caption")):
        caption = str(row["caption"]).strip()
        if not caption:
            raise ValueError(f"{path}: empty caption for {row['path']}")
        by_image.setdefault((path.parent / row["path"]).resolve(), []).append(caption)
    width = max(len(c) for c in by_image.values())
    images = [p.read_bytes() for p in by_image]
    texts = [[c[i % len(c)] for i in range(width)] for c in by_image.values()]
    return CaptionedImages(images, texts, np.full(len(images), -1, dtype=np.int64))
