"""A small Transformer text encoder: token + learned position embeddings, pre-norm blocks.

``TextTransformer``: token ids int64 [N, T] and attention mask [N, T] (1 = token,
0 = padding) → token states [N, T, dim]. ``TextEmbedder`` adds what the served
vector needs — pooling ("cls": the first token, which the tokenizer makes
``[CLS]``; or "mean" over the mask), an optional projection, L2 normalisation —
so the whole path from ids to the served vector is one graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from training.backbones.vit import Block

POOLINGS = ("cls", "mean")
_MASKED = -1e4  # attention logit bias for padding keys: exp(-1e4) is 0 in float32 and fp16 alike


class TextTransformer(nn.Module):
    def __init__(
        self, vocab_size: int, max_length: int = 64, dim: int = 128, depth: int = 2, heads: int = 4
    ) -> None:
        super().__init__()
        self.vocab_size, self.max_length, self.out_dim = vocab_size, max_length, dim
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.zeros(1, max_length, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[N, T] ids and mask (T <= max_length) → token states [N, T, dim]."""
        t = input_ids.shape[1]
        x = self.token(input_ids) + self.position[:, :t]
        bias = (1.0 - attention_mask.to(x.dtype))[:, None, None, :] * _MASKED  # [N, 1, 1, T]
        for block in self.blocks:
            x = block(x, bias)
        return self.norm(x)


def pool(states: Tensor, attention_mask: Tensor, pooling: str) -> Tensor:
    """Token states [N, T, D] → [N, D]: the first token ("cls") or the mean over unmasked tokens."""
    if pooling == "cls":
        return states[:, 0]
    if pooling == "mean":
        mask = attention_mask.to(states.dtype).unsqueeze(-1)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    raise ValueError(f"unknown pooling '{pooling}'; have {', '.join(POOLINGS)}")


class TextEmbedder(nn.Module):
    """ids [N, T], mask [N, T] → the served vector [N, D]: pool, project (optional), L2-normalise."""

    def __init__(
        self, transformer: TextTransformer, pooling: str = "mean", projection: nn.Module | None = None
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling '{pooling}'; have {', '.join(POOLINGS)}")
        self.transformer, self.pooling = transformer, pooling
        self.projection = projection if projection is not None else nn.Identity()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        pooled = pool(self.transformer(input_ids, attention_mask), attention_mask, self.pooling)
        return nn.functional.normalize(self.projection(pooled), dim=-1)


@dataclass(frozen=True)
class TextConfig:
    """The text tower of ``mlm`` and ``clip`` runs, and its tokenizer's size."""

    vocab_size: int = 4000  # WordPiece vocabulary to learn (special tokens included)
    max_length: int = 64  # tokens per text, [CLS] and [SEP] included: the bundle's max_length
    dim: int = 128
    depth: int = 2
    heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    def build(self, vocab_size: int) -> TextTransformer:
        return TextTransformer(vocab_size, self.max_length, self.dim, self.depth, self.heads)
