"""Run under torchrun by test_distributed.py: a tiny fit, then every rank saves its own weights.

python -m torch.distributed.run --standalone --nproc_per_node 2 tests/training/ddp_worker.py CONFIG OUT
"""

import os
import sys
from pathlib import Path

import torch

from training.config import FitConfig
from training.loop import fit

if __name__ == "__main__":
    cfg, out = FitConfig.load(Path(sys.argv[1])), Path(sys.argv[2])
    result = fit(cfg, out, progress_bar=False)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(result.method.state_dict(), out / f"rank{os.environ['RANK']}.pt")
