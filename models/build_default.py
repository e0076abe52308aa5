"""Build the default bundle ``models/digits-pixels``: python models/build_default.py

A deliberately simple, fully reproducible encoder that needs no training and no
torch: the image is read as 8x8 grayscale (the size of scikit-learn's digits),
flattened, and centred by its own mean; with cosine similarity that is the
Pearson correlation of pixels. It is the "raw pixels" baseline that learned
encoders from training/ must beat, and it keeps `embedserve serve` working
out of the box. Needs the ``onnx`` package (dev extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
NAME = "digits-pixels"
SIZE = 8


def build(out: Path = HERE / NAME) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    dim = SIZE * SIZE
    nodes = [
        helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat", "axes"], ["mean"], keepdims=1),
        helper.make_node("Sub", ["flat", "mean"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        NAME,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="embedserve")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out / "image.onnx")
    manifest = {
        "format_version": 1,
        "name": NAME,
        "version": "1",
        "dim": dim,
        "metric": "cosine",
        "normalize": True,
        "image": {
            "file": "image.onnx",
            "channels": 1,
            "size": [SIZE, SIZE],
            "resize": "shorter_side",
            "mean": [0.0],
            "std": [1.0],
            "interpolation": "bilinear",
        },
        "provenance": {
            "method": "centred-pixels",
            "trained": False,
            "dataset": None,
            "built_by": "python models/build_default.py",
            "note": "baseline encoder: 8x8 grayscale pixels minus their mean",
        },
    }
    (out / "embedserve.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


if __name__ == "__main__":
    print(build())
