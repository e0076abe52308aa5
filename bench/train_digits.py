"""Quality of every method on the digits split, measured on exported bundles as served.

    python bench/train_digits.py                      # train all five recipes, export, evaluate
    python bench/train_digits.py --methods simclr,dino --reuse   # keep finished runs

For each method: ``embedserve-train fit --recipe digits-METHOD`` (training.recipes),
export the bundle, start a real embedserve server (in-process, gRPC on localhost)
on the bundles, send the 1,797 digits as 8-bit grayscale PNGs exactly as a client
would (the server resizes them as each manifest says), and score the returned
embeddings with weighted k-NN (k=20, T=0.07; L = 1/5/10/all labels per class; 5
draws) and a linear probe. Baselines in the same table: raw pixels (the 8x8 PNG
as decoded) and the same backbone at random initialisation. Needs the ``train``,
``cpu`` and ``dev`` extras plus torch. Results: bench/results/train_digits.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METHODS = ("simclr", "byol", "dino", "mae", "vae")


def served_embeddings(models: Path, names: list[str], images: list[bytes]) -> dict[str, np.ndarray]:
    """Embeddings of ``images`` from each bundle, through a real server over gRPC."""
    from tests.conftest import ServerThread, make_config

    data = models.parent / "server-data"
    server = ServerThread(make_config(models, data, default_model=names[0], max_batch_size=64))
    try:
        with server.client() as client:
            out = {}
            for name in names:
                chunks = [client.embed(images[i : i + 256], model=name) for i in range(0, len(images), 256)]
                out[name] = np.concatenate(chunks)
            return out
    finally:
        server.stop()


def score(train: np.ndarray, y_train, test: np.ndarray, y_test) -> dict:
    from training.evaluate.knn import knn_table
    from training.evaluate.probe import linear_probe

    return {
        "knn": knn_table(train, y_train, test, y_test),
        "linear_probe": linear_probe(train, y_train, test, y_test),
    }


def baselines(train_set, test_set) -> dict[str, dict]:
    """Raw 8x8 pixels as the PNG holds them, and the SimCLR recipe's backbone at random init."""
    import torch

    from training.data import PixelSpec, render
    from training.evaluate.features import embed
    from training.recipes import recipe
    from training.run import build_method, prepare_data

    native = PixelSpec(1, (8, 8), (0.0,), (1.0,))
    flat = [render(s.images, native).reshape(len(s), -1) for s in (train_set, test_set)]
    rows = {"raw pixels (8x8 PNG)": score(flat[0], train_set.labels, flat[1], test_set.labels)}
    cfg = recipe("digits-simclr")
    data = prepare_data(cfg)
    torch.set_num_threads(cfg.threads)
    method = build_method(cfg, data.spec)
    feats = [embed(method.encoder(), method.normalize, p) for p in (data.train_pixels, data.eval_pixels)]
    rows["random init (ResNet, 16x16)"] = score(feats[0], train_set.labels, feats[1], test_set.labels)
    return rows


def train_and_export(method: str, out: Path, reuse: bool) -> dict:
    from training.export import export_bundle
    from training.loop import fit
    from training.recipes import recipe
    from training.run import checkpoint_path, load_checkpoint

    cfg = recipe(f"digits-{method}")
    run = out / "runs" / method
    done = checkpoint_path(run).exists() and load_checkpoint(checkpoint_path(run))["epoch"] == cfg.epochs
    if not (reuse and done):
        if run.exists():
            import shutil

            shutil.rmtree(run)
        fit(cfg, run, progress_bar=sys.stderr.isatty())
    manifest = export_bundle(
        run, out / "models" / f"digits-{method}", command=f"embedserve-train fit --recipe digits-{method}"
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"manifest": manifest, "final": rows[-1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_digits")
    parser.add_argument("--reuse", action="store_true", help="keep runs that already finished their recipe")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]

    from training.data import digits_split
    from training.evaluate.knn import format_row

    train_set, test_set = digits_split()
    results = {}
    for method in methods:
        t0 = time.perf_counter()
        results[method] = train_and_export(method, args.out, args.reuse)
        print(f"{method}: trained and exported in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    names = [f"digits-{m}" for m in methods]
    served = served_embeddings(args.out / "models", names, train_set.images + test_set.images)
    n = len(train_set)
    rows = baselines(train_set, test_set)
    for method, name in zip(methods, names):
        emb = served[name]
        rows[method] = score(emb[:n], train_set.labels, emb[n:], test_set.labels)
        final = results[method]["final"]
        dim = results[method]["manifest"]["dim"]
        rows[method].update(
            train_minutes=round(final["train_seconds"] / 60, 1),
            cpu_minutes=round(final["cpu_seconds"] / 60, 1),
            embedding_std=round(final["embedding_std"], 4),
            collapse_floor=round(0.5 / dim**0.5, 4),
            epochs=final["epoch"],
        )

    print("| encoder | L=1 | L=5 | L=10 | all | linear probe | train min (wall / CPU) | emb. std (0.5/√d) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        extra = " – | – |"
        if "train_minutes" in row:
            extra = (
                f" {row['train_minutes']} / {row['cpu_minutes']} |"
                f" {row['embedding_std']} ({row['collapse_floor']}) |"
            )
        print(format_row(name, row["knn"]) + f" {row['linear_probe']:.1f} |" + extra)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out.parent / "train_digits.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
