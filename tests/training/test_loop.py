pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import json  # noqa: E402

from tests.training.conftest import tiny_config  # noqa: E402
from training.config import FitConfig  # noqa: E402
from training.loop import fit  # noqa: E402
from training.run import load_checkpoint  # noqa: E402
from training.schedule import warmup_cosine  # noqa: E402


def test_a_run_writes_config_metrics_plot_and_checkpoint(digit_folders, tmp_path):
    cfg = tiny_config(digit_folders)
    result = fit(cfg, tmp_path / "run", progress_bar=False)
    run = tmp_path / "run"
    assert FitConfig.load(run / "config.json") == cfg
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all("knn" in r and 0 <= r["knn"]["all"] <= 100 and r["embedding_std"] > 0 for r in rows)
    assert (run / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    state = load_checkpoint(result.checkpoint)
    assert state["epoch"] == 2 and FitConfig.from_dict(json.loads(state["config"])) == cfg
    with pytest.raises(FileExistsError):
        fit(cfg, run, progress_bar=False)


def test_resume_is_bit_for_bit(digit_folders, tmp_path):
    cfg = tiny_config(digit_folders, epochs=4, eval_every=0, method="byol")
    straight = fit(cfg, tmp_path / "straight", progress_bar=False).method.state_dict()
    fit(cfg, tmp_path / "resumed", progress_bar=False, stop_after=2)  # as if the job were killed
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["epoch"] == 2
    resumed = fit(cfg, tmp_path / "resumed", resume=True, progress_bar=False).method.state_dict()
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


def test_resume_refuses_a_different_config(digit_folders, tmp_path):
    cfg = tiny_config(digit_folders, epochs=1, eval_every=0)
    fit(cfg, tmp_path / "run", progress_bar=False)
    with pytest.raises(ValueError, match="different config"):
        fit(cfg.with_(lr=0.1, epochs=2), tmp_path / "run", resume=True, progress_bar=False)


def test_schedule_warms_up_then_decays():
    lrs = [warmup_cosine(s, 100, 10, 1.0, 0.01) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(0.01, abs=1e-3)


def test_lars_steps_against_the_gradient():
    from training.optim import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    optimizer = build_optimizer("lars", model, lr=1.0, weight_decay=1e-4)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
