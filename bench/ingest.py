"""Ingest of raw vectors over UpsertStream against raw FAISS: vectors/s, the ratio, and the
server's CPU per vector.

    python bench/ingest.py                 # 3 rounds of 100,000 x 128 in 2,000-item messages
    python bench/ingest.py --n 1000000

A real `embedserve serve` process (default settings); each round streams into a new Flat
(cosine) collection and deletes it afterwards. Server CPU is the process's user + system time
over the round (from /proc), so it includes gRPC's parsing, the log writes and fsyncs and any
snapshot. The raw baseline, in the same rounds, interleaved: what FAISS does at best with the
same vectors in this process, L2-normalising all of them and adding them to an IndexFlatIP in
one call (no durability, no network). The ratio is server / raw vectors/s (below 1: the server
does more, and must).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_process import ServerProcess  # noqa: E402
from embedserve.client import Client, item  # noqa: E402
from embedserve.metric import l2_normalize  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    x = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data")
        server.start()
        assert server.proc is not None
        rates, costs, raw = [], [], []
        empty_mb = server.rss_mb()
        kept_mb = None
        try:
            with Client(server.target, timeout=None) as client:
                for r in range(args.rounds):
                    t0 = time.perf_counter()
                    index = faiss.IndexFlatIP(args.dim)
                    index.add(l2_normalize(x))
                    raw.append(args.n / (time.perf_counter() - t0))
                    name = f"ingest-{r}"
                    client.create_collection(name)
                    batches = (
                        [item(f"i{j}", vector=x[j]) for j in range(b, min(args.n, b + args.batch))]
                        for b in range(0, args.n, args.batch)
                    )
                    cpu0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()
                    client.upsert_stream(name, batches)
                    seconds = time.perf_counter() - t0
                    cpu = cpu_seconds(server.proc.pid) - cpu0
                    rates.append(args.n / seconds)
                    costs.append(cpu / args.n * 1e6)
                    print(
                        f"round {r}: raw FAISS {raw[-1]:,.0f} vectors/s, server {rates[-1]:,.0f} vectors/s "
                        f"({rates[-1] / raw[-1]:.3f}x), server CPU {costs[-1]:.1f} us/vector"
                    )
                    if r == args.rounds - 1:
                        time.sleep(2)  # any snapshot the round triggered has finished
                        kept_mb = server.rss_mb()
                    client.delete_collection(name)
        finally:
            server.stop()
    print(
        f"median of {args.rounds}: raw FAISS {statistics.median(raw):,.0f} vectors/s, server "
        f"{statistics.median(rates):,.0f} vectors/s ({statistics.median(r / b for r, b in zip(rates, raw)):.3f}x), "
        f"{statistics.median(costs):.1f} us of server CPU per vector ({args.n:,} x {args.dim}, "
        f"{args.batch} per message)"
    )
    if kept_mb is not None and empty_mb is not None:
        raw_mb = args.n * args.dim * 4 / 2**20
        print(
            f"memory with the last round's collection held: server RSS {kept_mb:,.0f} MiB, of which "
            f"{kept_mb - empty_mb:,.0f} over the empty server's {empty_mb:,.0f}, for {raw_mb:,.0f} MiB of "
            f"vectors: {(kept_mb - empty_mb) / raw_mb:.2f}x the raw vector bytes ({kept_mb / raw_mb:.2f}x "
            "counting the whole process)"
        )


if __name__ == "__main__":
    main()
