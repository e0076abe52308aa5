"""Text quality: MLM on Python's help topics, CLIP on captioned shapes, measured as served.

    python bench/train_text.py                  # MLM, CLIP, and the ablation (about an hour on 2 cores)
    python bench/train_text.py --skip-ablation --reuse

1. ``pydoc-mlm`` recipe: held-out masked-token accuracy beside the unigram baseline.
2. ``shapes-clip`` recipe (the shipped ``models/shapes-clip``), exported and served
   by a real embedserve server over gRPC: zero-shot shape x colour accuracy by
   ``Classify`` with a support set of 30 text prompts ("a green triangle", k = 1),
   on test images of the 25 combinations seen in training and of the 5 held out;
   text → image recall@1/5 by ``Search`` (each test image's first caption, which
   names every attribute, against a collection of the 600 seen-combination test
   images) and image → text recall by ``Search`` of images against a collection of
   those captions. A hit is a right answer among the k nearest: an image the
   caption describes (identical attributes; "own" = only the caption's own image).
3. Ablation: the CLIP recipe with the MLM run's text tower shape and tokenizer,
   text tower randomly initialised vs initialised from the MLM run.

Results: bench/results/train_text.json and markdown tables on stdout.
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


def fit_and_export(name: str, cfg, out: Path, reuse: bool) -> dict:
    """Train ``cfg`` into out/runs/NAME (unless reused) and export out/models/NAME."""
    from training.export import export_bundle
    from training.loop import fit

    run = out / "runs" / name
    finished = (run / "metrics.jsonl").exists() and len(
        (run / "metrics.jsonl").read_text().splitlines()
    ) >= cfg.epochs
    if not (reuse and finished):
        if run.exists():
            import shutil

            shutil.rmtree(run)
        fit(cfg, run, progress_bar=sys.stderr.isatty())
    manifest = export_bundle(run, out / "models" / name, name=name, command=f"bench/train_text.py ({name})")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"manifest": manifest, "final": rows[-1], "run": str(run)}


def served_clip(models: Path, name: str) -> dict:
    """Zero-shot accuracy and recall of bundle ``name``, through a real server over gRPC."""
    from embedserve.client import item
    from tests.conftest import ServerThread, make_config
    from training.data.captions import captioned_split
    from training.text.evaluate import prompts

    _, seen, held_out = captioned_split()
    server = ServerThread(
        make_config(models, models.parent / f"data-{name}", default_model=name, max_batch_size=64)
    )
    try:
        with server.client() as client:
            support = [(p, str(i)) for i, p in enumerate(prompts())]
            out: dict[str, float] = {}
            for label, pairs in (("seen", seen), ("held_out", held_out)):
                got = []
                for start in range(0, len(pairs), 100):
                    results = client.classify(
                        pairs.images[start : start + 100], support=support, model=name, k=1
                    )
                    got += [int(r.label) for r in results]
                out[f"zero_shot_{label}"] = round(100.0 * float(np.mean(np.asarray(got) == pairs.combos)), 2)
            captions = [c[0] for c in seen.captions]
            client.create_collection(f"{name}-images", model=name)
            client.create_collection(f"{name}-captions", model=name)
            for start in range(0, len(seen), 100):
                stop = min(start + 100, len(seen))
                client.upsert(
                    f"{name}-images", [item(str(i), image=seen.images[i]) for i in range(start, stop)]
                )
                client.upsert(
                    f"{name}-captions", [item(str(i), text=captions[i]) for i in range(start, stop)]
                )
            for direction, collection, queries in (
                ("t2i", f"{name}-images", captions),
                ("i2t", f"{name}-captions", seen.images),
            ):
                right, own = [], []  # per query: rank of the first right answer, of its own partner
                for start in range(0, len(queries), 100):
                    hits = client.search(
                        collection, queries[start : start + 100], k=5, include_metadata=False
                    )
                    for offset, row in enumerate(hits):
                        i = start + offset
                        found = [int(h.id) for h in row]
                        right.append(next((r for r, j in enumerate(found) if captions[j] == captions[i]), 5))
                        own.append(found.index(i) if i in found else 5)
                for k in (1, 5):
                    out[f"{direction}_r@{k}"] = round(100.0 * float(np.mean(np.asarray(right) < k)), 2)
                    out[f"{direction}_own_r@{k}"] = round(100.0 * float(np.mean(np.asarray(own) < k)), 2)
            return out
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_text")
    parser.add_argument("--reuse", action="store_true", help="keep runs that already finished their recipe")
    parser.add_argument("--skip-ablation", action="store_true")
    args = parser.parse_args()
    from training.recipes import recipe

    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    mlm = fit_and_export("text-mlm", recipe("pydoc-mlm"), args.out, args.reuse)
    results["mlm"] = {
        **mlm["manifest"]["provenance"]["evaluation"],
        "train_minutes": round(mlm["final"]["train_seconds"] / 60, 1),
    }
    print(f"mlm: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    runs = {"shapes-clip": recipe("shapes-clip")}
    if not args.skip_ablation:
        mlm_cfg = recipe("pydoc-mlm")
        base = recipe("shapes-clip").with_(text=mlm_cfg.text)
        runs["clip-random-text"] = base
        runs["clip-mlm-text"] = base.with_(text_init=mlm["run"])
    for name, cfg in runs.items():
        t0 = time.perf_counter()
        trained = fit_and_export(name, cfg, args.out, args.reuse)
        results[name] = {
            **served_clip(args.out / "models", name),
            "train_minutes": round(trained["final"]["train_seconds"] / 60, 1),
            "cpu_minutes": round(trained["final"]["cpu_seconds"] / 60, 1),
        }
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    m = results["mlm"]
    print("| MLM (pydoc, held-out) | masked-token accuracy | unigram baseline | ratio | train min |")
    print("|---|---|---|---|---|")
    print(f"| text-mlm | {m['masked_accuracy']} | {m['unigram']} | {m['ratio']}x | {m['train_minutes']} |")
    print()
    print(
        "| CLIP (captioned shapes, served) | zero-shot seen | zero-shot held-out | t→i R@1 | t→i R@5 "
        "| t→i R@5 own | i→t R@1 | i→t R@5 | train min (wall / CPU) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in runs:
        r = results[name]
        print(
            f"| {name} | {r['zero_shot_seen']} | {r['zero_shot_held_out']} | {r['t2i_r@1']} | {r['t2i_r@5']} "
            f"| {r['t2i_own_r@5']} | {r['i2t_r@1']} | {r['i2t_r@5']} | {r['train_minutes']} / {r['cpu_minutes']} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out.parent / "train_text.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
