"""Embed throughput from one server process against two, with the same clients on the same cores.

    python bench/processes.py [--rounds 3] [--seconds 2] [--server-flags "--intra-op-threads 1"]

Issue 10 asks whether several server processes (for the stateless embed path) beat one. One
``embedserve serve`` process's event loop and Python run under one GIL; a second process has its
own. Here 16 client processes send Embed requests of 1 and of 32 PNGs (the bench CNN at 64x64,
``serve_bench.build_bundle``) either all to one server, or 8 to each of two servers (what a load
balancer or SO_REUSEPORT would do with their connections), in interleaved rounds, medians:
images/s, the servers' CPU per image (summed over the processes) and the clients'.

embedserve does not start such processes itself: its store is owned by one process (one writer
of the write-ahead log, the index in its memory), and with SO_REUSEPORT every RPC of a
connection, Search and Upsert included, would land on whichever process accepted it. Extra
processes for embedding are separate ``embedserve serve`` instances with no collections, each
with its own --data directory and port, behind the caller's load balancer (see README).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import Clients, build_bundle, png, start_server  # noqa: E402

from embedserve.models.bundle import load_manifest  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--server-flags", default="", help="more `embedserve serve` flags for every server")
    args = parser.parse_args()
    flags = args.server_flags.split()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(Path(tmp) / "models", "cnn")
        servers = [start_server([bundle], Path(tmp) / f"data{i}", flags) for i in range(3)]
        setups = {"one process": servers[:1], "two processes": servers[1:]}
        clients = Clients(16)
        images = [png(np.random.default_rng(0), 64) for _ in range(64)]
        name = load_manifest(bundle).name
        results: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
        try:
            for r in range(args.rounds):
                for n in (1, 32):
                    for label in setups if r % 2 == 0 else reversed(list(setups)):
                        procs = setups[label]
                        pids, targets = [p.pid for p, _ in procs], [t for _, t in procs]
                        rate = clients.rate(pids, targets, "embed", (images[:n], name), 16, args.seconds)
                        results.setdefault((n, label), []).append(rate)
        finally:
            clients.close()
            for proc, _ in servers:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    print(f"16 client processes, {args.rounds} interleaved rounds of {args.seconds:g} s, medians")
    print(
        "| request | servers | images/s | × one process | servers' CPU ms / image | clients' CPU ms / image |"
    )
    print("|---|---|---|---|---|---|")
    for n in (1, 32):
        base = statistics.median(x[0] for x in results[(n, "one process")])
        for label in setups:
            rows = results[(n, label)]
            rate = statistics.median(x[0] for x in rows)
            print(
                f"| {n} image{'s' if n > 1 else ''} | {label} | {rate:,.0f} | {rate / base:.2f} "
                f"| {statistics.median(x[1] for x in rows) * 1e3:.2f} | {statistics.median(x[2] for x in rows) * 1e3:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
