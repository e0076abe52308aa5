"""A run's training curves as one PNG: loss, k-NN accuracy and embedding std per epoch."""

from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(metrics_path: Path, out: Path) -> Path:
    """Read metrics.jsonl and write a three-panel PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    epochs = [r["epoch"] for r in rows]
    axes[0].plot(epochs, [r["loss"] for r in rows])
    axes[0].set(title="training loss", xlabel="epoch")
    kind = "knn" if any("knn" in r for r in rows) else "eval"  # image methods: k-NN; text methods: their own
    evaluated = [r for r in rows if kind in r]
    for key in evaluated[0][kind] if evaluated else []:
        label = ("all labels" if key == "all" else f"{key} labels / class") if kind == "knn" else key
        axes[1].plot(
            [r["epoch"] for r in evaluated], [r[kind][key] for r in evaluated], marker="o", label=label
        )
    if evaluated:
        axes[1].legend(fontsize="small")
    title = "k-NN accuracy on the evaluation set (%)" if kind == "knn" else "held-out evaluation (%)"
    axes[1].set(title=title, xlabel="epoch")
    axes[2].plot(epochs, [r["embedding_std"] for r in rows])
    axes[2].set(title="std of L2-normalised embeddings", xlabel="epoch")
    axes[2].set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return Path(out)
