"""BYOL: an online network predicts an EMA target's projection of another view (Grill et al., 2020).

No negatives. The projector and predictor keep BatchNorm (it matters for BYOL);
the target is an EMA of every online parameter, with momentum rising from
``momentum`` to 1 along a cosine; BatchNorm buffers are copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.augment import AugmentConfig, Normalize, augment
from training.heads import mlp
from training.losses import negative_cosine, std_of_l2_normalized
from training.methods.base import Method, cosine_momentum, ema_copy, ema_update


@dataclass(frozen=True)
class BYOLOptions:
    hidden: int = 1024  # projector and predictor hidden width
    out_dim: int = 128
    momentum: float = 0.99  # base EMA momentum; goes to 1 along a cosine


class BYOL(Method):
    """Loss: ``negative_cosine(q(g(f(v1))), g'(f'(v2)))`` + the same with views swapped;
    f', g' are EMAs of backbone f and projector g, q is the predictor."""

    name = "byol"
    Options = BYOLOptions

    def __init__(
        self,
        backbone,
        normalize: Normalize,
        augment: AugmentConfig,
        options: BYOLOptions,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__(backbone, normalize, augment, image_shape)
        self.options = options
        self.projector = mlp([backbone.out_dim, options.hidden, options.out_dim])
        self.predictor = mlp([options.out_dim, options.hidden, options.out_dim])
        self.target = ema_copy(nn.ModuleDict({"backbone": backbone, "projector": self.projector}))

    def forward(self, images: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        views = self.prepare(torch.cat([augment(images, self.augment), augment(images, self.augment)]))
        z = self.projector(self.backbone(views))
        p1, p2 = self.predictor(z).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target["projector"](self.target["backbone"](views)).chunk(2)
        loss = negative_cosine(p1, t2) + negative_cosine(p2, t1)
        return loss, {"embedding_std": std_of_l2_normalized(z.chunk(2)[0])}

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        online = nn.ModuleDict({"backbone": self.backbone, "projector": self.projector})
        ema_update(self.target, online, cosine_momentum(self.options.momentum, progress))
