"""Self-supervised methods, by name. Each module states its loss; see ``base.Method``."""

from __future__ import annotations

from typing import Any

from torch import nn

from training.augment import AugmentConfig, Normalize
from training.methods.base import Method, parse_options
from training.methods.byol import BYOL
from training.methods.dino import DINO
from training.methods.mae import MAE
from training.methods.simclr import SimCLR
from training.methods.vae import VAE

METHODS: dict[str, type[Method]] = {m.name: m for m in (SimCLR, BYOL, DINO, MAE, VAE)}

# The augmentation preset a method uses unless told otherwise: reconstruction
# methods learn from what is in the image, not from invariance to heavy changes.
DEFAULT_AUGMENT = {"simclr": None, "byol": None, "dino": None, "mae": "light", "vae": "light"}


def make_method(
    name: str,
    backbone: nn.Module,
    normalize: Normalize,
    augment: AugmentConfig,
    options: dict[str, Any],
    image_shape: tuple[int, int, int],
) -> Method:
    """Build method ``name`` around ``backbone``; ``options`` are its Options fields (strings allowed)."""
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; have {', '.join(METHODS)}")
    cls = METHODS[name]
    return cls(backbone, normalize, augment, parse_options(cls.Options, options), image_shape)


__all__ = ["DEFAULT_AUGMENT", "METHODS", "Method", "make_method"]
