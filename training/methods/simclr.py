"""SimCLR: two views per image, an MLP projector, NT-Xent over the batch (Chen et al., 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from training.augment import AugmentConfig, Normalize, augment
from training.distributed import gather_with_grad, rank
from training.heads import mlp
from training.losses import nt_xent, std_of_l2_normalized
from training.methods.base import Method


@dataclass(frozen=True)
class SimCLROptions:
    temperature: float = 0.2
    hidden: int = 512  # projector hidden width
    out_dim: int = 128  # projection size
    layers: int = 2  # linear layers in the projector


class SimCLR(Method):
    """Loss: ``nt_xent(g(f(v1)), g(f(v2)), temperature)`` with f the backbone, g the projector."""

    name = "simclr"
    Options = SimCLROptions

    def __init__(
        self,
        backbone,
        normalize: Normalize,
        augment: AugmentConfig,
        options: SimCLROptions,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__(backbone, normalize, augment, image_shape)
        self.options = options
        dims = [backbone.out_dim] + [options.hidden] * (options.layers - 1) + [options.out_dim]
        self.projector = mlp(dims)

    def forward(self, images: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        views = torch.cat([augment(images, self.augment), augment(images, self.augment)])
        z1, z2 = self.projector(self.backbone(self.prepare(views))).chunk(2)
        # under DDP every rank's projections are negatives, as on one device with the global batch
        loss = nt_xent(z1, z2, self.options.temperature, gather_with_grad, rank())
        return loss, {"embedding_std": std_of_l2_normalized(z1)}
