"""Export a trained encoder as a model bundle (see DESIGN.md): ONNX + ``embedserve.json``.

Steps: ONNX (classic exporter, opset 17, only the batch axis dynamic) →
``onnx.checker`` (full check) → parity against PyTorch on real images, preprocessed
by the server's own code: max |Δ| ≤ 1e-4 and cosine ≥ 0.99999, or the export fails →
evaluation of the bundle exactly as served (PNG → ImagePreprocessor → ONNX
Runtime) → manifest with preprocessing and provenance → optional variants:
``fp16`` (weights stored in half precision, computed in fp32) and ``int8``
(ONNX Runtime static QDQ quantisation calibrated on training images), each with
its k-NN accuracy change written into the manifest.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from embedserve.metric import Metric, l2_normalize
from embedserve.models.bundle import Manifest
from training.data import ImageSet
from training.evaluate.bundle import bundle_embed
from training.evaluate.knn import knn_table
from training.evaluate.probe import linear_probe
from training.run import load_run

OPSET = 17
MAX_ABS_DIFF = 1e-4
MIN_COSINE = 0.99999
INPUT_NAME, OUTPUT_NAME = "pixels", "embedding"
VARIANTS = ("fp16", "int8")


class ExportError(RuntimeError):
    """The exported graph is not faithful to the trained encoder (parity, checker)."""


def export_onnx(encoder: nn.Module, shape: tuple[int, int, int], path: Path) -> None:
    """Write ``encoder`` ([N, C, H, W] → [N, D]) as ONNX with a dynamic batch axis only."""
    import onnx

    encoder = encoder.eval().to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(2, *shape)
    with warnings.catch_warnings():
        # The classic (TorchScript) exporter is chosen on purpose: the dynamo one needs
        # onnxscript and writes weights to a side file; its deprecation notice is noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(encoder, dummy, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _export(encoder: nn.Module, dummy: torch.Tensor, path: Path) -> None:
    torch.onnx.export(
        encoder,
        (dummy,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )


def server_pixels(bundle_dir: Path, images: list[bytes]) -> np.ndarray:
    """float32 [N, C, H, W] exactly as the server feeds the graph (manifest preprocessing)."""
    from embedserve.models import ImagePreprocessor, load_manifest

    spec = load_manifest(bundle_dir).image
    pre = ImagePreprocessor(spec, max_image_bytes=1 << 30, max_image_pixels=1 << 30)
    return np.stack([pre.preprocess(b, i) for i, b in enumerate(images)])


def parity(encoder: nn.Module, onnx_path: Path, pixels: np.ndarray) -> dict[str, float]:
    """Compare PyTorch and ONNX Runtime on the same inputs: max |Δ| and min row cosine."""
    import onnxruntime as ort

    with torch.no_grad():
        expected = encoder.eval()(torch.from_numpy(pixels)).numpy().astype(np.float64)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: pixels})[0].astype(np.float64)
    cosine = (l2_normalize(expected).astype(np.float64) * l2_normalize(got)).sum(1)
    return {
        "inputs": len(pixels),
        "max_abs_diff": float(np.abs(expected - got).max()),
        "min_cosine": float(cosine.min()),
    }


def evaluate_bundle(
    bundle_dir: Path, train: ImageSet, test: ImageSet, onnx_file: Path | None = None, probe: bool = True
) -> dict[str, Any]:
    """k-NN table (and linear probe) of the bundle as served: encoded images in, embeddings out."""
    train_emb = bundle_embed(bundle_dir, train.images, onnx_file=onnx_file)
    test_emb = bundle_embed(bundle_dir, test.images, onnx_file=onnx_file)
    result: dict[str, Any] = {"knn": knn_table(train_emb, train.labels, test_emb, test.labels)}
    if probe:
        result["linear_probe"] = linear_probe(train_emb, train.labels, test_emb, test.labels)
    return result


def fp16_weights(src: Path, dst: Path) -> None:
    """A copy of ``src`` whose float initializers are stored as float16, cast back to float32 in-graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < 16:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(dst))


def int8_static(src: Path, dst: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime static quantisation (QDQ, per-channel weights) calibrated on ``calibration`` pixels."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 64)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )


def _delta(variant: dict, base: dict) -> dict[str, float]:
    return {k: round(variant[k]["mean"] - base[k]["mean"], 2) for k in base}


def export_bundle(
    run_dir: Path,
    out: Path,
    *,
    name: str | None = None,
    version: str = "1",
    variants: tuple[str, ...] = (),
    command: str | None = None,
    parity_images: int = 256,
) -> dict[str, Any]:
    """Write the bundle for ``run_dir`` into ``out``; returns its manifest (as written)."""
    from training.config import FitConfig
    from training.text.run import TEXT_METHODS

    if FitConfig.load(Path(run_dir) / "config.json").method in TEXT_METHODS:
        if variants:
            raise ValueError("fp16/int8 variants are made for image towers only")
        from training.text.bundle import export_text_bundle

        return export_text_bundle(Path(run_dir), Path(out), name=name, version=version, command=command)
    t0 = time.perf_counter()
    cfg, data, method, state = load_run(Path(run_dir))
    encoder = method.encoder().eval()
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    onnx_path = out / "image.onnx"
    shape = (data.spec.channels, *data.spec.size)
    export_onnx(encoder, shape, onnx_path)
    with torch.no_grad():
        dim = int(encoder(torch.zeros(1, *shape)).shape[1])

    manifest = Manifest(
        name=name or f"{cfg.data if cfg.data in ('digits', 'shapes') else 'images'}-{cfg.method}",
        version=version,
        dim=dim,
        metric=Metric.COSINE,
        normalize=True,
        image=data.spec.tower_spec(onnx_path),
        text=None,
        path=out,
    )
    manifest.write()  # preprocessing must be readable before parity (server_pixels reads it)

    check_set = data.eval if data.eval is not None else data.train
    pixels = server_pixels(out, check_set.images[:parity_images])
    figures = parity(encoder, onnx_path, pixels)
    if figures["max_abs_diff"] > MAX_ABS_DIFF or figures["min_cosine"] < MIN_COSINE:
        raise ExportError(
            f"ONNX parity failed: {figures} (need max |Δ| ≤ {MAX_ABS_DIFF}, cosine ≥ {MIN_COSINE})"
        )

    provenance = run_provenance(cfg, state, command)
    provenance["backbone"] = cfg.backbone.to_dict()
    provenance["parity"] = {
        **figures,
        "opset": OPSET,
        "inputs_from": "server preprocessing of evaluation images",
    }
    labelled = data.eval is not None and data.eval.labels is not None and data.train.labels is not None
    if labelled:
        evaluation = evaluate_bundle(out, data.train, data.eval)
        provenance["evaluation"] = {
            **evaluation,
            "protocol": "weighted k-NN (k=20, T=0.07, cosine), L labels per class drawn 5 times (seeds 0-4); "
            "accuracy % on the evaluation split as mean ± std; images sent as encoded files "
            "through the server's preprocessing and this ONNX graph",
            "train_images": len(data.train),
            "eval_images": len(data.eval),
        }
    variant_info = {}
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant '{variant}'; have {', '.join(VARIANTS)}")
        path = out / f"image.{variant}.onnx"
        if variant == "fp16":
            fp16_weights(onnx_path, path)
        else:
            int8_static(onnx_path, path, server_pixels(out, data.train.images[:512]))
        info: dict[str, Any] = {"file": path.name, "bytes": path.stat().st_size}
        if labelled:
            knn = evaluate_bundle(out, data.train, data.eval, onnx_file=path, probe=False)["knn"]
            info["knn"] = knn
            info["knn_delta"] = _delta(knn, provenance["evaluation"]["knn"])
        variant_info[variant] = info
    if variant_info:
        provenance["variants"] = {
            **variant_info,
            "note": "alternative image.onnx files: point the manifest's image.file at one to serve it",
        }
    provenance["export_seconds"] = round(time.perf_counter() - t0, 1)
    manifest = dataclasses.replace(manifest, provenance=provenance)
    manifest.write()
    return manifest.to_json()


def run_provenance(cfg, state: dict[str, Any], command: str | None) -> dict[str, Any]:
    """What every bundle's ``provenance`` says of the run it came from."""
    return {
        "method": cfg.method,
        "dataset": cfg.data,
        "epochs": state["epoch"],
        "seed": cfg.seed,
        "training_seconds": round(state["train_seconds"], 1),
        "config": cfg.to_dict(),
        "built_by": command,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
    }
