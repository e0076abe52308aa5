"""Server vs raw ONNX Runtime, server vs raw FAISS: measured side by side in one run.

    python bench/serve_bench.py                 # a generated 4-conv CNN bundle, 64x64 RGB
    python bench/serve_bench.py --models models/digits-simclr

Prints throughputs and the ratios server / raw. These machines are shared and
noisy: compare ratios from one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedserve.client import Client, item  # noqa: E402
from embedserve.models.bundle import load_manifest  # noqa: E402
from embedserve.models.image import ImagePreprocessor  # noqa: E402
from embedserve.store import tune_faiss  # noqa: E402


def build_cnn_bundle(root: Path, size: int = 64, dim: int = 128) -> Path:
    """A 4-conv CNN (random weights) of realistic cost: conv-relu x4 with stride 2, global pool, linear."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    chans = [3, 32, 64, 128, 128]
    nodes, inits, x = [], [], "pixels"
    for i in range(4):
        w = (rng.standard_normal((chans[i + 1], chans[i], 3, 3)) * np.sqrt(2 / (9 * chans[i]))).astype(
            np.float32
        )
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(chans[i + 1], np.float32), f"b{i}"),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                [x, f"w{i}", f"b{i}"],
                [f"c{i}"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[2, 2],
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        x = f"r{i}"
    inits.append(
        numpy_helper.from_array((rng.standard_normal((128, dim)) / np.sqrt(128)).astype(np.float32), "fc")
    )
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bench-cnn",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = root / "bench-cnn"
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out / "image.onnx")
    manifest = {
        "format_version": 1,
        "name": "bench-cnn",
        "version": "1",
        "dim": dim,
        "metric": "cosine",
        "normalize": True,
        "image": {
            "file": "image.onnx",
            "channels": 3,
            "size": [size, size],
            "resize": "shorter_side",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "interpolation": "bilinear",
        },
        "provenance": {"method": "random-weights", "note": "benchmark model only"},
    }
    (out / "embedserve.json").write_text(json.dumps(manifest, indent=2))
    return out


def start_server(models: Path, data: Path, threads: int, extra: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [
        sys.executable,
        "-m",
        "embedserve",
        "serve",
        "--port",
        "0",
        "--models",
        str(models),
        "--data",
        str(data),
        "--device",
        "cpu",
        "--log-level",
        "INFO",
    ]
    if threads:
        cmd += ["--intra-op-threads", str(threads)]
    cmd += extra
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    target = None
    for line in proc.stderr:
        if "listening on" in line:
            target = line.rsplit("listening on ", 1)[1].split()[0]
        if "ready:" in line:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    if target is None:
        raise RuntimeError("server did not start")
    return proc, target


def rate(fn, n_items: int, seconds: float) -> float:
    """Items per second of repeated fn() calls over about ``seconds`` (after one warm-up call)."""
    fn()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += n_items
    return done / (time.perf_counter() - start)


def _client_worker(args) -> tuple[int, float]:
    """One client process: repeat one call for ``seconds``; (items done, elapsed)."""
    target, kind, payload, n_items, seconds = args
    with Client(target) as c:
        if kind == "embed":
            call = lambda: c.embed(payload)  # noqa: E731
        else:
            call = lambda: c.search(kind, payload, k=10, include_metadata=False)  # noqa: E731
        call()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            call()
            done += n_items
        return done, time.perf_counter() - start


def concurrent_rate(target: str, kind: str, payload: list, clients: int, seconds: float) -> float:
    """Items/s over ``clients`` client processes (separate processes: no shared GIL on the client side)."""
    jobs = [(target, kind, payload, len(payload), seconds)] * clients
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        results = pool.map(_client_worker, jobs)
    return sum(d for d, _ in results) / max(t for _, t in results)


def png(rng, size) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def bench_embed(target: str, bundle: Path, seconds: float, threads: int) -> list[tuple[str, float]]:
    manifest = load_manifest(bundle)
    spec = manifest.image
    rng = np.random.default_rng(0)
    images = [png(rng, spec.size[0]) for _ in range(64)]
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(spec.file), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    pre = ImagePreprocessor(spec, max_image_bytes=1 << 30, max_image_pixels=1 << 30)
    pixels = np.stack([pre.preprocess(b, i) for i, b in enumerate(images)])
    raw = {}
    for bs in (1, 8, 32, 64):
        batch = pixels[:bs]
        raw[bs] = rate(lambda batch=batch: session.run(None, {name: batch}), bs, seconds)
    best_bs = max(raw, key=raw.get)
    decode = rate(lambda: [pre.preprocess(b, 0) for b in images[:32]], 32, seconds)
    rows = [(f"raw ORT batch {bs} (pre-decoded)", r) for bs, r in raw.items()]
    rows.append(("raw decode+preprocess, 1 thread", decode))
    best = raw[best_bs]
    rows.append((f"raw ORT best (batch {best_bs})", best))
    for clients, per_request in ((1, 1), (16, 1), (1, 32), (16, 32)):
        r = concurrent_rate(target, "embed", images[:per_request], clients, seconds)
        rows.append((f"gRPC Embed {clients:>2} client(s) x {per_request:>2} img/request", r, r / best))
    return rows


def bench_search(target: str, model: str, dim: int, n: int, seconds: float) -> list[tuple]:
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    base = centres[rng.integers(0, 100, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[rng.integers(0, n, 64)] + 0.01
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows = []
    with Client(target) as c:
        c.create_collection("bench-flat", model=model)
        batches = (
            [item(str(i), vector=base[i]) for i in range(j, min(j + 2000, n))] for j in range(0, n, 2000)
        )
        t0 = time.perf_counter()
        c.upsert_stream("bench-flat", batches)
        upsert_rate = n / (time.perf_counter() - t0)
    rows.append((f"gRPC UpsertStream raw vectors ({n} x {dim})", upsert_rate))
    tune_faiss(1)  # the server's settings (faiss_threads=1, BLAS from 20 queries): same FAISS both sides
    index = faiss.IndexFlatIP(dim)
    index.add(base)
    for nq in (1, 64):
        q = queries[:nq]
        raw = rate(lambda q=q: index.search(q, 10), nq, seconds)
        rows.append((f"raw FAISS Flat search, {nq} query/call", raw))
        served = concurrent_rate(target, "bench-flat", list(q), 1, seconds)
        rows.append((f"gRPC Search Flat, {nq} query/request", served, served / raw))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, help="a bundle with an image tower (default: generated CNN)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument(
        "--vectors", type=int, default=100_000, help="collection size for the search benchmark"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime intra-op threads, both sides (0 = ORT default)"
    )
    parser.add_argument("--max-delay-ms", type=float, help="server batcher delay (default: the server's)")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()
    extra = [] if args.max_delay_ms is None else ["--max-delay-ms", str(args.max_delay_ms)]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.models or build_cnn_bundle(Path(tmp) / "models")
        manifest = load_manifest(bundle)
        proc, target = start_server(bundle, Path(tmp) / "data", args.threads, extra)
        try:
            with Client(target) as c:
                c.wait_ready()
            print(
                f"bundle {manifest.name}: {manifest.image.channels}x{manifest.image.size[0]}x{manifest.image.size[1]} -> {manifest.dim}, "
                f"{os.cpu_count()} CPUs, onnxruntime {ort.__version__}, faiss {faiss.__version__}"
            )
            rows = bench_embed(target, bundle, args.seconds, args.threads)
            if not args.skip_search:
                rows += bench_search(target, manifest.name, manifest.dim, args.vectors, args.seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"\n{'measurement':<52} {'items/s':>10} {'ratio vs raw':>13}")
    for row in rows:
        ratio = f"{row[2]:>12.2f}x" if len(row) > 2 else ""
        print(f"{row[0]:<52} {row[1]:>10.0f} {ratio:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
