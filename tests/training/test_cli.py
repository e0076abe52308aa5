"""``python -m training fit | eval | export`` end to end, as a user runs it."""

pytest = __import__("pytest")
torch = pytest.importorskip("torch")

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from embedserve.models import load_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_fit_eval_export(digit_folders, tmp_path):
    train, evaluation = digit_folders
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    _run(
        "fit",
        "--method",
        "simclr",
        "--data",
        str(train),
        "--eval-data",
        str(evaluation),
        "--channels",
        "1",
        "--size",
        "8",
        "--width",
        "8",
        "--depths",
        "1,1",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--warmup-epochs",
        "1",
        "--eval-every",
        "1",
        "--threads",
        "2",
        "--opt",
        "hidden=32",
        "--opt",
        "out_dim=16",
        "--aug",
        "rotate=5",
        "--out",
        str(run),
        "--no-progress",
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method_options"] == {"hidden": "32", "out_dim": "16"} and cfg["augment_overrides"] == {
        "rotate": "5"
    }
    assert cfg["backbone"]["depths"] == [1, 1] and cfg["size"] == [8, 8]

    table = _run("eval", str(run))
    assert "raw pixels" in table and "random init" in table and "simclr (2 epochs)" in table

    # resume to a later epoch with only --epochs
    _run("fit", "--out", str(run), "--resume", "--epochs", "3", "--no-progress")
    assert (run / "metrics.jsonl").read_text().count("\n") == 3

    _run("export", str(run), "--out", str(bundle), "--name", "cli-digits")
    manifest = load_manifest(bundle)
    assert manifest.name == "cli-digits" and manifest.provenance["epochs"] == 3
    assert manifest.provenance["built_by"].startswith("embedserve-train export")
