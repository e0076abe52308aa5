"""Per-token int8 rewriting of a graph's constant-weight MatMuls (training.text.quantize)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from training.text.quantize import quantize_per_token


def two_layer_graph(path: Path, opset: int, seed: int = 0) -> None:
    """x [N, T, 16] -> MatMul(W1) + b -> Gelu-ish (x * sigmoid(1.702 x)) -> MatMul(W2) -> y [N, T, 8],
    plus a MatMul of two activations (x @ x^T over the last axes), which has no weight to quantize."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(0, 0.3, (16, 32)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.normal(0, 0.1, (32,)).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (32, 8)).astype(np.float32), "w2")
    k = numpy_helper.from_array(np.array(1.702, np.float32), "k")
    perm = [0, 2, 1]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Mul", ["h1", "k"], ["h2"]),
        helper.make_node("Sigmoid", ["h2"], ["h3"]),
        helper.make_node("Mul", ["h1", "h3"], ["h4"]),
        helper.make_node("MatMul", ["h4", "w2"], ["y"]),
        helper.make_node("Transpose", ["x"], ["xt"], perm=perm),
        helper.make_node("MatMul", ["x", "xt"], ["gram"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_layers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 16])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 8]),
            helper.make_tensor_value_info("gram", TensorProto.FLOAT, ["N", "T", "T"]),
        ],
        [w1, b1, w2, k],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


@pytest.mark.parametrize("opset", [17, 18])  # ReduceMin/Max take their axes as an input from 18
def test_int8_matches_float_closely_and_each_token_is_its_own(tmp_path, opset):
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    two_layer_graph(float_path, opset)
    assert quantize_per_token(float_path, int8_path) == {"matmuls": 2, "kept_float": 1}
    ops = [n.op_type for n in onnx.load(str(int8_path)).graph.node]
    assert ops.count("MatMulInteger") == 2 and ops.count("MatMul") == 1  # x @ x^T stays float

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (6, 5, 16)).astype(np.float32)
    x[2, 1] *= 50  # one token far larger than the rest: it must not cost the others their precision
    x[3, 4] = 0  # a token of zeros
    (y_float, gram_float), (y_int8, gram_int8) = run(float_path, x), run(int8_path, x)
    np.testing.assert_array_equal(gram_int8, gram_float)
    rows_float, rows_int8 = y_float.reshape(-1, 8), y_int8.reshape(-1, 8)
    cosine = (rows_float * rows_int8).sum(1) / (
        np.linalg.norm(rows_float, axis=1) * np.linalg.norm(rows_int8, axis=1) + 1e-30
    )
    live = np.linalg.norm(rows_float, axis=1) > 0
    assert cosine[live].min() > 0.999
    assert np.abs(y_int8[3, 4] - y_float[3, 4]).max() < 1e-2 * np.abs(y_float).max()
    # a token's result is the same whatever shares its batch: alone, with others, or padded
    for i in range(len(x)):
        alone = run(int8_path, x[i : i + 1])[0]
        np.testing.assert_array_equal(alone[0], y_int8[i])
    np.testing.assert_array_equal(run(int8_path, x[:, :3])[0], y_int8[:, :3])


def test_a_graph_too_old_is_refused(tmp_path):
    path = tmp_path / "old.onnx"
    two_layer_graph(path, 17)
    model = onnx.load(str(path))
    model.opset_import[0].version = 12
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match="opset 12"):
        quantize_per_token(path, tmp_path / "out.onnx")
