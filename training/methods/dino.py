"""DINO: self-distillation with no labels (Caron et al., 2021).

A student matches an EMA teacher's output distribution over ``prototypes`` classes
across views. The teacher's outputs are centred (running mean ``center``, to avoid
one class winning) and sharpened (low ``teacher_temp``, warmed up from
``teacher_temp_start``), which together prevent collapse. Multi-crop: two global
views at full size seen by both, ``local_crops`` small views seen by the student only.
Runs on CPU as well as GPU; under DDP the centre is averaged over all ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
from torch import Tensor, nn

from training.augment import AugmentConfig, Normalize, augment
from training.heads import PrototypeHead
from training.losses import dino_distillation, std_of_l2_normalized
from training.methods.base import Method, cosine_momentum, ema_copy, ema_update


@dataclass(frozen=True)
class DINOOptions:
    prototypes: int = 1024  # K, the size of the output distribution
    hidden: int = 512
    bottleneck: int = 128
    head_bn: bool = True  # BatchNorm in the head's MLP
    student_temp: float = 0.1
    teacher_temp: float = 0.04  # after warm-up
    teacher_temp_start: float = 0.04
    teacher_temp_warmup: float = 0.1  # fraction of training
    center_momentum: float = 0.9
    momentum: float = 0.996  # teacher EMA base momentum; goes to 1 along a cosine
    local_crops: int = 0  # extra small views for the student (multi-crop)
    local_size: float = 0.5  # their side, as a fraction of the global side
    local_scale: tuple[float, float] = (0.2, 0.5)  # their crop area fraction
    global_scale: tuple[float, float] = (0.0, 0.0)  # (0, 0) = the augmentation's own crop_scale


class DINO(Method):
    """Loss: ``dino_distillation(student views, teacher global views, center, T_s, T_t)``.
    The exported encoder is the teacher's backbone, as in the paper."""

    name = "dino"
    Options = DINOOptions

    def __init__(
        self,
        backbone,
        normalize: Normalize,
        augment: AugmentConfig,
        options: DINOOptions,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__(backbone, normalize, augment, image_shape)
        self.options = options
        self.head = PrototypeHead(
            backbone.out_dim, options.hidden, options.bottleneck, options.prototypes, options.head_bn
        )
        self.teacher = ema_copy(nn.ModuleDict({"backbone": backbone, "head": self.head}))
        self.register_buffer("center", torch.zeros(1, options.prototypes))
        if options.global_scale != (0.0, 0.0):
            self.augment = replace(augment, crop_scale=options.global_scale)
        self.local_augment = replace(augment, crop_scale=options.local_scale)

    def teacher_temp(self, progress: float) -> float:
        o = self.options
        if progress >= o.teacher_temp_warmup or o.teacher_temp_warmup <= 0:
            return o.teacher_temp
        return (
            o.teacher_temp_start + (o.teacher_temp - o.teacher_temp_start) * progress / o.teacher_temp_warmup
        )

    def forward(self, images: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        o = self.options
        b = images.shape[0]
        globals_ = self.prepare(torch.cat([augment(images, self.augment), augment(images, self.augment)]))
        z = self.head.bottleneck(self.backbone(globals_))
        student = list(self.head.scores(z).split(b))
        if o.local_crops:
            side = tuple(max(4, round(s * o.local_size)) for s in images.shape[-2:])
            locals_ = torch.cat([augment(images, self.local_augment, side) for _ in range(o.local_crops)])
            student += list(self.head(self.backbone(self.prepare(locals_))).split(b))
        with torch.no_grad():
            teacher_out = self.teacher["head"](self.teacher["backbone"](globals_))
            teacher = list(teacher_out.split(b))
        loss = dino_distillation(student, teacher, self.center, o.student_temp, self.teacher_temp(progress))
        if self.training:
            self._update_center(teacher_out)
        return loss, {"embedding_std": std_of_l2_normalized(z[:b])}

    @torch.no_grad()
    def _update_center(self, teacher_out: Tensor) -> None:
        batch_center = teacher_out.mean(0, keepdim=True)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            batch_center /= dist.get_world_size()
        self.center.mul_(self.options.center_momentum).add_(
            batch_center, alpha=1 - self.options.center_momentum
        )

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        student = nn.ModuleDict({"backbone": self.backbone, "head": self.head})
        ema_update(self.teacher, student, cosine_momentum(self.options.momentum, progress))

    def encoder(self) -> nn.Module:
        return self.teacher["backbone"]
