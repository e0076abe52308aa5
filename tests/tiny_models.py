"""Tiny, deterministic model bundles for tests: real ONNX graphs built with ``onnx`` (no torch).

- image tower: pixels float32 [N, C, H, W] → Flatten → MatMul(seeded matrix) → [N, D]
  (a random projection: similar images give similar embeddings);
- text tower: input_ids / attention_mask int64 [N, T] → Gather(seeded table) →
  masked mean over tokens, inside the graph → [N, D];
- tokenizer: a ``tokenizers`` WordLevel tokenizer (lowercase, whitespace split,
  [PAD] = 0, [UNK] = 1) over a small English vocabulary.

``numpy_reference_image`` / ``numpy_reference_text`` compute the same maths in numpy;
``random_image`` / ``encode_image`` make request payloads.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; readable by older onnxruntime too

DEFAULT_VOCAB = (
    "a an the this that of in on at with and or is are photo picture image drawing "
    "cat dog bird fish horse car truck plane ship house tree flower man woman child "
    "red green blue black white big small one two three digit zero four five six seven eight nine"
).split()


def make_image_bundle(
    root: Path,
    name: str = "tiny-image",
    *,
    channels: int = 1,
    size: tuple[int, int] = (8, 8),
    dim: int = 16,
    metric: str = "cosine",
    normalize: bool = True,
    seed: int = 0,
) -> Path:
    """Write ``root/name`` with an image tower only; returns the bundle directory."""
    bundle = _bundle_dir(root, name)
    _save(_image_graph(channels, size, dim, seed), bundle / "image.onnx")
    _write_manifest(bundle, name, dim, metric, normalize, image=_image_entry(channels, size))
    return bundle


def make_text_bundle(
    root: Path,
    name: str = "tiny-text",
    *,
    dim: int = 16,
    max_length: int = 16,
    vocab: list[str] | None = None,
    seed: int = 0,
    metric: str = "cosine",
    normalize: bool = True,
    pooling: str = "none",
) -> Path:
    """Write ``root/name`` with a text tower and tokenizer.json; returns the bundle directory.

    ``pooling="mean"`` makes a graph that outputs token states [N, T, D] and leaves the
    (same) masked mean to the server, as the manifest's ``pooling`` field allows.
    """
    if pooling not in ("none", "mean"):
        raise ValueError("tiny text bundles pool with 'none' (in the graph) or 'mean'")
    bundle = _bundle_dir(root, name)
    vocab_size = _write_tokenizer(bundle / "tokenizer.json", vocab)
    _save(_text_graph(vocab_size, dim, seed, pool_in_graph=pooling == "none"), bundle / "text.onnx")
    _write_manifest(bundle, name, dim, metric, normalize, text=_text_entry(max_length, pooling))
    return bundle


def make_clip_bundle(
    root: Path,
    name: str = "tiny-clip",
    *,
    dim: int = 16,
    size: tuple[int, int] = (8, 8),
    channels: int = 3,
    max_length: int = 16,
    seed: int = 0,
    metric: str = "cosine",
    normalize: bool = True,
) -> Path:
    """Write ``root/name`` with image and text towers of the same ``dim``."""
    bundle = _bundle_dir(root, name)
    _save(_image_graph(channels, size, dim, seed), bundle / "image.onnx")
    vocab_size = _write_tokenizer(bundle / "tokenizer.json", None)
    _save(_text_graph(vocab_size, dim, seed + 1), bundle / "text.onnx")
    _write_manifest(
        bundle,
        name,
        dim,
        metric,
        normalize,
        image=_image_entry(channels, size),
        text=_text_entry(max_length),
    )
    return bundle


def numpy_reference_image(bundle_dir: Path, pixels: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1], float32 [N, C, H, W] at the tower's size (decoded, resized, cropped)
    → embeddings [N, D]: the manifest's mean/std, the projection and L2 normalisation."""
    manifest = json.loads((Path(bundle_dir) / "embedserve.json").read_text())["image"]
    mean = np.asarray(manifest["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(manifest["std"], np.float32).reshape(-1, 1, 1)
    x = (pixels.astype(np.float32) - mean) / std
    weight = _initializer(Path(bundle_dir) / "image.onnx", "projection")
    return _maybe_normalize(bundle_dir, x.reshape(len(x), -1) @ weight)


def numpy_reference_text(bundle_dir: Path, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Token ids / mask int64 [N, T] → embeddings [N, D], as the bundle computes them."""
    table = _initializer(Path(bundle_dir) / "text.onnx", "token_table")
    mask = attention_mask.astype(np.float32)[:, :, None]
    summed = (table[input_ids] * mask).sum(axis=1)
    out = summed / np.maximum(mask.sum(axis=1), np.float32(1e-9))
    return _maybe_normalize(bundle_dir, out)


def random_image(seed: int, height: int = 12, width: int = 20, channels: int = 3) -> np.ndarray:
    """Seeded uint8 pixels [H, W] (channels 1) or [H, W, C]."""
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def encode_image(pixels: np.ndarray, fmt: str = "PNG", **save_args) -> bytes:
    """uint8 pixels [H, W] or [H, W, C] → encoded bytes (PNG, JPEG, WEBP, BMP, GIF; Pillow's save args)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **save_args)
    return buffer.getvalue()


def _image_graph(channels: int, size: tuple[int, int], dim: int, seed: int) -> onnx.ModelProto:
    features = channels * size[0] * size[1]
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((features, dim)) / np.sqrt(features)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "projection"], ["embedding"]),
        ],
        "tiny_image",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", channels, *size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [numpy_helper.from_array(weight, "projection")],
    )
    return _model(graph)


def _text_graph(vocab_size: int, dim: int, seed: int, *, pool_in_graph: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab_size, dim)).astype(np.float32)
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "T"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "T"]),
    ]
    if not pool_in_graph:  # token states only; attention_mask is fed but unused
        graph = helper.make_graph(
            [helper.make_node("Gather", ["token_table", "input_ids"], ["token_states"], axis=0)],
            "tiny_text_tokens",
            inputs,
            [helper.make_tensor_value_info("token_states", TensorProto.FLOAT, ["N", "T", dim])],
            [numpy_helper.from_array(table, "token_table")],
        )
        return _model(graph)
    nodes = [
        helper.make_node("Gather", ["token_table", "input_ids"], ["tokens"], axis=0),  # [N, T, D]
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),  # [N, T]
        helper.make_node("Unsqueeze", ["mask", "last_axis"], ["mask3"]),  # [N, T, 1]
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "token_axis"], ["summed"], keepdims=0),  # [N, D]
        helper.make_node("ReduceSum", ["mask", "token_axis"], ["count"], keepdims=1),  # [N, 1]
        helper.make_node("Max", ["count", "tiny"], ["safe_count"]),
        helper.make_node("Div", ["summed", "safe_count"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_text",
        inputs,
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [
            numpy_helper.from_array(table, "token_table"),
            numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
            numpy_helper.from_array(np.array([1], np.int64), "token_axis"),
            numpy_helper.from_array(np.array([1e-9], np.float32), "tiny"),
        ],
    )
    return _model(graph)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests/tiny_models"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _write_tokenizer(path: Path, vocab: list[str] | None) -> int:
    words = ["[PAD]", "[UNK]"] + [w for w in (vocab or DEFAULT_VOCAB) if w not in ("[PAD]", "[UNK]")]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.save(str(path))
    return len(words)


def _image_entry(channels: int, size: tuple[int, int]) -> dict:
    return {
        "file": "image.onnx",
        "channels": channels,
        "size": list(size),
        "resize": "shorter_side",
        "mean": [0.5] * channels,
        "std": [0.25] * channels,
        "interpolation": "bilinear",
    }


def _text_entry(max_length: int, pooling: str = "none") -> dict:
    return {"file": "text.onnx", "tokenizer": "tokenizer.json", "max_length": max_length, "pooling": pooling}


def _write_manifest(bundle: Path, name: str, dim: int, metric: str, normalize: bool, **towers: dict) -> None:
    manifest = {
        "format_version": 1,
        "name": name,
        "version": "0.0.1",
        "dim": dim,
        "metric": metric,
        "normalize": normalize,
        **towers,
        "provenance": {"method": "random projection", "source": "tests/tiny_models.py"},
    }
    (bundle / "embedserve.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _bundle_dir(root: Path, name: str) -> Path:
    bundle = Path(root) / name
    bundle.mkdir(parents=True, exist_ok=True)
    return bundle


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.save(model, str(path))


def _initializer(onnx_path: Path, name: str) -> np.ndarray:
    graph = onnx.load(str(onnx_path)).graph
    (tensor,) = [t for t in graph.initializer if t.name == name]
    return numpy_helper.to_array(tensor)


def _maybe_normalize(bundle_dir: Path, out: np.ndarray) -> np.ndarray:
    manifest = json.loads((Path(bundle_dir) / "embedserve.json").read_text())
    if manifest["normalize"]:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
    return out.astype(np.float32)
