"""Heads that sit on a backbone during training and are dropped at export."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def mlp(
    dims: list[int], *, batch_norm: bool = True, last_bn: bool = False, act: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """Linear layers dims[0] → … → dims[-1]; BatchNorm + activation between them.

    ``last_bn`` adds an affine-free BatchNorm after the last layer (SimCLR v2 style).
    """
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not (batch_norm and (not last or last_bn))))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(dims[i + 1]))
            layers.append(act())
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=False))
    return nn.Sequential(*layers)


class PrototypeHead(nn.Module):
    """DINO's head: MLP → L2-normalised bottleneck → cosine scores against K prototypes.

    [N, in_dim] → [N, K] logits (before temperature). The prototypes are normalised
    in the forward pass, which is weight normalisation with the gain fixed to 1.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 512,
        bottleneck: int = 128,
        prototypes: int = 1024,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        # BatchNorm in the MLP (DINO does this for ResNets) spreads the outputs from the first
        # step; without it the teacher starts near uniform and learning stalls for many epochs.
        self.mlp = mlp([in_dim, hidden, hidden, bottleneck], batch_norm=batch_norm, act=nn.GELU)
        self.prototypes = nn.Parameter(torch.empty(prototypes, bottleneck))
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def bottleneck(self, x: Tensor) -> Tensor:
        """[N, in_dim] → L2-normalised [N, bottleneck]."""
        return F.normalize(self.mlp(x), dim=-1)

    def scores(self, z: Tensor) -> Tensor:
        """Normalised bottleneck [N, bottleneck] → cosine to each prototype [N, K]."""
        return z @ F.normalize(self.prototypes, dim=-1).T

    def forward(self, x: Tensor) -> Tensor:
        return self.scores(self.bottleneck(x))
