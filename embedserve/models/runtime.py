"""ONNX Runtime sessions for towers, with explicit provider selection (never a silent fallback)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from embedserve.config import DEVICES
from embedserve.errors import BundleError, EmbedServeError

log = logging.getLogger("embedserve.models")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def resolve_providers(device: str) -> list[str]:
    """``--device`` → ORT providers in priority order.

    "cpu" → [CPU]; "cuda" → [CUDA, CPU], or RuntimeError if this onnxruntime
    build has no CUDA provider; "auto" → [CUDA, CPU] when available, else [CPU].
    """
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise RuntimeError(
                f"--device cuda: onnxruntime {ort.__version__} has no {CUDA} "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
            )
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise ValueError(f"device must be one of {', '.join(DEVICES)}, got '{device}'")


class TowerSession:
    """One ORT InferenceSession for one tower.

    ``run`` returns the first output as float32 [N, D] (or [N, T, D] when
    ``output_rank`` is 3, for towers pooled outside the graph). ``Session.run`` is
    thread-safe, so one session serves every batch. If the session does not run on
    ``providers[0]`` it raises RuntimeError, unless ``strict`` is False ("auto"
    device), which logs a warning and keeps what ORT chose.

    On CUDA a batch runs through IO binding (``bind_inputs``): its inputs are copied to the
    device before ``Run``, in the calling infer thread, and ``Run`` only launches kernels and
    copies the [N, D] output back. A GPU tower runs two batches at once
    (``embedserve.models.tower.concurrent_batches``), so one batch's host-to-device copy
    (and its padding before it) can overlap the other's kernels instead of being queued
    behind them inside ``Run``. Not yet measured on a GPU. On CPU the inputs already live
    where the kernels read them and ``Session.run`` is used as it is (``bind_inputs=True``
    forces the bound path there: the same code, tested on machines without a GPU).
    """

    def __init__(
        self,
        model_path: Path,
        providers: list[str],
        *,
        intra_op_threads: int = 0,
        modality: str,
        dim: int | None = None,
        output_rank: int = 2,
        strict: bool = True,
        bind_inputs: bool | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.modality = modality
        self.dim = dim
        self.output_rank = output_rank
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's idle threads spin by default: in a server they burn the cores that decode and gRPC need
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if intra_op_threads > 0:
            options.intra_op_num_threads = intra_op_threads
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as e:  # ORT raises its own Fail / InvalidGraph / InvalidProtobuf types
            raise BundleError(f"{model_path}: cannot load ONNX model: {e}") from None
        self.providers: list[str] = list(self._session.get_providers())
        self.execution_provider: str = self.providers[0]
        if self.execution_provider != providers[0]:
            # ORT falls back to CPU with only a log line when CUDA libraries are missing.
            if not strict:
                log.warning(
                    "%s: %s unavailable, running on %s", model_path, providers[0], self.execution_provider
                )
            else:
                raise RuntimeError(
                    f"{model_path}: asked for {providers[0]} but the session runs on "
                    f"{self.execution_provider} (is the CUDA/cuDNN runtime installed?); "
                    "use --device cpu to run on CPU deliberately"
                )
        # the device the kernels read their inputs from (a CUDA session runs on device 0)
        self.device = "cuda" if self.execution_provider == CUDA else "cpu"
        self.bind_inputs = self.device != "cpu" if bind_inputs is None else bind_inputs
        self.input_names: list[str] = [i.name for i in self._session.get_inputs()]
        self._output_name = self._session.get_outputs()[0].name
        log.info(
            "%s tower %s: %s (providers %s)",
            modality,
            model_path,
            self.execution_provider,
            ", ".join(self.providers),
        )

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run one batch; feeds are [N, ...] arrays by input name → float32 [N, D]."""
        n = len(next(iter(feeds.values())))
        if self.bind_inputs:
            out = self._run_bound(feeds)
        else:
            (out,) = self._session.run([self._output_name], feeds)
            out = np.asarray(out)
        expected = [n, *(["T"] if self.output_rank == 3 else []), self.dim or "D"]
        if (
            out.ndim != self.output_rank
            or out.shape[0] != n
            or (self.dim is not None and out.shape[-1] != self.dim)
        ):
            raise EmbedServeError(
                f"{self.modality} tower {self.model_path.name} returned shape {list(out.shape)}, "
                f"expected {expected}"
            )
        return out.astype(np.float32, copy=False)

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``run`` through IO binding: each input copied to ``device`` here, in this thread (one
        copy, outside ``Run``), the output bound to host memory (ORT copies it back at the
        end of ``Run``)."""
        binding = self._session.io_binding()
        for name, array in feeds.items():
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)
            binding.bind_ortvalue_input(name, value)
        binding.bind_output(self._output_name, "cpu")
        self._session.run_with_iobinding(binding)
        return np.asarray(binding.get_outputs()[0].numpy())
