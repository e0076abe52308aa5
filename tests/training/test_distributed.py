"""DDP on CPU: a 2-process torchrun (gloo) trains a few steps; both ranks end identical."""

pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from tests.training.conftest import tiny_config  # noqa: E402
from training.run import build_method, prepare_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_torchrun_keeps_ranks_identical(digit_folders, tmp_path):
    cfg = tiny_config(
        digit_folders,
        method="dino",
        method_options={"hidden": 32, "bottleneck": 16, "prototypes": 32},
        epochs=2,
        eval_every=1,
        threads=1,
    )
    (tmp_path / "config.json").write_text(cfg.to_json())
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "training" / "ddp_worker.py"),
        str(tmp_path / "config.json"),
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    initial = build_method(cfg, prepare_data(cfg).spec).state_dict()
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks differ in {key}"
    moved = [k for k in rank0 if rank0[k].is_floating_point() and not torch.equal(rank0[k], initial[k])]
    assert any(k.startswith("backbone.") for k in moved), "training did not change the weights"
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "metrics.jsonl").read_text().count(
        "\n"
    ) == 2
