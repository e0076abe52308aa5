"""Named, tuned configurations: ``embedserve-train fit --recipe NAME`` (flags still override).

The digits recipes are the ones ``bench/train_digits.py`` measures and the README
reports; each trains within 10 minutes on 2 CPU cores. Input 16x16: the server
upsamples the 8x8 PNG bilinearly, exactly as ``training.data.render`` does here.
The text recipes (``pydoc-mlm``, ``shapes-clip``) are the ones ``bench/train_text.py``
measures; ``shapes-clip`` builds the shipped ``models/shapes-clip`` bundle.
"""

from __future__ import annotations

from training.backbones import BackboneConfig
from training.backbones.text import TextConfig
from training.config import FitConfig

_DIGITS = FitConfig(
    data="digits",
    size=(16, 16),
    threads=2,
    eval_every=25,
    checkpoint_every=25,
    backbone=BackboneConfig(name="resnet", width=32, depths=(1, 1, 1)),
    batch_size=128,
)

RECIPES: dict[str, FitConfig] = {
    "digits-simclr": _DIGITS.with_(
        method="simclr",
        method_options={"temperature": 0.2, "hidden": 512, "out_dim": 128},
        epochs=200,
        lr=2e-3,
        weight_decay=1e-4,
        warmup_epochs=10,
    ),
    # EMA methods learn slowly in a short schedule (~1,500 steps); a lower base momentum
    # lets the target/teacher follow faster (BYOL: 0.99 gave 77.6 % at L=10 after 50 epochs, 0.96
    # 86 %; DINO: 0.99 reached 75 % after 75 epochs, 0.96 88.5 % after 100, 0.9 collapsed).
    "digits-byol": _DIGITS.with_(
        method="byol",
        method_options={"momentum": 0.96, "hidden": 1024, "out_dim": 128},
        epochs=150,
        lr=3e-3,
    ),
    "digits-dino": _DIGITS.with_(
        method="dino",
        method_options={"momentum": 0.96, "prototypes": 256, "head_bn": True},
        epochs=150,
        lr=3e-3,
    ),
    "digits-mae": _DIGITS.with_(
        method="mae",
        backbone=BackboneConfig(name="vit", patch_size=4, dim=128, depth=4, heads=4),
        epochs=100,
        lr=1e-3,
        weight_decay=0.05,
    ),
    "digits-vae": _DIGITS.with_(
        method="vae",
        epochs=100,
        lr=1e-3,
    ),
    "pydoc-mlm": FitConfig(
        method="mlm",
        data="pydoc",
        text=TextConfig(vocab_size=4000, max_length=64, dim=128, depth=2, heads=4),
        epochs=40,
        batch_size=64,
        lr=1e-3,
        weight_decay=0.01,
        warmup_epochs=2,
        eval_every=5,
        checkpoint_every=5,
        threads=2,
    ),
    "shapes-clip": FitConfig(
        method="clip",
        data="captioned-shapes",
        size=(32, 32),
        backbone=BackboneConfig(name="resnet", width=32, depths=(1, 1, 1)),
        text=TextConfig(vocab_size=400, max_length=24, dim=64, depth=2, heads=4),
        method_options={"embed_dim": 128, "grid": 4},
        epochs=20,
        batch_size=256,
        lr=2e-3,
        weight_decay=1e-4,
        warmup_epochs=2,
        eval_every=5,
        checkpoint_every=5,
        threads=2,
    ),
}


def recipe(name: str) -> FitConfig:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe '{name}'; have {', '.join(RECIPES)}")
    return RECIPES[name]
