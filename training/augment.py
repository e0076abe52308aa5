"""Batched image augmentations on tensors (no torchvision), and per-dataset presets.

Every function takes pixels float [B, C, H, W] in [0, 1] (as ``render`` makes them)
and draws its randomness per sample from torch's global generator, which the
training loop seeds and checkpoints. Geometry is one affine warp per sample
(crop + rotation + shear + translation in a single ``grid_sample``), so a view
costs one resampling, never a chain of them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from training.config import coerce


@dataclass(frozen=True)
class AugmentConfig:
    """One view's augmentation. Scales are area fractions; angles in degrees."""

    crop_scale: tuple[float, float] = (0.5, 1.0)  # area of the crop / area of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height of the crop
    rotate: float = 0.0  # ± degrees
    shear: float = 0.0  # ± degrees
    translate: float = 0.0  # ± fraction of the image side, after cropping
    hflip: float = 0.0  # probability
    brightness: float = 0.0  # multiply by U(1 - b, 1 + b)
    contrast: float = 0.0  # blend with the image mean by U(1 - c, 1 + c)
    saturation: float = 0.0  # RGB only: blend with grey by U(1 - s, 1 + s)
    jitter_p: float = 0.8  # probability of the colour jitter above
    grayscale_p: float = 0.0  # RGB only
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 1.0)  # in output pixels
    noise_std: float = 0.0  # Gaussian noise std, scaled per sample by U(0, 1)
    erase_p: float = 0.0  # probability of erasing one rectangle
    erase_scale: tuple[float, float] = (0.02, 0.15)  # its area fraction
    fill: float = 0.0  # background value for warps and erasing, in [0, 1]

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, AugmentConfig] = {
    # Handwriting: no flips (a flipped 2 is not a 2), mild crops, small affine, noise, erasing.
    "digits": AugmentConfig(
        crop_scale=(0.6, 1.0),
        rotate=12.0,
        shear=10.0,
        translate=0.08,
        brightness=0.3,
        contrast=0.3,
        blur_p=0.3,
        blur_sigma=(0.2, 1.0),
        noise_std=0.08,
        erase_p=0.5,
        erase_scale=(0.03, 0.12),
    ),
    # Photos and shapes: SimCLR's recipe (crops, flips, colour jitter, grayscale, blur).
    "natural": AugmentConfig(
        crop_scale=(0.25, 1.0),
        hflip=0.5,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        grayscale_p=0.2,
        blur_p=0.5,
    ),
    # Reconstruction methods (MAE, VAE): a little geometry only.
    "light": AugmentConfig(crop_scale=(0.8, 1.0), translate=0.05),
    "none": AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0.0),
}


def preset(name: str, **overrides) -> AugmentConfig:
    """A named preset with some fields replaced (tuples may be given as lists)."""
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset '{name}'; have {', '.join(PRESETS)}")
    base = PRESETS[name]
    unknown = set(overrides) - set(asdict(base))
    if unknown:
        raise ValueError(f"unknown augmentation field(s) {', '.join(sorted(unknown))}")
    return replace(base, **{k: coerce(getattr(base, k), v) for k, v in overrides.items()})


def _uniform(n: int, lo: float, hi: float, device: torch.device) -> Tensor:
    return torch.rand(n, device=device) * (hi - lo) + lo


def affine_crop(x: Tensor, cfg: AugmentConfig, out_size: tuple[int, int] | None = None) -> Tensor:
    """Random resized crop + flip + rotation + shear + translation: [B, C, H, W] → [B, C, h, w].

    The output grid (normalised coordinates u in [-1, 1]²) maps to input points
    ``centre + diag(crop) @ R @ Shear @ diag(flip) @ u``; outside the image reads ``fill``.
    """
    b, device = x.shape[0], x.device
    area = _uniform(b, *cfg.crop_scale, device)
    log_ratio = _uniform(b, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), device)
    ratio = torch.exp(log_ratio)
    sx = torch.sqrt(area * ratio)  # half-width of the crop, in units of the half-image (> 1 zooms out)
    sy = torch.sqrt(area / ratio)
    cx = (torch.rand(b, device=device) * 2 - 1) * (1 - sx)
    cy = (torch.rand(b, device=device) * 2 - 1) * (1 - sy)
    if cfg.translate:
        cx = cx + _uniform(b, -2 * cfg.translate, 2 * cfg.translate, device)
        cy = cy + _uniform(b, -2 * cfg.translate, 2 * cfg.translate, device)
    theta = torch.deg2rad(_uniform(b, -cfg.rotate, cfg.rotate, device))
    shear = torch.tan(torch.deg2rad(_uniform(b, -cfg.shear, cfg.shear, device)))
    flip = torch.where(torch.rand(b, device=device) < cfg.hflip, -1.0, 1.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    # R @ [[1, shear], [0, 1]] @ diag(flip, 1), then scaled by the crop's half-sides.
    m00, m01 = cos * flip, cos * shear - sin
    m10, m11 = sin * flip, sin * shear + cos
    matrix = torch.stack(
        [torch.stack([sx * m00, sx * m01, cx], 1), torch.stack([sy * m10, sy * m11, cy], 1)], 1
    )
    h, w = out_size or x.shape[-2:]
    grid = F.affine_grid(matrix.to(x.dtype), [b, x.shape[1], h, w], align_corners=False)
    warped = F.grid_sample(x - cfg.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return warped + cfg.fill


def colour_jitter(x: Tensor, cfg: AugmentConfig) -> Tensor:
    """Brightness, contrast (and saturation for RGB) jitter, applied with probability jitter_p."""
    b, device = x.shape[0], x.device
    apply = (torch.rand(b, 1, 1, 1, device=device) < cfg.jitter_p).to(x.dtype)
    out = x
    if cfg.brightness:
        factor = _uniform(b, 1 - cfg.brightness, 1 + cfg.brightness, device).view(b, 1, 1, 1)
        out = out * factor
    if cfg.contrast:
        factor = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, device).view(b, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * factor + mean
    if cfg.saturation and x.shape[1] == 3:
        factor = _uniform(b, 1 - cfg.saturation, 1 + cfg.saturation, device).view(b, 1, 1, 1)
        grey = _grey(out)
        out = (out - grey) * factor + grey
    out = apply * out + (1 - apply) * x
    if cfg.grayscale_p and x.shape[1] == 3:
        to_grey = (torch.rand(b, 1, 1, 1, device=device) < cfg.grayscale_p).to(x.dtype)
        out = to_grey * _grey(out).expand_as(out) + (1 - to_grey) * out
    return out.clamp(0, 1)


def _grey(x: Tensor) -> Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def gaussian_blur(x: Tensor, cfg: AugmentConfig) -> Tensor:
    """Blur each sample with probability blur_p by a Gaussian of random sigma (separable, per sample)."""
    b, c, h, w = x.shape
    device = x.device
    sigma = _uniform(b, *cfg.blur_sigma, device)
    radius = max(1, math.ceil(2 * cfg.blur_sigma[1]))
    offsets = torch.arange(-radius, radius + 1, device=device, dtype=x.dtype)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # [B, K]
    kernel = kernel.repeat_interleave(c, 0)  # one kernel per (sample, channel) group
    flat = x.reshape(1, b * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
    blurred = flat.view(b, c, h, w)
    apply = (torch.rand(b, 1, 1, 1, device=device) < cfg.blur_p).to(x.dtype)
    return apply * blurred + (1 - apply) * x


def gaussian_noise(x: Tensor, cfg: AugmentConfig) -> Tensor:
    """Add N(0, s²) noise with s = noise_std * U(0, 1) per sample; clamp to [0, 1]."""
    scale = cfg.noise_std * torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)
    return (x + scale * torch.randn_like(x)).clamp(0, 1)


def random_erase(x: Tensor, cfg: AugmentConfig) -> Tensor:
    """With probability erase_p, set one random rectangle (area fraction in erase_scale) to ``fill``."""
    b, _, h, w = x.shape
    device = x.device
    area = _uniform(b, *cfg.erase_scale, device)
    ratio = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), device))
    eh = (torch.sqrt(area / ratio) * h).clamp(1, h)
    ew = (torch.sqrt(area * ratio) * w).clamp(1, w)
    top = torch.rand(b, device=device) * (h - eh)
    left = torch.rand(b, device=device) * (w - ew)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    inside = (
        (rows >= top.view(b, 1, 1))
        & (rows < (top + eh).view(b, 1, 1))
        & (cols >= left.view(b, 1, 1))
        & (cols < (left + ew).view(b, 1, 1))
    )
    apply = torch.rand(b, 1, 1, device=device) < cfg.erase_p
    mask = (inside & apply).unsqueeze(1)
    return torch.where(mask, torch.full_like(x, cfg.fill), x)


def augment(x: Tensor, cfg: AugmentConfig, out_size: tuple[int, int] | None = None) -> Tensor:
    """One random view of every image: [B, C, H, W] in [0, 1] → [B, C, h, w] in [0, 1]."""
    x = affine_crop(x, cfg, out_size)
    if cfg.jitter_p and (cfg.brightness or cfg.contrast or cfg.saturation) or cfg.grayscale_p:
        x = colour_jitter(x, cfg)
    if cfg.blur_p:
        x = gaussian_blur(x, cfg)
    if cfg.noise_std:
        x = gaussian_noise(x, cfg)
    if cfg.erase_p:
        x = random_erase(x, cfg)
    return x


class Normalize(torch.nn.Module):
    """(x - mean) / std per channel: the step the manifest's mean/std tell the server to do."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: Tensor) -> Tensor:
        # Division, as the server does, so training sees the same floats.
        return (x - self.mean) / self.std
