"""Replay a load pattern against the server's batcher: batch sizes, queue delay, utilisation.

    python bench/batching.py                                   # 20 s of Poisson arrivals, 100 req/s
    python bench/batching.py --rate 300 --sizes 1,1,1,4,32 --record load.jsonl
    python bench/batching.py --pattern load.jsonl --max-delay-ms 2 --models path/to/bundle

A pattern is JSONL, one request per line: ``{"t": seconds from the start, "n": images}``. Without
``--pattern`` one is generated (Poisson arrivals at ``--rate``, sizes drawn from ``--sizes``) and
can be saved with ``--record``, so that the same load can be replayed against other settings or
devices. A real ``embedserve serve`` (``--device``, ``--max-delay-ms`` passed through, metrics
on) gets each request at its time from one asyncio client (requests in flight together, as from
many callers). Reported, from the server's own metrics over the replay: the batch-size
histogram, the tower's utilisation (seconds its model ran / wall seconds: what keeps an
accelerator busy), the mean queue delay (arrival to first batch), and the client's latency
percentiles. Run it on the device you tune for: ``max_delay_ms`` trades queue delay for larger
batches, which pays where a batch costs little more than one input (GPUs), not on a CPU that a
single input already keeps busy.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from server_process import ServerProcess, free_port  # noqa: E402

from embedserve.client import AsyncClient  # noqa: E402


def generate(rate: float, seconds: float, sizes: list[int], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    t, out = 0.0, []
    while True:
        t += rng.exponential(1 / rate)
        if t >= seconds:
            return out
        out.append({"t": round(t, 6), "n": int(rng.choice(sizes))})


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("embedserve_batch") and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def tower_series(values: dict[str, float], metric: str) -> dict[str, float]:
    """{tower labels: value} of one metric (first tower with activity is the one replayed)."""
    out = {}
    for name, value in values.items():
        if name.startswith(metric + "{"):
            out[name[len(metric) :]] = value
    return out


async def replay(target: str, pattern: list[dict], images: list[bytes], model: str) -> list[float]:
    latencies: list[float] = []
    async with AsyncClient(target) as client:
        await client.embed(images[:1], model=model)  # connected and warm before the clock starts
        start = time.perf_counter()

        async def one(request: dict) -> None:
            await asyncio.sleep(max(0.0, start + request["t"] - time.perf_counter()))
            sent = time.perf_counter()
            await client.embed(images[: request["n"]], model=model)
            latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one(r) for r in pattern))
    return latencies


def png(size: int, channels: int, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if channels == 3 else (size, size)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pattern", type=Path, help="JSONL of {t, n} to replay (default: generate one)")
    p.add_argument("--record", type=Path, help="write the generated pattern here")
    p.add_argument("--rate", type=float, default=100.0, help="requests/s of a generated pattern")
    p.add_argument("--seconds", type=float, default=20.0, help="length of a generated pattern")
    p.add_argument("--sizes", default="1,1,1,2,4,8", help="images per request, drawn uniformly")
    p.add_argument("--models", type=Path, help="a bundle with an image tower (default: the bundled model)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-delay-ms", type=float)
    args = p.parse_args()

    if args.pattern:
        pattern = [json.loads(line) for line in args.pattern.read_text().splitlines() if line.strip()]
    else:
        pattern = generate(args.rate, args.seconds, [int(s) for s in args.sizes.split(",")])
        if args.record:
            args.record.write_text("".join(json.dumps(r) + "\n" for r in pattern))
    metrics_port = free_port()
    extra = ["--device", args.device, "--metrics-port", str(metrics_port)]
    if args.models:
        extra += ["--models", str(args.models)]
    if args.max_delay_ms is not None:
        extra += ["--max-delay-ms", str(args.max_delay_ms)]
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", *extra)
        server.start()
        try:
            from embedserve.client import Client

            with Client(server.target) as c:
                info = next(m for m in c.list_models().models if any(t.modality == "image" for t in m.towers))
            tower = next(t for t in info.towers if t.modality == "image")
            images = [png(tower.size[0], tower.channels, i) for i in range(max(r["n"] for r in pattern))]
            before = scrape(metrics_port)
            wall = time.perf_counter()
            latencies = asyncio.run(replay(server.target, pattern, images, info.name))
            wall = time.perf_counter() - wall
            after = scrape(metrics_port)
        finally:
            server.stop()

    key = f'{{model="{info.name}",tower="image"}}'

    def delta(metric: str) -> float:
        return after.get(metric + key, 0.0) - before.get(metric + key, 0.0)

    n_images = sum(r["n"] for r in pattern)
    print(
        f"{len(pattern)} requests, {n_images} images over {wall:.1f} s ({len(pattern) / wall:.0f} req/s, "
        f"{n_images / wall:.0f} images/s); model {info.name} on {tower.execution_provider}, "
        f"max_delay_ms {args.max_delay_ms if args.max_delay_ms is not None else 'default'}"
    )
    runs, requests = delta("embedserve_batcher_runs_total"), delta("embedserve_batcher_requests_total")
    print(
        f"model runs {runs:.0f} ({delta('embedserve_batcher_items_total') / max(runs, 1):.1f} images per run), "
        f"utilisation {delta('embedserve_batcher_busy_seconds_total') / wall:.0%}, mean queue delay "
        f"{1000 * delta('embedserve_batcher_wait_seconds_total') / max(requests, 1):.2f} ms"
    )
    ms = sorted(1000 * x for x in latencies)
    print(
        f"client latency ms: p50 {statistics.median(ms):.1f}, p95 {ms[int(0.95 * (len(ms) - 1))]:.1f}, "
        f"p99 {ms[int(0.99 * (len(ms) - 1))]:.1f}, max {ms[-1]:.1f}"
    )
    print("batch sizes (batches of at most n images; lone runs count as batches of their request):")
    edges = sorted(
        {
            m.group(1)
            for name in after
            if (m := re.search(r'le="([^"]+)"', name)) and "batch_size_bucket" in name
        },
        key=lambda e: float("inf") if e == "+Inf" else float(e),
    )
    previous = 0.0
    for edge in edges:
        label = f'{{le="{edge}",model="{info.name}",tower="image"}}'
        metric = "embedserve_batch_size_bucket" + label
        count = after.get(metric, 0.0) - before.get(metric, 0.0)
        if count - previous:
            print(f"  <= {edge:>4}: {count - previous:.0f}")
        previous = count


if __name__ == "__main__":
    main()
