"""CLIP-style image-text alignment (Radford et al., 2021), on small towers.

An image tower (any backbone of ``training.backbones`` + a linear projection) and
a text tower (``TextTransformer`` pooled + a linear projection) map matching
image/caption pairs close together in one space. Loss: the symmetric InfoNCE of
``clip_contrastive`` over the batch, with a learnable logit scale (log inverse
temperature) initialised at log(1 / 0.07) and clamped to at most log(100), as CLIP
does. Each step pairs every image with one of its captions drawn at random.

Exported: both towers into one bundle, both L2-normalised, so a text query and
an image query land in the same space (the image tower's normalisation is the
manifest's ``normalize``; the text tower's is inside its graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.augment import AugmentConfig, Normalize, augment
from training.backbones.text import TextEmbedder, TextTransformer
from training.losses import clip_contrastive, std_of_l2_normalized

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass(frozen=True)
class CLIPOptions:
    embed_dim: int = 64  # the shared space
    grid: int = 4  # image tower: average the last feature map to grid x grid cells (0 = global pool)
    init_temperature: float = 0.07
    pooling: str = "mean"  # text tower: "mean" over tokens or the [CLS] token
    augment_images: bool = False  # captions name colour and position: crops and colour jitter would lie


class ImageTower(nn.Module):
    """Normalised pixels [N, C, H, W] → [N, embed_dim] (unnormalised: the server normalises).

    With ``grid`` > 0 and a convolutional backbone, the last feature map is averaged
    to grid x grid cells and all cells are projected together: a global average
    would throw away where things are, and captions say "top left".
    """

    def __init__(self, backbone: nn.Module, embed_dim: int, grid: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        self.grid = grid if hasattr(backbone, "feature_map") else 0
        features = backbone.out_dim * max(1, self.grid) ** 2
        self.pool = nn.AdaptiveAvgPool2d(self.grid) if self.grid else nn.Identity()
        self.projection = nn.Linear(features, embed_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.grid:
            return self.projection(self.pool(self.backbone.feature_map(x)).flatten(1))
        return self.projection(self.backbone(x))


class CLIP(nn.Module):
    """The loop calls ``method(pixels, captions, progress)``: pixels float [B, C, H, W] in [0, 1],
    captions int64 [B, P, T] (P phrasings per image, padding id ``pad_id``)."""

    name = "clip"
    Options = CLIPOptions
    modality = "image+text"

    def __init__(
        self,
        backbone: nn.Module,
        normalize: Normalize,
        augment_config: AugmentConfig,
        transformer: TextTransformer,
        options: CLIPOptions,
        pad_id: int,
    ) -> None:
        super().__init__()
        self.options, self.pad_id = options, pad_id
        self.normalize, self.augment = normalize, augment_config
        self.image = ImageTower(backbone, options.embed_dim, options.grid)
        self.text = TextEmbedder(
            transformer, options.pooling, nn.Linear(transformer.out_dim, options.embed_dim, bias=False)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / options.init_temperature)))
        self.channels_last = False

    def forward(self, pixels: Tensor, captions: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        if self.options.augment_images:
            pixels = augment(pixels, self.augment)
        pick = torch.randint(captions.shape[1], (len(captions),), device=captions.device)
        ids = captions[torch.arange(len(captions), device=captions.device), pick]
        ids = ids[:, : int((ids != self.pad_id).sum(1).max())]  # drop all-padding columns
        image = F.normalize(self.image(self.normalize(pixels)), dim=-1)
        text = self.text(ids, (ids != self.pad_id).long())
        loss = clip_contrastive(image, text, self.logit_scale)
        return loss, {
            "embedding_std": std_of_l2_normalized(image),
            "logit_scale": self.logit_scale.detach().exp(),
        }

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        self.logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)

    def encoder(self) -> ImageTower:
        """The image tower, as export writes image.onnx (normalised pixels → [N, embed_dim])."""
        return self.image

    def text_encoder(self) -> TextEmbedder:
        """The text tower, as export writes text.onnx (ids, mask → L2-normalised [N, embed_dim])."""
        return self.text
