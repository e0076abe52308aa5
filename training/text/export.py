"""Export a text tower to ONNX (dynamic batch and sequence axes) and check it against PyTorch.

The graph takes ``input_ids`` and ``attention_mask`` int64 [N, T] and returns the
served vector [N, D] with pooling, projection and L2 normalisation inside, so the
server needs only the tokenizer file and this graph. Parity feeds both sides the
ids the server itself makes (``embedserve.models.text.TextPreprocessor`` on the
bundle's tokenizer.json, padded per batch as the batcher does).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from embedserve.metric import l2_normalize

OPSET = 17
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "embedding"


def export_text_onnx(embedder: nn.Module, path: Path, vocab_size: int) -> None:
    """Write ``embedder`` (ids, mask [N, T] → [N, D]) as ONNX with dynamic N and T, then check it."""
    import onnx

    embedder = embedder.eval()
    ids = torch.randint(5, vocab_size, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with warnings.catch_warnings():  # the classic exporter on purpose (see training.export)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            embedder,
            (ids, mask),
            str(path),
            input_names=list(INPUTS),
            output_names=[OUTPUT],
            dynamic_axes={
                "input_ids": {0: "N", 1: "T"},
                "attention_mask": {0: "N", 1: "T"},
                OUTPUT: {0: "N"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def served_ids(tokenizer_path: Path, max_length: int, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) int64 [N, T] exactly as the server makes them for ``texts``."""
    from embedserve.models.text import TextPreprocessor

    pre = TextPreprocessor(tokenizer_path, max_length)
    ids, _ = pre.tokenize(texts)
    return pre.pad(ids)


def text_parity(
    embedder: nn.Module, onnx_path: Path, tokenizer_path: Path, max_length: int, texts: list[str]
) -> dict[str, float]:
    """PyTorch vs ONNX Runtime on the server's ids for ``texts``: max |Δ| and min row cosine."""
    import onnxruntime as ort

    input_ids, attention_mask = served_ids(tokenizer_path, max_length, texts)
    with torch.no_grad():
        expected = embedder.eval()(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
    cosine = (l2_normalize(expected) * l2_normalize(got)).sum(1)
    return {
        "inputs": len(texts),
        "max_abs_diff": float(np.abs(expected.astype(np.float64) - got).max()),
        "min_cosine": float(cosine.min()),
    }
