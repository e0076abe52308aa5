"""Provider selection and tower sessions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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


def _feeds(kind: str, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "image":
        return {"pixels": rng.standard_normal((n, 1, 8, 8)).astype(np.float32)}
    ids = rng.integers(1, 20, size=(n, 6))
    mask = np.ones_like(ids)
    mask[:, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("kind", ["image", "text"])
def test_io_bound_run_gives_what_session_run_gives(bundle_dirs: dict[str, Path], kind: str) -> None:
    """The IO-binding path a CUDA session takes, forced on CPU: the same rows as Session.run, for
    float pixels and int64 token ids, also from two threads sharing the session at once."""
    path = bundle_dirs[f"tiny-{kind}"] / f"{kind}.onnx"
    plain = TowerSession(path, ["CPUExecutionProvider"], modality=kind, dim=16, intra_op_threads=1)
    bound = TowerSession(
        path, ["CPUExecutionProvider"], modality=kind, dim=16, intra_op_threads=1, bind_inputs=True
    )
    assert (plain.device, plain.bind_inputs, bound.bind_inputs) == ("cpu", False, True)
    feeds = [_feeds(kind, n, seed) for seed, n in enumerate([1, 5, 32, 7] * 8)]
    expected = [plain.run(f) for f in feeds]
    for f, want in zip(feeds, expected, strict=True):
        np.testing.assert_array_equal(bound.run(f), want)
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(bound.run, feeds))
    for out, want in zip(got, expected, strict=True):
        np.testing.assert_array_equal(out, want)
    with pytest.raises(EmbedServeError, match=r"returned shape \[5, 16\], expected \[5, 8\]"):
        TowerSession(path, ["CPUExecutionProvider"], modality=kind, dim=8, bind_inputs=True).run(feeds[1])


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
    assert (session.device, session.bind_inputs) == ("cuda", True)  # inputs copied in before Run
    out = session.run({"pixels": np.ones((4, 1, 8, 8), np.float32)})
    assert out.shape == (4, 16)
    cpu = TowerSession(bundle_dirs["tiny-image"] / "image.onnx", ["CPUExecutionProvider"], modality="image")
    np.testing.assert_allclose(out, cpu.run({"pixels": np.ones((4, 1, 8, 8), np.float32)}), atol=1e-4)
