"""DDP on CPU: a 2-process torchrun (gloo) trains a few steps; both ranks end identical."""

pytest = __import__("pytest")
torch = pytest.importorskip("torch")

from tests.training.conftest import run_torchrun, tiny_config  # noqa: E402
from training.run import build_method, prepare_data  # noqa: E402


def test_two_process_torchrun_keeps_ranks_identical(digit_folders, tmp_path):
    cfg = tiny_config(
        digit_folders,
        method="dino",
        method_options={"hidden": 32, "bottleneck": 16, "prototypes": 32},
        epochs=2,
        eval_every=1,
        threads=1,
    )
    out = tmp_path / "run"
    run_torchrun(cfg, out)

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
