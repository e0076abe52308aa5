"""Import a local sentence-transformers model directory as a text bundle: ``embedserve-train import-st``.

A sentence-transformers directory holds BERT-family weights with their
``config.json``, the tokenizer (``tokenizer.json``), ``modules.json`` listing its
modules (Transformer → Pooling → optionally Normalize), the pooling config
(``1_Pooling/config.json``: mean, cls or max over tokens) and the maximum
sequence length (``sentence_bert_config.json``). The bundle gets:

- ``text.onnx``: the transformer (``transformers.AutoModel``, eager attention) with
  the model's own pooling over ``attention_mask`` and, when the model has a
  Normalize module, L2 normalisation inside the graph; inputs ``input_ids``,
  ``attention_mask`` and ``token_type_ids`` (when the model has token types) int64
  [N, T], batch and sequence axes dynamic; output [N, D];
- the model's ``tokenizer.json``, and ``max_length`` = its ``max_seq_length``;
- provenance: the source, the pooling, and the parity against sentence-transformers'
  own ``encode`` on ``PARITY_SENTENCES`` tokenized exactly as the server does:
  every row's cosine ≥ 0.9999, or the import fails.

With ``--int8`` the transformer's matrix products run in int8, each token's activations
scaled on their own (``training.text.quantize``): about 2x the float bundle's sentences/s
on CPU, a text's vector independent of its batch, and the parity bound is 0.98 (the
provenance records the cosines reached and the scheme).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from embedserve.metric import Metric, l2_normalize
from embedserve.models.bundle import Manifest, TextTowerSpec
from training.text.sentences import PARITY_SENTENCES

OPSET = 17
MIN_COSINE = 0.9999
# an int8 import sits further from the float model (all-MiniLM-L6-v2: 0.9915 at least, 0.9986 on
# average on the parity sentences); this bound catches a broken rewrite, not the rounding
MIN_COSINE_INT8 = 0.98
SCHEME_INT8 = (
    "int8 MatMulInteger: activations per token (uint8, asymmetric), weights per output column (int8)"
)
POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


@dataclass(frozen=True)
class SentenceModel:
    """What a sentence-transformers directory says about how it embeds."""

    directory: Path
    pooling: str  # mean | cls | max
    normalize: bool
    max_length: int
    dim: int


def read_model(directory: Path) -> SentenceModel:
    """Read modules.json, the pooling config and the sequence length; ValueError on what we cannot serve."""
    directory = Path(directory)
    for required in ("modules.json", "config.json", "tokenizer.json"):
        if not (directory / required).is_file():
            raise ValueError(
                f"{directory}: not a sentence-transformers model directory ({required} is missing)"
            )
    modules = json.loads((directory / "modules.json").read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or not set(kinds[2:]) <= {"Normalize"}:
        raise ValueError(
            f"{directory}: modules {kinds}: only Transformer → Pooling [→ Normalize] is supported"
        )
    pooling_dir = directory / next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    pooling_config = json.loads((pooling_dir / "config.json").read_text())
    chosen = [mode for key, mode in POOLING_KEYS.items() if pooling_config.get(key)]
    other = [
        k for k, v in pooling_config.items() if k.startswith("pooling_mode") and v and k not in POOLING_KEYS
    ]
    if len(chosen) != 1 or other:
        raise ValueError(f"{pooling_dir}/config.json: exactly one of mean, cls or max pooling is supported")
    bert_config = directory / "sentence_bert_config.json"
    transformer = json.loads((directory / "config.json").read_text())
    max_length = json.loads(bert_config.read_text())["max_seq_length"] if bert_config.is_file() else None
    max_length = min(
        max_length or transformer["max_position_embeddings"], transformer["max_position_embeddings"]
    )
    return SentenceModel(
        directory,
        chosen[0],
        "Normalize" in kinds,
        int(max_length),
        int(pooling_config["word_embedding_dimension"]),
    )


class SentenceEncoder(nn.Module):
    """ids, mask (and token types) [N, T] → the model's sentence vector [N, D], pooled over the mask."""

    def __init__(self, transformer: nn.Module, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.transformer, self.pooling, self.normalize = transformer, pooling, normalize

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        states = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        if self.pooling == "cls":
            pooled = states[:, 0]
        elif self.pooling == "max":
            pooled = (states + (1.0 - mask) * -1e9).max(dim=1).values
        else:
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def load_encoder(model: SentenceModel) -> SentenceEncoder:
    from transformers import AutoModel

    transformer = AutoModel.from_pretrained(
        str(model.directory), local_files_only=True, attn_implementation="eager"
    )
    return SentenceEncoder(transformer.eval(), model.pooling, model.normalize).eval()


def uses_token_types(model: SentenceModel) -> bool:
    return int(json.loads((model.directory / "config.json").read_text()).get("type_vocab_size", 0)) > 0


def export(encoder: SentenceEncoder, path: Path, token_types: bool) -> None:
    """ONNX with dynamic batch and sequence axes (classic exporter, opset 17), then ``onnx.checker``."""
    import onnx

    ids = torch.full((2, 9), 1000, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    args = (ids, mask, torch.zeros_like(ids)) if token_types else (ids, mask)
    axes = {name: {0: "N", 1: "T"} for name in names} | {"embedding": {0: "N"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation notices of the classic exporter
        torch.onnx.export(
            encoder,
            args,
            str(path),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def served_vectors(bundle: Path, sentences: list[str]) -> np.ndarray:
    """float32 [N, D] of ``sentences`` as the server computes them (its tokenizer and padding, ORT)."""
    from training.text.evaluate import bundle_texts

    return bundle_texts(bundle, sentences, batch_size=32)


def reference_vectors(model: SentenceModel, sentences: list[str]) -> np.ndarray:
    """sentence-transformers' own ``encode``."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model.directory), device="cpu", local_files_only=True)
    return np.asarray(st.encode(sentences, batch_size=32, convert_to_numpy=True), dtype=np.float32)


def parity(bundle: Path, model: SentenceModel, sentences: list[str]) -> dict[str, Any]:
    ours, theirs = served_vectors(bundle, sentences), reference_vectors(model, sentences)
    cosine = (l2_normalize(ours).astype(np.float64) * l2_normalize(theirs)).sum(1)
    return {
        "sentences": len(sentences),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "max_abs_diff": float(np.abs(ours.astype(np.float64) - theirs).max()),
        "against": "sentence_transformers.SentenceTransformer.encode",
    }


def import_sentence_transformer(
    directory: Path, out: Path, *, name: str | None = None, int8: bool = False
) -> dict[str, Any]:
    """Write the bundle for a sentence-transformers ``directory`` into ``out``; returns its manifest.
    ``int8``: the transformer's matrix products in per-token int8 (training.text.quantize)."""
    t0 = time.perf_counter()
    model = read_model(directory)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    quantization: dict[str, Any] | None = None
    if int8:
        from training.text.quantize import quantize_per_token

        export(load_encoder(model), out / "float.onnx", uses_token_types(model))
        quantization = {"scheme": SCHEME_INT8, **quantize_per_token(out / "float.onnx", out / "text.onnx")}
        (out / "float.onnx").unlink()
    else:
        export(load_encoder(model), out / "text.onnx", uses_token_types(model))
    shutil.copyfile(model.directory / "tokenizer.json", out / "tokenizer.json")
    manifest = Manifest(
        name=name or model.directory.resolve().name,
        version="1",
        dim=model.dim,
        metric=Metric.COSINE,
        normalize=model.normalize,
        image=None,
        text=TextTowerSpec(out / "text.onnx", out / "tokenizer.json", model.max_length, "none"),
        path=out,
    )
    manifest.write()  # the parity below reads the bundle as the server would
    figures = parity(out, model, PARITY_SENTENCES)
    need = MIN_COSINE_INT8 if int8 else MIN_COSINE
    if figures["min_cosine"] < need:
        raise RuntimeError(f"import parity failed: {figures} (need every cosine ≥ {need})")
    provenance = {
        "method": "imported sentence-transformers model",
        "source": str(model.directory),
        "pooling": model.pooling,
        "normalize": model.normalize,
        "max_length": model.max_length,
        "parity": figures,
        **({"quantization": quantization} if quantization else {}),
        "opset": OPSET,
        "torch": torch.__version__,
        "import_seconds": round(time.perf_counter() - t0, 1),
    }
    manifest = dataclasses.replace(manifest, provenance=provenance)
    manifest.write()
    return manifest.to_json()
