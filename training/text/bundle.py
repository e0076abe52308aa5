"""Export an ``mlm`` run (a text bundle) or a ``clip`` run (an image + text bundle, one space).

Steps, as for image runs (``training.export``): ONNX per tower → parity against
PyTorch on the ids / pixels the server itself makes (max |Δ| ≤ 1e-4, cosine ≥
0.99999, or the export fails) → the run's tokenizer.json copied in → evaluation
of the bundle as served (CLIP: zero-shot accuracy and recall through ONNX Runtime
and the server's preprocessing; MLM: held-out masked-token accuracy, measured in
PyTorch since the MLM head is not exported) → manifest with provenance.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from embedserve.metric import Metric
from embedserve.models.bundle import Manifest, TextTowerSpec
from training.text.export import export_text_onnx, text_parity
from training.text.run import PairData, PairSet, TextData

MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.99999


def _check(figures: dict[str, float], tower: str) -> dict[str, float]:
    from training.export import ExportError

    if figures["max_abs_diff"] > MAX_ABS_DIFF or figures["min_cosine"] < MIN_COSINE:
        raise ExportError(
            f"{tower} tower: ONNX parity failed: {figures} (need max |Δ| ≤ {MAX_ABS_DIFF}, cosine ≥ {MIN_COSINE})"
        )
    return figures


def _text_tower(embedder, data_spec, out: Path, texts: list[str]) -> tuple[TextTowerSpec, dict[str, float]]:
    shutil.copyfile(data_spec.tokenizer_path, out / "tokenizer.json")
    export_text_onnx(embedder, out / "text.onnx", data_spec.vocab_size)
    figures = text_parity(embedder, out / "text.onnx", out / "tokenizer.json", data_spec.max_length, texts)
    spec = TextTowerSpec(out / "text.onnx", out / "tokenizer.json", data_spec.max_length, "none")
    return spec, _check(figures, "text")


def export_text_bundle(
    run_dir: Path, out: Path, *, name: str | None, version: str, command: str | None
) -> dict[str, Any]:
    """Write the bundle of an ``mlm`` or ``clip`` run into ``out``; returns its manifest (as written)."""
    from training.export import export_onnx, parity, run_provenance, server_pixels
    from training.run import load_run

    t0 = time.perf_counter()
    cfg, data, method, state = load_run(Path(run_dir))
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    provenance = run_provenance(cfg, state, command)
    provenance["text"] = cfg.text.to_dict()
    image_spec = None
    if isinstance(data, TextData):
        from training.text.evaluate import mlm_report

        texts = _held_out_texts(data)
        text_spec, text_figures = _text_tower(method.encoder(), data.spec, out, texts)
        provenance["parity"] = {"text": text_figures}
        provenance["evaluation"] = {
            **mlm_report(method, data),
            "protocol": "15% of held-out tokens chosen (80/10/10 as in training, seed 0); accuracy (%) of "
            "predicting the original token; unigram = always the most frequent training token",
        }
        dim = cfg.text.dim
    else:
        assert isinstance(data, PairData)
        evaluation_set = next(iter(data.evals.values()), data.train)
        texts = [c for captions in evaluation_set.images.captions[:64] for c in captions]
        text_spec, text_figures = _text_tower(method.text_encoder(), data.spec.text, out, texts)
        pixels = data.spec.pixels
        image_spec = pixels.tower_spec(out / "image.onnx")
        encoder = method.encoder().eval()
        export_onnx(encoder, (pixels.channels, *pixels.size), out / "image.onnx")
        dim = method.options.embed_dim
        _manifest(cfg, out, name, version, dim, image_spec, text_spec, {}).write()  # server_pixels reads it
        image_figures = _check(
            parity(encoder, out / "image.onnx", server_pixels(out, evaluation_set.images.images[:256])),
            "image",
        )
        provenance["parity"] = {"image": image_figures, "text": text_figures}
        provenance["evaluation"] = {**_served_clip_report(out, data), "protocol": _CLIP_PROTOCOL}
    provenance["export_seconds"] = round(time.perf_counter() - t0, 1)
    manifest = _manifest(cfg, out, name, version, dim, image_spec, text_spec, provenance)
    manifest.write()
    return manifest.to_json()


_CLIP_PROTOCOL = (
    "encoded test images and texts through the server's preprocessing and this bundle's ONNX graphs; "
    "zero_shot: % of images whose nearest prompt 'a {colour} {shape}' (30 combinations) is their own; "
    "i2t/t2i r@K: % of images (first captions) with a right answer among the K nearest captions (images): "
    "one with the same attributes; own_r@K: the query's own partner among them"
)


def _held_out_texts(data: TextData) -> list[str]:
    from training.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(data.spec.tokenizer_path)
    return [tokenizer.decode(row.tolist()) for row in data.eval_ids[:128]]


def _served_clip_report(bundle_dir: Path, data: PairData) -> dict[str, dict[str, float]]:
    from training.evaluate.bundle import bundle_embed
    from training.text.evaluate import bundle_texts, clip_report

    def images(pairs: PairSet):
        return bundle_embed(bundle_dir, pairs.images.images)

    return clip_report(images, lambda texts: bundle_texts(bundle_dir, texts), data)


def _manifest(cfg, out: Path, name, version, dim, image, text, provenance) -> Manifest:
    default = "shapes-clip" if cfg.data == "captioned-shapes" else f"text-{cfg.method}"
    return Manifest(
        name=name or default,
        version=version,
        dim=dim,
        metric=Metric.COSINE,
        normalize=True,
        image=image,
        text=text,
        provenance=provenance,
        path=out,
    )
