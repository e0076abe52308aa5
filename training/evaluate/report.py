"""``embedserve-train eval``: the evaluation table of a run, with its baselines.

Rows: raw pixels (the rendered images, flattened), the same backbone at random
initialisation (same seed), the trained encoder; columns: k-NN accuracy at L = 1,
5, 10 and all labels per class (mean ± std over 5 draws), and a linear probe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluate.knn import format_row, knn_table
from training.evaluate.probe import linear_probe


def evaluate_features(train: np.ndarray, train_labels, test: np.ndarray, test_labels) -> dict[str, Any]:
    return {
        "knn": knn_table(train, train_labels, test, test_labels),
        "linear_probe": linear_probe(train, train_labels, test, test_labels),
    }


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Evaluate a run's checkpoint (PyTorch features) and the baselines; writes RUN/eval.json."""
    from training.evaluate.features import embed
    from training.run import build_method, labels_of, load_run

    cfg, data, method, state = load_run(Path(run_dir))
    if data.eval_pixels is None:
        raise ValueError(f"{run_dir}: no labelled evaluation set (use a built-in dataset or --eval-data)")
    y_train, y_test = labels_of(data.train), labels_of(data.eval)
    rows: dict[str, Any] = {}
    flat = lambda p: p.reshape(len(p), -1).numpy()  # noqa: E731
    rows["raw pixels"] = evaluate_features(flat(data.train_pixels), y_train, flat(data.eval_pixels), y_test)
    random_method = build_method(cfg, data.spec)
    rows["random init"] = _evaluate_encoder(random_method, data, y_train, y_test, embed)
    rows[f"{cfg.method} ({state['epoch']} epochs)"] = _evaluate_encoder(method, data, y_train, y_test, embed)
    result = {
        "run": str(run_dir),
        "epochs": state["epoch"],
        "training_seconds": state["train_seconds"],
        "rows": rows,
    }
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _evaluate_encoder(method, data, y_train, y_test, embed) -> dict[str, Any]:
    encoder, normalize = method.encoder(), method.normalize
    train = embed(encoder, normalize, data.train_pixels)
    test = embed(encoder, normalize, data.eval_pixels)
    return evaluate_features(train, y_train, test, y_test)


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """Markdown: | encoder | L=1 | L=5 | L=10 | all | linear probe |."""
    lines = ["| encoder | L=1 | L=5 | L=10 | all | linear probe |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        probe = row.get("linear_probe")
        lines.append(format_row(name, row["knn"]) + (f" {probe:.1f} |" if probe is not None else " – |"))
    return "\n".join(lines)
