"""Tiny data and configs for training tests: small enough that the whole suite runs in well under 3 minutes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY_BACKBONE = {"name": "resnet", "width": 8, "depths": (1, 1)}


def write_digits_folder(root: Path, per_class: int, offset: int) -> Path:
    """``root/<digit>/<i>.png``: ``per_class`` real digits per class, as 8-bit PNGs (folder = label)."""
    from sklearn.datasets import load_digits

    from training.data import encode_png

    bunch = load_digits()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    for c in range(10):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(np.flatnonzero(bunch.target == c)[offset : offset + per_class]):
            (root / str(c) / f"{j:03d}.png").write_bytes(encode_png(pixels[i]))
    return root


@pytest.fixture(scope="session")
def digit_folders(tmp_path_factory) -> tuple[Path, Path]:
    """(train folder: 10 x 10 digits, eval folder: 10 x 4 other digits)."""
    root = tmp_path_factory.mktemp("digits")
    return write_digits_folder(root / "train", 10, 0), write_digits_folder(root / "eval", 4, 10)


def tiny_config(digit_folders, **changes):
    """A FitConfig that trains in a second or two on the tiny folders."""
    from training.backbones import BackboneConfig
    from training.config import FitConfig

    train, evaluation = digit_folders
    cfg = FitConfig(
        method="simclr",
        data=str(train),
        eval_data=str(evaluation),
        channels=1,
        size=(8, 8),
        backbone=BackboneConfig(**TINY_BACKBONE),
        method_options={"hidden": 32, "out_dim": 16},
        epochs=2,
        batch_size=16,
        lr=1e-3,
        warmup_epochs=1,
        eval_every=1,
        checkpoint_every=1,
        threads=2,
    )
    return cfg.with_(**changes)


def run_torchrun(cfg, out: Path, nproc: int = 2) -> None:
    """Train ``cfg`` under ``torchrun --standalone`` with ``nproc`` CPU processes (gloo); each rank
    saves its final weights as OUT/rank{RANK}.pt (tests/training/ddp_worker.py)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    config = out.parent / f"{out.name}-config.json"
    config.write_text(cfg.to_json())
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        str(root / "tests" / "training" / "ddp_worker.py"),
        str(config),
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
