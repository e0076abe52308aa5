"""A small ResNet with a CIFAR-style stem (3x3 conv, no max-pool), for tiny images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity: stable early training

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """[N, C, H, W] → [N, out_dim] features (global average pool of the last stage).

    Stage ``i`` has ``width * 2**i`` channels and ``depths[i]`` blocks; every stage
    after the first halves the resolution. ``out_dim = width * 2**(len(depths) - 1)``.
    Any input size works (the pool is global); a bundle fixes one.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, depths: Sequence[int] = (1, 1, 1)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages, c_in = [], width
        for i, depth in enumerate(depths):
            c_out = width * 2**i
            blocks = [
                BasicBlock(c_in if j == 0 else c_out, c_out, 2 if (i > 0 and j == 0) else 1)
                for j in range(depth)
            ]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.out_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_map(self, x: Tensor) -> Tensor:
        """[N, C, H, W] → last stage [N, out_dim, H / 2**(S-1), W / 2**(S-1)]."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(2, 3))
