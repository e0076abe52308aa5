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


def raw_cpu_per_item(fn, n: int) -> float:
    fn()
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n


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
    raws = {
        "decode + ORT": lambda: encoder.encode_images([png]),
        "FAISS Flat search of 1 query": lambda: flat.search(queries[:1], 10),  # the scan: FAISS's best for 1
    }
    raw_per: dict[str, list[float]] = {k: [] for k in raws}

    port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    echo_call = channel.unary_unary("/bench.Echo/Echo")
    payload = b"x" * 64

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data")
        server.start()
        client = Client(server.target)
        client.create_collection("overhead", metric="ip")
        for s in range(0, len(base), 2000):
            client.upsert("overhead", [item(f"v{i}", vector=base[i]) for i in range(s, s + 2000)])
        kinds = {
            "echo (bare grpc.aio)": (echo.pid, lambda: echo_call(payload)),
            "ListModels": (server.proc.pid, lambda: client.list_models()),
            "Embed, 1 tiny PNG": (server.proc.pid, lambda: client.embed([png])),
            "Search, 1 query, k=10, 20k Flat": (server.proc.pid, lambda: client.search("overhead", [queries[0]], k=10)),
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
                    for _ in range(args.n):
                        fn()
                    wall = time.perf_counter() - started
                    per[name].append((cpu_seconds(pid) - before) / args.n)
                    rate[name].append(args.n / wall)
                for raw, fn in raws.items():
                    raw_per[raw].append(raw_cpu_per_item(fn, args.n))
        finally:
            client.close()
            server.stop()
            echo.kill()

    med = {k: statistics.median(v) * 1e6 for k, v in per.items()}
    raw_embed, raw_faiss = (statistics.median(raw_per[k]) for k in raws)
    floor = med["echo (bare grpc.aio)"]
    print(
        f"\n{args.rounds} interleaved rounds of {args.n} requests, 1 client, medians; raw in-process CPU per item:"
    )
    print(
        f"decode + ORT for the PNG {raw_embed * 1e6:.0f} µs, FAISS Flat search of 1 query {raw_faiss * 1e6:.0f} µs\n"
    )
    print("| request | req/s | server CPU µs / request | target (floor + raw) µs | ratio |")
    print("|---|---|---|---|---|")
    targets = {
        "echo (bare grpc.aio)": floor,
        "ListModels": floor,
        "Embed, 1 tiny PNG": floor + raw_embed * 1e6,
        "Search, 1 query, k=10, 20k Flat": floor + raw_faiss * 1e6,
    }
    for name in kinds:
        print(
            f"| {name} | {statistics.median(rate[name]):,.0f} | {med[name]:,.0f} | {targets[name]:,.0f} "
            f"| {med[name] / targets[name]:.2f} |"
        )


if __name__ == "__main__":
    main()
