"""Few-label labelling through a real server: accuracy against labels spent, audit recall, and the
cost of spreading over big collections.

    python bench/labelling.py                       # digits curves, audit, 10^5 and 10^6 scale
    python bench/labelling.py --scale 100000        # a quicker run: skip 10^6

1. Curves. A real `embedserve serve` process with the default model stores all 1,797 digits
   of scikit-learn (8-bit grayscale PNGs, as any client sends them), unlabelled. A simulated
   person answers each suggestion with the true label, in rounds of 10. After each round
   every item the person did not label is scored against its predicted label
   (PropagateLabels). Three curves:
     random + weighted k-NN   (SuggestLabels strategy "random"; mean of 5 seeds)
     suggest + weighted k-NN  (strategy "auto": typical, then uncertain; method "knn")
     suggest + spreading      (the same labels; method "spread")
2. Audit. Every digit labelled with its true label, 5 % of them flipped to another digit;
   AuditLabels(count = m flipped): the share of the flips among its first m entries.
3. Scale. Collections of 10^5 and 10^6 clustered 128-d vectors (50 classes, each on a
   random 8-dimensional subspace around its centre, plus noise), 20 labels per class.
   PropagateLabels "spread" is timed (to the first prediction: the job; to the last: with
   streaming), the server's peak memory during it is read from /proc (VmHWM, reset before),
   and searches run meanwhile (their latency against idle).

Prints a table per part; writes bench/labelling.png (the curves).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_process import ServerProcess  # noqa: E402
from embedserve.client import Client, item  # noqa: E402

ROUND = 10
RANDOM_SEEDS = 5


def png(digit: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.round(digit * 255 / 16).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def accuracy(client: Client, collection: str, truth: dict[str, str], method: str) -> float:
    got = {p.id: p.label for p in client.propagate_labels(collection, method)}
    return float(np.mean([label == truth[i] for i, label in got.items()]))


def clear(client: Client, collection: str, ids: list[str]) -> None:
    client.set_labels(collection, {i: None for i in ids})


def curves(client: Client, truth: dict[str, str], max_labels: int) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {"suggest+knn": [], "suggest+spread": [], "random+knn": []}
    labelled: list[str] = []
    print(f"{'labels':>6}  {'strategy':>9}  {'suggest s':>9}  {'k-NN':>6}  {'spread':>6}")
    while len(labelled) < max_labels:
        started = time.perf_counter()
        reply = client.suggest_labels("digits", ROUND)
        took = time.perf_counter() - started
        picked = [s.id for s in reply.suggestions]
        client.set_labels("digits", {i: truth[i] for i in picked})
        labelled += picked
        knn, spread = accuracy(client, "digits", truth, "knn"), accuracy(client, "digits", truth, "spread")
        out["suggest+knn"].append((len(labelled), knn))
        out["suggest+spread"].append((len(labelled), spread))
        print(
            f"{len(labelled):6d}  {reply.strategy:>9}  {took:9.2f}  {100 * knn:5.1f}%  {100 * spread:5.1f}%"
        )
    clear(client, "digits", labelled)
    runs: dict[int, list[float]] = {}
    for seed in range(RANDOM_SEEDS):
        labelled = []
        while len(labelled) < max_labels:
            reply = client.suggest_labels(
                "digits", ROUND, strategy="random", seed=1000 * seed + len(labelled)
            )
            picked = [s.id for s in reply.suggestions]
            client.set_labels("digits", {i: truth[i] for i in picked})
            labelled += picked
            runs.setdefault(len(labelled), []).append(accuracy(client, "digits", truth, "knn"))
        clear(client, "digits", labelled)
    out["random+knn"] = [(n, statistics.fmean(accs)) for n, accs in sorted(runs.items())]
    print(
        "random + weighted k-NN (mean of 5 seeds): "
        + ", ".join(f"{n}: {100 * a:.1f}%" for n, a in out["random+knn"])
    )
    return out


def audit(client: Client, truth: dict[str, str], share: float = 0.05) -> None:
    rng = np.random.default_rng(0)
    ids = list(truth)
    flipped = set(rng.choice(ids, round(share * len(ids)), replace=False).tolist())
    given = {}
    for i in ids:
        label = truth[i]
        if i in flipped:
            label = str((int(label) + int(rng.integers(1, 10))) % 10)
        given[i] = label
    client.set_labels("digits", given)
    started = time.perf_counter()
    findings = client.audit_labels("digits", len(flipped))
    took = time.perf_counter() - started
    found = sum(f.id in flipped for f in findings)
    fixes = sum(f.id in flipped and f.suggested_label == truth[f.id] for f in findings)
    print(
        f"audit: {len(flipped)} of {len(ids)} labels flipped; the first {len(flipped)} findings hold "
        f"{found} of them ({100 * found / len(flipped):.1f} %), {fixes} with the true digit as the "
        f"suggested label; {took:.2f} s"
    )
    clear(client, "digits", ids)


def clustered(n: int, classes: int = 50, dim: int = 128, sub: int = 8, seed: int = 0):
    """(float32 [n, dim] unit vectors, class of each): each class spans a random ``sub``-dim
    subspace around its centre, plus isotropic noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    bases = rng.standard_normal((classes, sub, dim)).astype(np.float32) * 0.35
    cls = rng.integers(0, classes, n)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        c = cls[start : start + 100_000]
        z = rng.standard_normal((len(c), sub)).astype(np.float32)
        x[start : start + len(c)] = (
            centres[c] + np.einsum("ns,nsd->nd", z, bases[c]) + 0.25 * rng.standard_normal((len(c), dim))
        )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, cls


def scale(server: ServerProcess, n: int, per_class: int = 20) -> None:
    x, cls = clustered(n)
    rng = np.random.default_rng(1)
    labelled = set(
        np.concatenate([rng.choice(np.flatnonzero(cls == c), per_class, replace=False) for c in range(50)])
    )
    name = f"scale-{n}"
    with Client(server.target, timeout=None) as client:
        client.create_collection(name)
        started = time.perf_counter()
        batches = (
            [
                item(f"v{i}", vector=x[i], label=f"c{cls[i]}" if i in labelled else None)
                for i in range(s, min(n, s + 5000))
            ]
            for s in range(0, n, 5000)
        )
        client.upsert_stream(name, batches)
        load = time.perf_counter() - started
        probes = [x[i] for i in rng.choice(n, 200)]
        idle = _latencies(client, name, probes, 200)
        rss = server.rss_mb()
        reset = server.reset_peak()
        stop = threading.Event()
        during: list[float] = []
        searcher = threading.Thread(
            target=lambda: during.extend(_latencies(client, name, probes, 10**9, stop))
        )
        started = time.perf_counter()
        first = None
        got = 0
        correct = 0
        stages: dict[str, float] = {}
        searcher.start()
        for p in client.propagate_labels(
            name,
            on_progress=lambda stage, done, total: stages.setdefault(
                stage.split(":")[0], time.perf_counter()
            ),
        ):
            if first is None:
                first = time.perf_counter() - started
                stop.set()
            got += 1
            correct += p.label == f"c{cls[int(p.id[1:])]}"
        total = time.perf_counter() - started
        stop.set()
        searcher.join()
        peak = server.peak_mb()
    spread_s = stages.get("sending", started) - stages.get("spreading", started)
    graph_s = stages.get("spreading", started) - stages.get("graph", started)
    print(
        f"{n:>9,d} items: loaded in {load:.0f} s; spreading job {first:.1f} s (graph {graph_s:.1f} s, "
        f"spreading {spread_s:.1f} s), all {got:,d} predictions streamed at {total:.1f} s; "
        f"accuracy {100 * correct / got:.1f} % from {len(labelled)} labels; server RSS {rss:.0f} MB "
        f"before, peak {peak:.0f} MB during{'' if reset else ' (peak since start: clear_refs refused)'} "
        f"(+{peak - rss:.0f} MB); search p50 {1e3 * statistics.median(idle):.1f} ms idle, "
        f"{1e3 * statistics.median(during):.1f} ms during the job ({len(during)} searches, "
        f"max {1e3 * max(during):.0f} ms)"
    )


def _latencies(client, name, probes, n, stop: threading.Event | None = None) -> list[float]:
    out = []
    for i in range(n):
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        client.search(name, [probes[i % len(probes)]], k=10)
        out.append(time.perf_counter() - started)
    return out


def plot(results: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, style in (("random+knn", "o--"), ("suggest+knn", "s-"), ("suggest+spread", "^-")):
        xs, ys = zip(*results[name], strict=True)
        ax.plot(xs, [100 * y for y in ys], style, label=name.replace("+", " + "))
    ax.set_xlabel("labels given")
    ax.set_ylabel("accuracy on the other digits (%)")
    ax.set_title("1,797 digits, default model, through the server")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-labels", type=int, default=100)
    parser.add_argument("--scale", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    digits, target = load_digits(return_X_y=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data")
        print(f"server SERVING after {server.start():.1f} s")
        try:
            with Client(server.target, timeout=None) as client:
                client.create_collection("digits")
                truth = {f"d{i}": str(t) for i, t in enumerate(target)}
                client.upsert(
                    "digits", [item(f"d{i}", image=png(d.reshape(8, 8))) for i, d in enumerate(digits)]
                )
                results = curves(client, truth, args.max_labels)
                audit(client, truth)
            plot(results, ROOT / "bench" / "labelling.png")
            for n in args.scale:
                scale(server, n)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
