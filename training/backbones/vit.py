"""A small Vision Transformer: patch embedding, [CLS] token, pre-norm blocks."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    """Multi-head self-attention written out (exports to plain ONNX ops at opset 17)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        """``x`` [N, T, D]; ``key_bias`` [N, 1, 1, T] added to the attention logits (0 = attend,
        a large negative number = ignore that key, e.g. padding), or None."""
        n, t, d = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        logits = (q @ k.transpose(-2, -1)) * self.scale
        if key_bias is not None:
            logits = logits + key_bias
        attn = torch.softmax(logits, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, key_bias: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), key_bias)
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """[N, C, H, W] → [N, dim] (the final [CLS] token), for a fixed ``image_size``.

    ``tokens(x, keep)`` runs the encoder on a subset of patches (MAE's masking);
    ``keep`` is int64 [N, K] patch indices, or None for all of them.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: tuple[int, int] = (16, 16),
        patch_size: int = 4,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
    ) -> None:
        super().__init__()
        h, w = image_size
        if h % patch_size or w % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        self.patch_size = patch_size
        self.grid = (h // patch_size, w // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out_dim = dim
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def tokens(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """[N, C, H, W] → [N, 1 + K, dim]: [CLS] then the kept patches, after the final norm."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # [N, P, dim]
        if keep is not None:
            patches = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        out = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], dim=1)
        for block in self.blocks:
            out = block(out)
        return self.norm(out)

    def forward(self, x: Tensor) -> Tensor:
        return self.tokens(x)[:, 0]
