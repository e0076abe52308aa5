"""``embedserve-train`` (or ``python -m training``): fit, eval, export, import-st.

    embedserve-train fit --method simclr --data digits --out runs/simclr --epochs 200
    embedserve-train eval runs/simclr
    embedserve-train export runs/simclr --out models/digits-simclr --variants fp16,int8
    embedserve-train import-st path/to/sentence-transformers-model --out models-extra/minilm

Flags override ``--config FILE.json`` (a FitConfig, e.g. a previous run's
config.json), which overrides the defaults. Method options and augmentation
fields are ``--opt KEY=VALUE`` and ``--aug KEY=VALUE`` (repeatable; tuples as
``0.6,1.0``). Launch ``fit`` under ``torchrun --nproc_per_node N`` for DDP.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from training.backbones import BACKBONES

# flag → FitConfig field, for the plain fields
_FIELDS = {
    "method": str,
    "data": str,
    "eval_data": str,
    "channels": int,
    "interpolation": str,
    "augment": str,
    "epochs": int,
    "batch_size": int,
    "optimizer": str,
    "lr": float,
    "min_lr": float,
    "weight_decay": float,
    "warmup_epochs": int,
    "clip_grad": float,
    "seed": int,
    "eval_every": int,
    "checkpoint_every": int,
    "device": str,
    "threads": int,
}
_BACKBONE_FIELDS = {
    "backbone": ("name", str),
    "width": ("width", int),
    "patch_size": ("patch_size", int),
    "vit_dim": ("dim", int),
    "vit_depth": ("depth", int),
    "heads": ("heads", int),
}


_TEXT_FIELDS = {
    "vocab_size": "vocab_size",
    "max_length": "max_length",
    "text_dim": "dim",
    "text_depth": "depth",
    "text_heads": "heads",
}


def _key_values(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"expected KEY=VALUE, got '{pair}'")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def _add_fit(sub) -> None:
    p = sub.add_parser("fit", help="train an encoder", description="Train a self-supervised image encoder.")
    p.add_argument(
        "--out", type=Path, required=True, help="run directory (config, metrics, checkpoints, plot)"
    )
    p.add_argument("--config", type=Path, help="a FitConfig JSON file (e.g. another run's config.json)")
    p.add_argument("--recipe", help="a named tuned config from training.recipes, e.g. digits-dino")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-after", type=int, help="stop after this many epochs (resume later with --resume)")
    for name, kind in _FIELDS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    for flag, (_, kind) in _BACKBONE_FIELDS.items():
        p.add_argument(
            "--" + flag.replace("_", "-"),
            type=kind,
            default=None,
            choices=BACKBONES if flag == "backbone" else None,
        )
    p.add_argument("--depths", help="ResNet blocks per stage, e.g. 1,1,1")
    for flag in ("vocab_size", "max_length", "text_dim", "text_depth", "text_heads"):
        p.add_argument("--" + flag.replace("_", "-"), type=int, default=None, help="mlm/clip: text tower")
    p.add_argument(
        "--text-init", help="clip: an mlm run directory whose text tower (and tokenizer) to start from"
    )
    p.add_argument("--image-init", help="clip: an image run directory whose backbone to start from")
    p.add_argument("--size", help="input size H,W (or one number), e.g. 16")
    p.add_argument("--mean", help="per-channel mean, e.g. 0.3 (default: measured)")
    p.add_argument("--std", help="per-channel std (default: measured)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    p.add_argument("--aug", action="append", metavar="KEY=VALUE", help="augmentation field (repeatable)")
    p.set_defaults(func=_fit)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def fit_config(args: argparse.Namespace):
    from training.config import FitConfig

    if args.config and args.recipe:
        raise SystemExit("give --config or --recipe, not both")
    if args.recipe:
        from training.recipes import recipe

        cfg = recipe(args.recipe)
    else:
        cfg = FitConfig.load(args.config) if args.config else FitConfig()
    changes: dict[str, Any] = {k: getattr(args, k) for k in _FIELDS if getattr(args, k) is not None}
    backbone = {
        field: getattr(args, flag)
        for flag, (field, _) in _BACKBONE_FIELDS.items()
        if getattr(args, flag) is not None
    }
    if args.depths:
        backbone["depths"] = tuple(int(v) for v in args.depths.split(","))
    text = {
        field: getattr(args, flag)
        for flag, field in _TEXT_FIELDS.items()
        if getattr(args, flag, None) is not None
    }
    if text:
        from dataclasses import replace as _replace

        changes["text"] = _replace(cfg.text, **text)
    for flag in ("text_init", "image_init"):
        if getattr(args, flag, None):
            changes[flag] = getattr(args, flag)
    if backbone:
        from dataclasses import replace

        changes["backbone"] = replace(cfg.backbone, **backbone)
    if args.size:
        size = tuple(int(v) for v in args.size.split(","))
        changes["size"] = size * 2 if len(size) == 1 else size
    if args.mean:
        changes["mean"] = _floats(args.mean)
    if args.std:
        changes["std"] = _floats(args.std)
    if args.no_amp:
        changes["amp"] = False
    if args.no_channels_last:
        changes["channels_last"] = False
    if args.opt:
        changes["method_options"] = {**cfg.method_options, **_key_values(args.opt)}
    if args.aug:
        changes["augment_overrides"] = {**cfg.augment_overrides, **_key_values(args.aug)}
    return cfg.with_(**changes)


def _fit(args) -> int:
    from training.loop import fit

    cfg = fit_config(args)
    if args.resume and not args.config and (args.out / "config.json").exists():
        from training.config import FitConfig

        saved = FitConfig.load(args.out / "config.json")
        cfg = saved.with_(epochs=args.epochs or saved.epochs)
    result = fit(
        cfg, args.out, resume=args.resume, progress_bar=not args.no_progress, stop_after=args.stop_after
    )
    print(result.checkpoint)
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="k-NN table and linear probe of a run, with baselines")
    p.add_argument("run", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    p.set_defaults(func=_eval)


def _eval(args) -> int:
    from training.config import FitConfig
    from training.text.run import TEXT_METHODS

    if FitConfig.load(args.run / "config.json").method in TEXT_METHODS:
        from training.text.evaluate import evaluate_text_run

        print(json.dumps(evaluate_text_run(args.run), indent=2))
        return 0
    from training.evaluate.report import evaluate_run, format_table

    result = evaluate_run(args.run)
    print(json.dumps(result, indent=2) if args.json else format_table(result["rows"]))
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's encoder as a model bundle")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True, help="bundle directory (replaced if it exists)")
    p.add_argument("--name", help="model name (default: DATASET-METHOD)")
    p.add_argument("--version", default="1")
    p.add_argument("--variants", default="", help="comma-separated: fp16,int8")
    p.set_defaults(func=_export)


def _export(args) -> int:
    from training.evaluate.report import format_table
    from training.export import export_bundle

    variants = tuple(v for v in args.variants.split(",") if v)
    manifest = export_bundle(
        args.run,
        args.out,
        name=args.name,
        version=args.version,
        variants=variants,
        command="embedserve-train " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    prov = manifest["provenance"]
    print(f"{args.out}: {manifest['name']} dim {manifest['dim']}, parity {prov['parity']}")
    if "evaluation" in prov:
        print(format_table({f"{manifest['name']} (bundle, as served)": prov["evaluation"]}))
    for name, info in prov.get("variants", {}).items():
        if isinstance(info, dict) and "knn_delta" in info:
            print(f"variant {name}: {info['bytes']} bytes, k-NN change {info['knn_delta']}")
    return 0


def _add_import_st(sub) -> None:
    p = sub.add_parser(
        "import-st",
        help="turn a local sentence-transformers model directory into a text bundle",
        description="Export a sentence-transformers model (BERT-family weights, its pooling and "
        "normalisation in the graph, its tokenizer.json and max_seq_length) as a bundle, checked "
        "against sentence-transformers' own encode (cosine >= 0.9999 on 100+ sentences).",
    )
    p.add_argument(
        "dir", type=Path, help="the model directory (modules.json, config.json, tokenizer.json, ...)"
    )
    p.add_argument("--out", type=Path, required=True, help="bundle directory (replaced if it exists)")
    p.add_argument("--name", help="model name (default: the directory's name)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="matrix products in int8, activations scaled per token (about 2x the sentences/s on CPU; "
        "parity bound 0.98 instead of 0.9999)",
    )
    p.set_defaults(func=_import_st)


def _import_st(args) -> int:
    from training.text.import_st import import_sentence_transformer

    manifest = import_sentence_transformer(args.dir, args.out, name=args.name, int8=args.int8)
    print(
        json.dumps(
            {"bundle": str(args.out), "name": manifest["name"], "parity": manifest["provenance"]["parity"]}
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedserve-train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_fit(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_import_st(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
