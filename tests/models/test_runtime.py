"""Provider selection and tower sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from embedserve.errors import EmbedServeError
from embedserve.models import BundleError, TowerSession, resolve_providers

HAS_CUDA = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime has CUDA")
def test_cuda_without_cuda_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider"):
        resolve_providers("cuda")
    assert resolve_providers("auto") == ["CPUExecutionProvider"]


def test_resolve_providers() -> None:
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    assert resolve_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="device"):
        resolve_providers("tpu")


def test_session_runs_and_checks_dim(bundle_dirs: dict[str, Path]) -> None:
    path = bundle_dirs["tiny-image"] / "image.onnx"
    session = TowerSession(path, ["CPUExecutionProvider"], modality="image", dim=16, intra_op_threads=1)
    assert session.execution_provider == "CPUExecutionProvider"
    assert session.providers == ["CPUExecutionProvider"]
    assert session.input_names == ["pixels"]
    out = session.run({"pixels": np.zeros((3, 1, 8, 8), np.float32)})
    assert out.shape == (3, 16) and out.dtype == np.float32

    wrong = TowerSession(path, ["CPUExecutionProvider"], modality="image", dim=32)
    with pytest.raises(EmbedServeError, match=r"returned shape \[3, 16\], expected \[3, 32\]"):
        wrong.run({"pixels": np.zeros((3, 1, 8, 8), np.float32)})


def test_bad_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "image.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(BundleError, match="cannot load ONNX model"):
        TowerSession(path, ["CPUExecutionProvider"], modality="image")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs onnxruntime with CUDAExecutionProvider and a GPU")
def test_cuda_session_really_runs_on_cuda(bundle_dirs: dict[str, Path]) -> None:
    providers = resolve_providers("cuda")
    session = TowerSession(bundle_dirs["tiny-image"] / "image.onnx", providers, modality="image", dim=16)
    assert session.execution_provider == "CUDAExecutionProvider"
    out = session.run({"pixels": np.ones((4, 1, 8, 8), np.float32)})
    assert out.shape == (4, 16)
