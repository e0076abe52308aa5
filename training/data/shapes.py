"""A procedurally generated shapes dataset: no download, fully determined by its seed.

Each image is ``size``x``size`` RGB: a dark background with mild per-pixel noise and
one filled shape drawn with Pillow. Per image, drawn from ``numpy.random.default_rng(seed)``
in this order:

- shape: one of ``SHAPES`` (the label), uniformly;
- colour: one of ``COLOURS``, uniformly, then each RGB value jittered by ±20;
- size: the shape's radius, uniform in [0.2, 0.4] x ``size``;
- position: the centre, uniform so that the shape stays inside the image;
- rotation: uniform in [0, 360) degrees (a circle ignores it);
- background: level uniform in [0, 40] plus Gaussian noise of std 6, clipped to 0..255.

Labels are the shape, so k-NN accuracy tells whether an encoder sees shape beyond
colour, size and position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from training.data.images import ImageSet, encode_png

SHAPES = ("circle", "square", "triangle", "cross", "star")
COLOURS = ((230, 60, 60), (60, 200, 80), (70, 110, 240), (240, 220, 60), (220, 90, 220), (240, 240, 240))
COLOUR_NAMES = ("red", "green", "blue", "yellow", "purple", "white")


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "triangle":
        corners = [(k * 2 * math.pi / 3, r) for k in range(3)]
    elif shape == "star":
        corners = [(k * math.pi / 5, r if k % 2 == 0 else 0.45 * r) for k in range(10)]
    else:  # cross: a plus sign with arms one third of the width
        w = r / 3
        pts = [
            (w, r),
            (w, w),
            (r, w),
            (r, -w),
            (w, -w),
            (w, -r),
            (-w, -r),
            (-w, -w),
            (-r, -w),
            (-r, w),
            (-w, w),
            (-w, r),
        ]
        corners = [(math.atan2(y, x), math.hypot(x, y)) for x, y in pts]
    return [(cx + d * math.cos(a + angle), cy + d * math.sin(a + angle)) for a, d in corners]


@dataclass(frozen=True)
class ShapeAttributes:
    """What was drawn: indices into SHAPES and COLOURS, radius and centre in pixels."""

    shape: int
    colour: int
    radius: float
    cx: float
    cy: float


def shape_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """One image uint8 [size, size, 3] and its label (index into SHAPES)."""
    pixels, attributes = shape_sample(rng, size)
    return pixels, attributes.shape


def shape_sample(
    rng: np.random.Generator, size: int, combo: tuple[int, int] | None = None
) -> tuple[np.ndarray, ShapeAttributes]:
    """One image uint8 [size, size, 3] and its attributes; ``combo`` = (shape, colour) forces both
    (the random draws are made all the same, so the stream stays in step)."""
    label = int(rng.integers(len(SHAPES)))
    colour_index = int(rng.integers(len(COLOURS)))
    if combo is not None:
        label, colour_index = combo
    colour = np.array(COLOURS[colour_index]) + rng.integers(-20, 21, 3)
    r = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    angle = rng.uniform(0, 2 * math.pi)
    level = rng.uniform(0, 40)
    background = np.clip(level + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    fill = tuple(int(c) for c in np.clip(colour, 0, 255))
    if SHAPES[label] == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(SHAPES[label], cx, cy, r, angle), fill=fill)
    return np.asarray(image), ShapeAttributes(label, colour_index, float(r), float(cx), float(cy))


def shapes_dataset(n: int, *, size: int = 32, seed: int = 0) -> ImageSet:
    """``n`` shapes images as PNG-encoded RGB ``ImageSet`` with labels (see module docstring)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        pixels, label = shape_image(rng, size)
        images.append(encode_png(pixels))
        labels.append(label)
    return ImageSet(images, np.asarray(labels, dtype=np.int64), SHAPES, channels=3)


def shapes_split(
    n_train: int = 2000, n_test: int = 500, size: int = 32, seed: int = 0
) -> tuple[ImageSet, ImageSet]:
    """Train and test sets drawn from independent streams (seeds ``seed`` and ``seed + 1``)."""
    return shapes_dataset(n_train, size=size, seed=seed), shapes_dataset(n_test, size=size, seed=seed + 1)
