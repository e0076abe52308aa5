"""Features of a torch encoder for evaluation (the exported bundle is evaluated in ``bundle``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.augment import Normalize


@torch.no_grad()
def embed(
    encoder: nn.Module,
    normalize: Normalize,
    pixels: torch.Tensor,
    batch_size: int = 512,
    channels_last: bool = False,
) -> np.ndarray:
    """Pixels float [N, C, H, W] in [0, 1] → features float32 [N, D], with the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = []
    for start in range(0, len(pixels), batch_size):
        x = normalize(pixels[start : start + batch_size].to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(encoder(x).float().cpu().numpy())
    encoder.train(was_training)
    return np.concatenate(out)
