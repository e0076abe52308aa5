"""What every method is to the training loop: a module whose forward returns the loss.

The loop calls ``loss, logs = method(images, progress)`` on a batch of pixels
float [B, C, H, W] in [0, 1] (``progress`` = fraction of training done, in [0, 1]),
then ``method.after_step(progress)`` once the optimiser has stepped (EMA updates).
``encoder()`` is the part that is evaluated and exported: normalised pixels
[N, C, H, W] → features [N, D]. A method builds its own views from its
``AugmentConfig``; the loop knows nothing about views, heads or targets.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from training.augment import AugmentConfig, Normalize
from training.config import coerce


class Method(nn.Module):
    name: ClassVar[str]
    Options: ClassVar[type]

    def __init__(
        self,
        backbone: nn.Module,
        normalize: Normalize,
        augment: AugmentConfig,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.image_shape = image_shape  # (C, H, W) of the training images
        self.backbone = backbone
        self.normalize = normalize
        self.augment = augment
        self.channels_last = False  # set by the loop where it is faster (CPU convnets)

    def prepare(self, pixels: Tensor) -> Tensor:
        """Pixels in [0, 1] → the backbone's input: normalised, in the loop's memory format."""
        x = self.normalize(pixels)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, images: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """Called after each optimiser step; EMA methods update their teacher here."""

    def encoder(self) -> nn.Module:
        """Normalised pixels [N, C, H, W] → features [N, D]: what k-NN sees and export writes."""
        return self.backbone


def parse_options(cls: type, raw: dict[str, Any]) -> Any:
    """Build an options dataclass from a dict whose values may be strings (from the CLI)."""
    known = {f.name for f in fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(unknown))}; {cls.__name__} has {', '.join(known)}"
        )
    defaults = cls()
    return cls(**{key: coerce(getattr(defaults, key), value) for key, value in raw.items()})


def ema_copy(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to serve as an EMA teacher/target."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target ← momentum * target + (1 - momentum) * online, for every parameter; buffers are copied."""
    t_params, o_params = list(target.parameters()), list(online.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1 - momentum)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL/DINO momentum schedule: from ``base`` at the start to 1 at the end."""
    import math

    return 1 - (1 - base) * (math.cos(math.pi * progress) + 1) / 2
