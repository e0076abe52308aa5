"""Embedded FAISS vs Milvus Lite behind the same server: the same upserts and searches, side by side.

Two `embedserve serve` processes, one plain (collections in the embedded FAISS store) and one with
``--milvus-uri`` (collections in Milvus Lite), get the same workload over gRPC: N clustered
vectors upserted in batches of 1000 (items/s), then single-query and 64-query Searches with k = 10
(queries/s, rounds interleaved between the two, medians), and recall@10 against exact numpy
search. For Flat and HNSW32.

    python bench/milvus.py [--n 20000] [--dim 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import ServerProcess  # noqa: E402

from embedserve.client import Client, item  # noqa: E402


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 400), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ base.T), axis=1)[:, :k]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = clustered(args.n, args.dim, 0)
    queries = clustered(args.queries, args.dim, 1)
    truth = exact(base, queries, 10)
    ids = [f"v{i}" for i in range(args.n)]

    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            "embedded FAISS": ServerProcess(Path(tmp) / "faiss"),
            "Milvus Lite": ServerProcess(Path(tmp) / "milvus", "--milvus-uri", str(Path(tmp) / "lite.db")),
        }
        for server in servers.values():
            server.start()
        clients = {name: Client(s.target) for name, s in servers.items()}
        results: dict[tuple[str, str], dict[str, list[float]]] = {}
        try:
            for index in ("Flat", "HNSW32"):
                name = f"bench_{index.lower()}"
                for backend, client in clients.items():
                    client.create_collection(name, index_spec=index, metric="ip")
                    # the default model's dim is 128: raw vectors of another dim need another collection
                    started = time.perf_counter()
                    for s in range(0, args.n, 1000):
                        client.upsert(
                            name, [item(ids[i], vector=base[i]) for i in range(s, min(args.n, s + 1000))]
                        )
                    r = results.setdefault((index, backend), {"ingest": [], "q1": [], "q64": []})
                    r["ingest"].append(args.n / (time.perf_counter() - started))
                    hits = client.search(name, list(queries), k=10)
                    got = np.array([[int(h.id[1:]) for h in row] for row in hits])
                    r["recall"] = [
                        float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)]))
                    ]
                for rnd in range(args.rounds):
                    order = list(clients) if rnd % 2 == 0 else list(reversed(clients))
                    for backend in order:
                        client, r = clients[backend], results[(index, backend)]
                        started = time.perf_counter()
                        for q in queries[:100]:
                            client.search(name, [q], k=10)
                        r["q1"].append(100 / (time.perf_counter() - started))
                        started = time.perf_counter()
                        for s in range(0, len(queries), 64):
                            client.search(name, list(queries[s : s + 64]), k=10)
                        r["q64"].append(len(queries) / (time.perf_counter() - started))
                print(f"{index} done", flush=True)
        finally:
            for client in clients.values():
                client.close()
            for server in servers.values():
                server.stop()

    print(
        f"\n{args.n} x {args.dim} clustered vectors, inner product, k = 10, {args.rounds} interleaved rounds (medians)\n"
    )
    print(
        "| index | store | upsert items/s | 1-query Search/s | queries/s in 64-query Searches | recall@10 |"
    )
    print("|---|---|---|---|---|---|")
    for (index, backend), r in results.items():
        print(
            f"| {index} | {backend} | {statistics.median(r['ingest']):,.0f} | {statistics.median(r['q1']):,.0f} "
            f"| {statistics.median(r['q64']):,.0f} | {r['recall'][0]:.3f} |"
        )


if __name__ == "__main__":
    main()
