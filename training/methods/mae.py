"""MAE: masked autoencoder on a ViT (He et al., 2021).

The encoder sees only the visible ``1 - mask_ratio`` of the patches; a light
decoder fills in mask tokens and predicts the pixels of the hidden patches, scored
on those only (normalised per patch). The exported encoder is the ViT on the whole
image, pooled as its ``pool`` setting says (mean of patch tokens by default here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.augment import AugmentConfig, Normalize, augment
from training.backbones.vit import Block, ViT
from training.losses import masked_patch_mse, std_of_l2_normalized
from training.methods.base import Method


@dataclass(frozen=True)
class MAEOptions:
    mask_ratio: float = 0.75
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    pool: str = "mean"  # exported feature: "mean" of patch tokens or "cls"


class PooledViT(nn.Module):
    """A ViT whose output is the mean of its patch tokens ("mean") or the [CLS] token ("cls")."""

    def __init__(self, vit: ViT, pool: str) -> None:
        super().__init__()
        if pool not in ("mean", "cls"):
            raise ValueError(f"pool must be 'mean' or 'cls', got '{pool}'")
        self.vit, self.pool = vit, pool
        self.out_dim = vit.out_dim

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.vit.tokens(x)
        return tokens[:, 1:].mean(1) if self.pool == "mean" else tokens[:, 0]


def patchify(x: Tensor, p: int) -> Tensor:
    """[N, C, H, W] → [N, (H/p)(W/p), p*p*C], patches in row-major order."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


class MAE(Method):
    """Loss: ``masked_patch_mse(decoder(encoder(visible patches)), patches, mask)``."""

    name = "mae"
    Options = MAEOptions

    def __init__(
        self,
        backbone,
        normalize: Normalize,
        augment: AugmentConfig,
        options: MAEOptions,
        image_shape: tuple[int, int, int],
    ) -> None:
        if not isinstance(backbone, ViT):
            raise ValueError("MAE needs the 'vit' backbone")
        super().__init__(backbone, normalize, augment, image_shape)
        self.options = options
        d, p = options.decoder_dim, backbone.patch_size
        in_channels = backbone.patch_embed.in_channels
        self.decoder_embed = nn.Linear(backbone.out_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder_pos = nn.Parameter(torch.zeros(1, backbone.num_patches + 1, d))
        self.decoder = nn.ModuleList(Block(d, options.decoder_heads) for _ in range(options.decoder_depth))
        self.decoder_norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, p * p * in_channels)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)
        self.pooled = PooledViT(backbone, options.pool)

    def forward(self, images: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        vit: ViT = self.backbone
        x = self.normalize(augment(images, self.augment))
        n, num = x.shape[0], vit.num_patches
        keep_count = max(1, round(num * (1 - self.options.mask_ratio)))
        order = torch.rand(n, num, device=x.device).argsort(dim=1)  # random permutation per image
        restore = order.argsort(dim=1)
        keep = order[:, :keep_count]
        mask = torch.ones(n, num, device=x.device)
        mask[:, :keep_count] = 0
        mask = torch.gather(mask, 1, restore)  # 1 where hidden, in patch order

        latent = vit.tokens(x, keep)  # [N, 1 + K, dim]
        y = self.decoder_embed(latent)
        tokens = torch.cat([y[:, 1:], self.mask_token.expand(n, num - keep_count, -1)], dim=1)
        tokens = torch.gather(tokens, 1, restore.unsqueeze(-1).expand(-1, -1, y.shape[-1]))
        y = torch.cat([y[:, :1], tokens], dim=1) + self.decoder_pos
        for block in self.decoder:
            y = block(y)
        pred = self.decoder_pred(self.decoder_norm(y))[:, 1:]
        loss = masked_patch_mse(pred, patchify(x, vit.patch_size), mask, self.options.norm_pix_loss)
        return loss, {"embedding_std": std_of_l2_normalized(latent[:, 1:].mean(1))}

    def encoder(self) -> nn.Module:
        return self.pooled
