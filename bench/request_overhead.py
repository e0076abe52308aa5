"""The server's own cost per request, against the gRPC floor and the raw work (issue 10's first goals).

Three processes: a bare ``grpc.aio`` echo server (one unary method, bytes in and out: the floor any
Python gRPC server pays), ``embedserve serve`` with the default model, and this one as the client,
sending one request at a time. For each kind of request the server's CPU time (utime + stime from
/proc) over a round of N requests gives its CPU per request; rounds are interleaved, medians.

Raw baselines in this process, in the same rounds, CPU time per item: decode + ONNX Runtime for the same tiny PNG
(``embedserve.models.encoder.Encoder``, the server's own preprocessing), and FAISS
``IndexFlatIP.search`` of one query over the same 20,000 x 128 clustered vectors, one OpenMP thread.
Ratios: Embed / (echo + decode + ORT), Search / (echo + FAISS). Issue 10 asks for <= 1.5 and <= 1.3.

    python bench/request_overhead.py [--n 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import ServerProcess, free_port  # noqa: E402

ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys, grpc

    async def echo(request, context):
        return request

    async def main(port):
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    if len(sys.argv) > 2:  # the loop embedserve serves on where installed (embedserve.server.loop)
        import uvloop
        uvloop.install()
    asyncio.run(main(int(sys.argv[1])))
    """
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clustered(n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((n // 400, dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((8, 8)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def raw_cost_per_call(fn, n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call of ``fn``, over n calls after one warm-up."""
    fn()
    started, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n, (time.perf_counter() - wall) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=400, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import faiss
    import grpc

    from embedserve.client import Client, item
    from embedserve.config import ServerConfig
    from embedserve.models.encoder import Encoder, find_bundle

    png = tiny_png()
    base = clustered(20_000, 128)
    queries = clustered(1_000, 128)[:64]

    faiss.omp_set_num_threads(1)
    faiss.cvar.distance_compute_blas_threshold = 1 << 30  # one query: FAISS's SIMD scan, its fastest path
    flat = faiss.IndexFlatIP(128)
    flat.add(base)
    encoder = Encoder(find_bundle("digits-simclr"), ServerConfig(device="cpu"))

    # the raw work, in this process, timed in the same interleaved rounds as the servers
    def search(nq: int, threads: int = 1):
        # FAISS's fastest path for each: its SIMD scan for one query, BLAS for a batch; one OpenMP
        # thread (the least CPU per call) unless told otherwise
        threshold = 1 << 30 if nq == 1 else 6

        def go() -> None:
            faiss.cvar.distance_compute_blas_threshold = threshold
            faiss.omp_set_num_threads(threads)
            flat.search(queries[:nq], 10)
            faiss.omp_set_num_threads(1)

        return go

    raws = {
        "decode + ORT": lambda: encoder.encode_images([png]),
        "FAISS Flat search of 1 query": search(1),
        "FAISS Flat search of 64 queries": search(64),
        # the queries/s baseline: a 64-query batch is fastest on every core (10-11.7k queries/s
        # against 6.5-6.8k on one thread, 20k x 128 on the 2-core machine)
        "FAISS Flat search of 64 queries, every core": search(64, os.cpu_count() or 1),
    }
    raw_per: dict[str, list[float]] = {k: [] for k in raws}
    raw_wall: dict[str, list[float]] = {k: [] for k in raws}

    echoes, echo_calls = [], {}
    for name, extra in (("echo (bare grpc.aio)", []), ("echo (bare grpc.aio on uvloop)", ["uv"])):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER, str(port), *extra], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        echoes.append(proc)
        echo_calls[name] = (
            proc.pid,
            grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/bench.Echo/Echo"),
        )
    payload = b"x" * 64

    def calls(name: str) -> int:
        """Calls per round: a 64-query call costs ~20 single ones; a quarter of --n of them keeps each
        round's sample near half a second, long enough not to be one noisy moment of the machine."""
        return args.n if "64" not in name else max(20, args.n // 4)

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data")
        server.start()
        client = Client(server.target)
        client.create_collection("overhead", metric="ip")
        for s in range(0, len(base), 2000):
            client.upsert("overhead", [item(f"v{i}", vector=base[i]) for i in range(s, s + 2000)])
        q64 = queries[:64]  # a [64, 128] array: one tensor (SearchRequest.vectors)
        kinds = {name: (pid, lambda call=call: call(payload)) for name, (pid, call) in echo_calls.items()} | {
            "ListModels": (server.proc.pid, lambda: client.list_models()),
            "Embed, 1 tiny PNG": (server.proc.pid, lambda: client.embed([png])),
            "Search, 1 query, k=10, 20k Flat": (server.proc.pid, lambda: client.search("overhead", [queries[0]], k=10)),
            "Search, 64 queries, k=10": (server.proc.pid, lambda: client.search("overhead", q64, k=10, include_metadata=False)),
            "Search, 64 queries, k=10, packed": (server.proc.pid, lambda: client.search_packed("overhead", q64, k=10)),
        }  # fmt: skip
        per: dict[str, list[float]] = {k: [] for k in kinds}
        rate: dict[str, list[float]] = {k: [] for k in kinds}
        try:
            for fn in (v[1] for v in kinds.values()):
                for _ in range(50):  # warm up
                    fn()
            for r in range(args.rounds):
                order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
                for name in order:
                    pid, fn = kinds[name]
                    before, started = cpu_seconds(pid), time.perf_counter()
                    n = calls(name)
                    for _ in range(n):
                        fn()
                    wall = time.perf_counter() - started
                    per[name].append((cpu_seconds(pid) - before) / n)
                    rate[name].append(n / wall)
                for raw, fn in raws.items():
                    cpu, wall = raw_cost_per_call(fn, calls(raw))
                    raw_per[raw].append(cpu)
                    raw_wall[raw].append(wall)
        finally:
            client.close()
            server.stop()
            for proc in echoes:
                proc.kill()

    med = {k: statistics.median(v) * 1e6 for k, v in per.items()}
    raw = {k: statistics.median(v) * 1e6 for k, v in raw_per.items()}
    floor = med["echo (bare grpc.aio)"]
    print(f"\n{args.rounds} interleaved rounds, 1 client, medians; raw in-process CPU per call:")
    print(", ".join(f"{k} {v:,.0f} µs" for k, v in raw.items()) + "\n")
    print("| request | req/s | server CPU µs / request | floor + raw µs | ratio |")
    print("|---|---|---|---|---|")
    targets = {
        "ListModels": floor,
        "Embed, 1 tiny PNG": floor + raw["decode + ORT"],
        "Search, 1 query, k=10, 20k Flat": floor + raw["FAISS Flat search of 1 query"],
        "Search, 64 queries, k=10": floor + raw["FAISS Flat search of 64 queries"],
        "Search, 64 queries, k=10, packed": floor + raw["FAISS Flat search of 64 queries"],
    }
    for name in kinds:
        target = targets.get(name, floor)
        print(
            f"| {name} | {statistics.median(rate[name]):,.0f} | {med[name]:,.0f} | {target:,.0f} "
            f"| {med[name] / target:.2f} |"
        )
    raw_qps = 64 / statistics.median(raw_wall["FAISS Flat search of 64 queries, every core"])
    print(f"\nqueries/s in 64-query calls: raw FAISS on every core {raw_qps:,.0f}")
    for name in ("Search, 64 queries, k=10", "Search, 64 queries, k=10, packed"):
        served = 64 * statistics.median(rate[name])
        print(f"  {name}: {served:,.0f} ({served / raw_qps:.2f}x raw)")


if __name__ == "__main__":
    main()
