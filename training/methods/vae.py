"""VAE: a convolutional variational autoencoder (Kingma & Welling, 2014); the representation is mu_z.

Encoder: the backbone, then linear maps to mu and log-variance of a diagonal
Gaussian q(z|x). Decoder: linear → a [C', H/4, W/4] map → two transposed-conv
upsamplings → pixel logits. Loss: Bernoulli reconstruction of the [0, 1] pixels +
beta x KL. The exported encoder outputs mu_z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from training.augment import AugmentConfig, Normalize, augment
from training.losses import std_of_l2_normalized, vae_elbo
from training.methods.base import Method


@dataclass(frozen=True)
class VAEOptions:
    latent: int = 32
    beta: float = 1.0
    decoder_width: int = 64


class MeanEncoder(nn.Module):
    """backbone → mu_z: [N, C, H, W] → [N, latent]."""

    def __init__(self, backbone: nn.Module, mu: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.mu = backbone, mu
        self.out_dim = mu.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.mu(self.backbone(x))


class VAE(Method):
    """Loss: ``vae_elbo(decoder(z), x, mu, logvar, beta)`` with z = mu + sigma * eps."""

    name = "vae"
    Options = VAEOptions

    def __init__(
        self,
        backbone,
        normalize: Normalize,
        augment: AugmentConfig,
        options: VAEOptions,
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__(backbone, normalize, augment, image_shape)
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"VAE needs an image size divisible by 4, got {(h, w)}")
        self.options = options
        width = options.decoder_width
        self.mu = nn.Linear(backbone.out_dim, options.latent)
        self.logvar = nn.Linear(backbone.out_dim, options.latent)
        self.mean_encoder = MeanEncoder(backbone, self.mu)
        self.decoder_fc = nn.Linear(options.latent, width * (h // 4) * (w // 4))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(width, width, 4, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, width // 2, 4, 2, 1),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(width // 2, c, 3, 1, 1),
        )

    def decode(self, z: Tensor) -> Tensor:
        """[N, latent] → pixel logits [N, C, H, W]."""
        _, h, w = self.image_shape
        x = self.decoder_fc(z).view(z.shape[0], self.options.decoder_width, h // 4, w // 4)
        return self.decoder(torch.relu(x))

    def forward(self, images: Tensor, progress: float) -> tuple[Tensor, dict[str, Tensor]]:
        target = augment(images, self.augment)
        features = self.backbone(self.prepare(target))
        mu, logvar = self.mu(features), self.logvar(features).clamp(-10, 10)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        loss, recon, kl = vae_elbo(self.decode(z), target, mu, logvar, self.options.beta)
        return loss, {"embedding_std": std_of_l2_normalized(mu), "recon": recon.detach(), "kl": kl.detach()}

    def encoder(self) -> nn.Module:
        return self.mean_encoder
