"""Constructed data sets for the labelling algorithms."""

from __future__ import annotations

import numpy as np

from embedserve.metric import l2_normalize


def blobs(
    sizes: list[int], dim: int = 16, spread: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Well separated unit-norm clusters: (float32 [sum(sizes), dim], cluster of each row)."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((len(sizes), dim)))
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[cluster] + spread * rng.standard_normal((len(cluster), dim)).astype(np.float32)
    return l2_normalize(x), cluster


def two_moons(n_per_moon: int = 150, noise: float = 0.03, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles in 2-D (float32 [2n, 2], moon of each row), points in order
    along each moon: the classic case for spreading over a k-NN graph."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, np.pi, n_per_moon)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.concatenate([upper, lower]) + noise * rng.standard_normal((2 * n_per_moon, 2))
    return x.astype(np.float32), np.repeat([0, 1], n_per_moon)
