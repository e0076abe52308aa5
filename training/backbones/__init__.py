"""Backbones: the part of a method that is exported. Each maps [N, C, H, W] → [N, out_dim]."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from training.backbones.resnet import ResNet
from training.backbones.vit import ViT

BACKBONES = ("resnet", "vit")


@dataclass(frozen=True)
class BackboneConfig:
    """``resnet``: width, depths; ``vit``: patch_size, dim, depth, heads."""

    name: str = "resnet"
    width: int = 32
    depths: tuple[int, ...] = (1, 1, 1)
    patch_size: int = 4
    dim: int = 128
    depth: int = 4
    heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


def build_backbone(cfg: BackboneConfig, in_channels: int, image_size: tuple[int, int]) -> nn.Module:
    """A freshly initialised backbone (uses torch's global RNG)."""
    if cfg.name == "resnet":
        return ResNet(in_channels, cfg.width, cfg.depths)
    if cfg.name == "vit":
        return ViT(in_channels, image_size, cfg.patch_size, cfg.dim, cfg.depth, cfg.heads)
    raise ValueError(f"unknown backbone '{cfg.name}'; have {', '.join(BACKBONES)}")


__all__ = ["BACKBONES", "BackboneConfig", "ResNet", "ViT", "build_backbone"]
