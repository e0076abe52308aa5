"""The server against the raw libraries and a peer, side by side in one run (interleaved rounds, medians).

    python bench/serve_bench.py                        # the bench CNN (64x64) and a ResNet-18 (224x224)
    python bench/serve_bench.py --model cnn --rounds 5 # one model
    python bench/serve_bench.py --peers                # + Milvus Lite (pymilvus) beside FAISS and the server
    python bench/serve_bench.py --server-flags "--intra-op-threads 1"   # the server with more flags

Embed, for each model (random weights: cost, not quality, is measured), against the best raw
pipeline on the same cores: decode + preprocess (embedserve's own preprocessor, on a pool of one
thread per core) overlapped with ONNX Runtime on the previous batch, at the best of batch sizes
8/32/64 (a 1-image request is set against one image at a time). The server is measured from 1 and
16 client processes sending 1 and 32 PNGs per request, on two servers in the same rounds: ONNX
Runtime's threads (the default: a batch at a time on every core), and ``--intra-op-threads 1`` (a
1-thread batch per core). The clients share these cores, so beside images/s go CPU ms per image:
the raw process's, the server process's (utime + stime) and the clients'; the CPU ratio (raw CPU
per image / server CPU per image) is the comparison the clients do not skew, and the ceiling is
what a server costing only the echo floor beyond the raw work could reach beside those clients.

Floor: a bare grpc.aio echo server (1 client, 64-byte messages): req/s and CPU per request.

Search, over N clustered 128-d vectors (default 20,000), k = 10, one client: raw FAISS (IndexFlatIP,
the faster of one OpenMP thread and one per core, its SIMD scan for one query and BLAS for 64) against Search with hits and with
``packed`` results. With ``--peers``: Milvus Lite through pymilvus in this process (its local
server; FLAT index, COSINE), for ingest rate, queries/s and recall@10 beside raw FAISS and the
server (UpsertStream into a Flat collection).

These machines are shared and noisy: read the ratios of one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from request_overhead import ECHO_SERVER  # noqa: E402
from server_process import free_port  # noqa: E402

from embedserve.client import Client, item  # noqa: E402
from embedserve.models.bundle import load_manifest  # noqa: E402
from embedserve.models.image import ImagePreprocessor  # noqa: E402

CLIENT_SHAPES = ((1, 1), (16, 1), (1, 32), (16, 32))  # (client processes, images per request)


# --------------------------------------------------------------------------- bench models
def _onnx_model(name: str, nodes, inits, size: int, dim: int):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Graph:
    """Builds conv nets node by node (random He-initialised weights, biases folded in: no BatchNorm)."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.rng = np.random.default_rng(0)
        self.n = 0

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, relu: bool = True) -> str:
        from onnx import helper, numpy_helper

        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2 / (k * k * cin))).astype(np.float32)
        wn, bn, out = self._name("w"), self._name("b"), self._name("conv")
        self.inits += [
            numpy_helper.from_array(w, wn),
            numpy_helper.from_array(np.zeros(cout, np.float32), bn),
        ]
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv", [x, wn, bn], [out], kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride]
            )
        )
        return self.relu(out) if relu else out

    def relu(self, x: str) -> str:
        from onnx import helper

        out = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [out]))
        return out

    def add(self, a: str, b: str) -> str:
        from onnx import helper

        out = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out

    def head(self, x: str, width: int, dim: int) -> None:
        from onnx import helper, numpy_helper

        fc = (self.rng.standard_normal((width, dim)) / np.sqrt(width)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(fc, "fc"))
        self.nodes += [
            helper.make_node("GlobalAveragePool", [x], ["gap"]),
            helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "fc"], ["embedding"]),
        ]


def cnn_graph(size: int, dim: int) -> tuple[_Graph, int]:
    """4 conv-relu layers with stride 2, global pool, linear: the bench CNN (< 1 ms per image)."""
    g, x, chans = _Graph(), "pixels", [3, 32, 64, 128, 128]
    for i in range(4):
        x = g.conv(x, chans[i], chans[i + 1], 3, 2)
    g.head(x, 128, dim)
    return g, size


def resnet18_graph(size: int, dim: int) -> tuple[_Graph, int]:
    """ResNet-18's layers (11.7M weights, ~1.8 GFLOPs at 224x224): conv7x7/2, max pool, 4 stages of
    two basic blocks (64, 128, 256, 512 channels), global pool, linear to ``dim``."""
    from onnx import helper

    g = _Graph()
    x = g.conv("pixels", 3, 64, 7, 2)
    g.nodes.append(
        helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2])
    )
    x, cin = "pool", 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = g.conv(x, cin, cout, 3, stride)
            y = g.conv(y, cout, cout, 3, 1, relu=False)
            shortcut = g.conv(x, cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else x
            x, cin = g.relu(g.add(y, shortcut)), cout
    g.head(x, 512, dim)
    return g, size


MODELS: dict[str, tuple[Callable[[int, int], tuple[_Graph, int]], int]] = {
    "cnn": (cnn_graph, 64),
    "resnet18": (resnet18_graph, 224),
}


def build_bundle(root: Path, kind: str, dim: int = 128) -> Path:
    import onnx

    make, size = MODELS[kind]
    g, size = make(size, dim)
    name = f"bench-{kind}"
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(_onnx_model(name, g.nodes, g.inits, size, dim), out / "image.onnx")
    manifest = {
        "format_version": 1,
        "name": name,
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


# --------------------------------------------------------------------------- processes
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(models: list[Path], data: Path, extra: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """``embedserve serve`` on ``models`` (CPU, an ephemeral port) with ``extra`` flags; (process, target)."""
    cmd = [sys.executable, "-m", "embedserve", "serve", "--port", "0", "--data", str(data), "--device", "cpu"]
    for m in models:
        cmd += ["--models", str(m)]
    cmd += list(extra)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stderr is not None
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


def _client_job(args) -> tuple[int, float, int, float]:
    """One client process: repeat one call for ``seconds``; (items done in that time, elapsed, items
    sent in all: the warm-up call and the one in flight at the end included, this process's CPU
    seconds over all of them)."""
    target, kind, payload, seconds = args
    cpu = time.process_time()
    with Client(target) as c:
        if kind == "embed":
            call = lambda: c.embed(payload[0], model=payload[1])  # noqa: E731
        elif kind == "texts":  # payload[0]: requests of texts, sent in turn from a per-process start
            turn = itertools.cycle(
                payload[0][os.getpid() % len(payload[0]) :] + payload[0][: os.getpid() % len(payload[0])]
            )
            call = lambda: c.embed(next(turn), model=payload[1])  # noqa: E731
        elif kind == "packed":
            call = lambda: c.search_packed(payload[0], payload[1], k=10)  # noqa: E731
        else:
            call = lambda: c.search(payload[0], payload[1], k=10, include_metadata=False)  # noqa: E731
        n = {"embed": len(payload[0]), "texts": len(payload[0][0])}.get(kind, len(payload[1]))
        call()
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            call()
            done += n
        return done, time.perf_counter() - start, done + n, time.process_time() - cpu


def _ready(_: int) -> None:
    time.sleep(0.5)


class Clients:
    """A pool of client processes kept for the whole run (spawned once: no start-up in any figure)."""

    def __init__(self, n: int) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(n)
        # every worker up and its imports done, before any timing
        self.pool.map(_ready, range(n), chunksize=1)

    def rate(
        self,
        server_pid: int | Sequence[int],
        target: str | Sequence[str],
        kind: str,
        payload,
        clients: int,
        seconds: float,
    ):
        """(items/s over ``clients`` processes, server CPU seconds per item: its CPU over the whole
        measurement, warm-up calls included, over every item it was sent; the clients' CPU seconds
        per item, counted the same way). Several servers (pids and targets): client i calls
        target i mod their number, and their CPU is summed."""
        pids = [server_pid] if isinstance(server_pid, int) else list(server_pid)
        targets = [target] if isinstance(target, str) else list(target)
        before = sum(cpu_seconds(pid) for pid in pids)
        jobs = [(targets[i % len(targets)], kind, payload, seconds) for i in range(clients)]
        results = self.pool.map(_client_job, jobs, chunksize=1)
        done, sent = sum(r[0] for r in results), sum(r[2] for r in results)
        return (
            done / max(r[1] for r in results),
            (sum(cpu_seconds(pid) for pid in pids) - before) / sent,
            sum(r[3] for r in results) / sent,
        )

    def close(self) -> None:
        self.pool.terminate()


def timed(fn: Callable[[], object], n_items: int, seconds: float) -> float:
    """Items per second of repeated fn() over about ``seconds``, after one warm-up call."""
    fn()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += n_items
    return done / (time.perf_counter() - start)


# --------------------------------------------------------------------------- embed
def png(rng, size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class RawPipeline:
    """The best raw "decode + ORT" on these cores: embedserve's preprocessor on a pool of one thread
    per core, decoding batch i+1 while ONNX Runtime (its default threads) runs batch i."""

    def __init__(self, bundle: Path, images: list[bytes]) -> None:
        spec = load_manifest(bundle).image
        assert spec is not None
        self.pre = ImagePreprocessor(spec, max_image_bytes=1 << 30, max_image_pixels=1 << 30)
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(spec.file), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.images = images
        self.pool = ThreadPoolExecutor(os.cpu_count() or 2)

    def _decode(self, batch: list[bytes]):
        chunk = max(1, len(batch) // (os.cpu_count() or 2))
        parts = [batch[i : i + chunk] for i in range(0, len(batch), chunk)]
        return self.pool.submit(
            lambda: np.stack([a for part in self.pool.map(self._decode_part, parts) for a in part])
        )

    def _decode_part(self, part: list[bytes]) -> list[np.ndarray]:
        return [self.pre.preprocess(b, i) for i, b in enumerate(part)]

    def run(self, batch_size: int, seconds: float) -> tuple[float, float]:
        """(images/s, CPU seconds per image), decode of the next batch overlapping inference of this one."""
        batches = [self.images[i : i + batch_size] for i in range(0, len(self.images), batch_size)]
        pending = self._decode(batches[0])
        done, start, cpu, i = 0, time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - start < seconds:
            pixels = pending.result()
            i = (i + 1) % len(batches)
            pending = self._decode(batches[i])
            self.session.run(None, {self.input: pixels})
            done += len(pixels)
        pending.result()
        return done / (time.perf_counter() - start), (time.process_time() - cpu) / done

    def single(self, seconds: float) -> tuple[float, float]:
        """(images/s, CPU seconds per image) one at a time, decode then ORT (what a 1-image request
        asks of any server)."""
        image = self.images[0]
        cpu = time.process_time()
        n = [0]

        def one() -> None:
            self.session.run(None, {self.input: self.pre.preprocess(image, 0)[None]})
            n[0] += 1

        rate = timed(one, 1, seconds)
        return rate, (time.process_time() - cpu) / n[0]


def bench_embed(
    models,
    clients: Clients,
    servers: dict[str, tuple[subprocess.Popen, str]],
    rounds: int,
    seconds: float,
    floor: float,
) -> list[str]:
    """Embed rows against the raw pipeline. ``floor``: the echo server's CPU seconds per request,
    for the ceiling column: the images/s ratio that a server costing the echo floor plus the raw
    pipeline's CPU per image could reach with the clients' measured CPU on the same cores
    (cores / (clients' CPU + floor / images per request + raw CPU), over the raw rate). A target
    above it cannot be met with the clients on the server's cores. ``servers``: by the label their
    rows carry, each measured in every round."""
    cores = os.cpu_count() or 1
    lines = []
    for bundle in models.values():
        spec = load_manifest(bundle).image
        rng = np.random.default_rng(0)
        images = [png(rng, spec.size[0]) for _ in range(64)]
        raw = RawPipeline(bundle, images)
        name = load_manifest(bundle).name
        shapes = {
            f"{c} x {n} images/request{mode}": (c, n, server)
            for mode, server in servers.items()
            for c, n in CLIENT_SHAPES
        }
        raw_batch: dict[int, list[tuple[float, float]]] = {bs: [] for bs in (8, 32, 64)}
        raw_single: list[tuple[float, float]] = []
        served: dict[str, list[tuple[float, float, float]]] = {s: [] for s in shapes}
        for r in range(rounds):
            for bs in raw_batch:
                raw_batch[bs].append(raw.run(bs, seconds))
            raw_single.append(raw.single(seconds))
            for label in shapes if r % 2 == 0 else reversed(list(shapes)):
                c, n, (proc, target) = shapes[label]
                served[label].append(clients.rate(proc.pid, target, "embed", (images[:n], name), c, seconds))

        def med(results):
            return tuple(statistics.median(column) for column in zip(*results, strict=True))

        best_bs = max(raw_batch, key=lambda bs: med(raw_batch[bs])[0])
        best = med(raw_batch[best_bs])[0]
        # the CPU baseline is the least CPU an image any batch size took, not the fastest one's
        best_cpu = min(med(runs)[1] for runs in raw_batch.values())
        single, single_cpu = med(raw_single)
        lines += [
            f"\n{name}: 3x{spec.size[0]}x{spec.size[1]} -> {load_manifest(bundle).dim}",
            "| measurement | images/s | CPU ms / image (server's, for gRPC) | clients' CPU ms / image "
            "| images/s ratio | CPU ratio | ceiling on shared cores |",
            "|---|---|---|---|---|---|---|",
            f"| raw decode + ORT, 1 image at a time | {single:,.1f} | {single_cpu * 1e3:.2f} | | | | |",
            f"| raw decode + ORT pipeline, batch {best_bs} (best of 8/32/64; CPU: the least of them) "
            f"| {best:,.1f} | {best_cpu * 1e3:.2f} "
            "| | 1.00 | 1.00 | |",
        ]
        for label, results in served.items():
            rate, cpu, client_cpu = med(results)
            alone = shapes[label][:2] == (1, 1)
            base, base_cpu = (single, single_cpu) if alone else (best, best_cpu)
            ceiling = cores / (client_cpu + floor / shapes[label][1] + base_cpu) / base
            lines.append(
                f"| gRPC Embed, {label} | {rate:,.1f} | {cpu * 1e3:.2f} | {client_cpu * 1e3:.2f} "
                f"| {rate / base:.2f} | {base_cpu / cpu:.2f}{' (vs 1 at a time)' if alone else ''} | {ceiling:.2f} |"
            )
        raw.pool.shutdown()
    return lines


# --------------------------------------------------------------------------- floor
def bench_floor(rounds: int, seconds: float) -> tuple[list[str], float]:
    """The echo floor's report line, and its server CPU seconds per request."""
    import grpc

    port = free_port()
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    call = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/bench.Echo/Echo")
    rates, cpus = [], []
    try:
        for _ in range(rounds):
            before = cpu_seconds(echo.pid)
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                call(b"x" * 64)
                calls += 1
            rates.append(calls / (time.perf_counter() - start))
            cpus.append((cpu_seconds(echo.pid) - before) / calls)
    finally:
        echo.kill()
    return [
        f"\nfloor: bare grpc.aio echo server, 1 client: {statistics.median(rates):,.0f} req/s, "
        f"{statistics.median(cpus) * 1e6:,.0f} µs of server CPU per request"
    ], statistics.median(cpus)


# --------------------------------------------------------------------------- search and peers
def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 400), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recall(found: list[list[str]], truth: np.ndarray) -> float:
    hits = sum(len(set(f) & {f"v{i}" for i in t}) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


class MilvusPeer:
    """Milvus Lite through pymilvus, in this process: FLAT index, COSINE (the peer's own best exact setup)."""

    def __init__(self, path: Path, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        self.client = MilvusClient(str(path))
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="COSINE")
        self.client.create_collection("peer", schema=schema, index_params=index)

    def ingest(self, ids: list[str], base: np.ndarray) -> float:
        start = time.perf_counter()
        for j in range(0, len(ids), 1000):
            rows = [{"id": ids[i], "vector": base[i].tolist()} for i in range(j, min(j + 1000, len(ids)))]
            self.client.insert("peer", rows)
        self.client.flush("peer")
        self.client.load_collection("peer")
        return len(ids) / (time.perf_counter() - start)

    def search(self, q: np.ndarray) -> list[list[str]]:
        found = self.client.search("peer", q.tolist(), limit=10, consistency_level="Strong")
        return [[hit["id"] for hit in row] for row in found]


def bench_search(
    clients: Clients,
    server,
    model: str,
    n: int,
    dim: int,
    rounds: int,
    seconds: float,
    peers: bool,
    tmp: Path,
) -> list[str]:
    proc, target = server
    base, queries = clustered(n, dim, 0), clustered(256, dim, 1)
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    ids = [f"v{i}" for i in range(n)]
    index = faiss.IndexFlatIP(dim)
    start = time.perf_counter()
    index.add(base)
    ingest = {"raw FAISS (IndexFlatIP.add, in memory)": n / (time.perf_counter() - start)}
    with Client(target) as c:
        c.create_collection("bench-flat", model=model, metric="ip")
        start = time.perf_counter()
        c.upsert_stream(
            "bench-flat",
            ([item(ids[i], vector=base[i]) for i in range(j, min(j + 2000, n))] for j in range(0, n, 2000)),
        )
        ingest["embedserve UpsertStream (durable)"] = n / (time.perf_counter() - start)
        found = {
            "embedserve": [ids_ for ids_, _ in c.search_packed("bench-flat", list(queries), k=10)],
        }
    peer = MilvusPeer(tmp / "peer.db", dim) if peers else None
    if peer is not None:
        ingest["Milvus Lite (pymilvus insert + flush + load)"] = peer.ingest(ids, base)
        found["Milvus Lite"] = peer.search(queries)

    def raw_best(nq: int) -> float:
        """FAISS at its best for this batch: the faster of one OpenMP thread and one per core."""
        rates = []
        for threads in sorted({1, os.cpu_count() or 1}):
            faiss.omp_set_num_threads(threads)
            rates.append(timed(raw_search(nq), nq, seconds / 2))
        faiss.omp_set_num_threads(1)
        return max(rates)

    def raw_search(nq: int):
        threshold = 1 << 30 if nq == 1 else 6  # FAISS's best: its SIMD scan for one query, BLAS for a batch

        def go(offset=[0]):  # noqa: B006 (a cycling offset, so that no query is answered twice in a row)
            faiss.cvar.distance_compute_blas_threshold = threshold
            q = queries[offset[0] % (256 - nq + 1) :][:nq]
            offset[0] += nq
            index.search(q, 10)

        return go

    kinds: dict[str, Callable[[], float]] = {}
    for nq in (1, 64):
        kinds[f"raw FAISS Flat, {nq} query/call"] = lambda nq=nq: raw_best(nq)
        for form in ("hits", "packed"):
            # one query as a Query message; a batch as one [nq, dim] tensor (SearchRequest.vectors)
            payload = ("bench-flat", list(queries[:1]) if nq == 1 else queries[:nq])
            kinds[f"embedserve Search, {nq} query/request, {form}"] = (
                lambda nq=nq, form=form, payload=payload: clients.rate(
                    proc.pid, target, "search" if form == "hits" else form, payload, 1, seconds
                )[0]
            )
        if peer is not None:
            kinds[f"Milvus Lite search, {nq} query/call"] = lambda nq=nq: timed(
                lambda: peer.search(queries[:nq]), nq, seconds
            )
    results: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for name in kinds if r % 2 == 0 else reversed(list(kinds)):
            results[name].append(kinds[name]())
    lines = [
        f"\nsearch: {n:,} x {dim} clustered, k = 10, 1 client; recall@10 vs exact: "
        + ", ".join(f"{k} {recall(v, truth):.3f}" for k, v in found.items()),
        "| measurement | queries/s | ratio vs raw FAISS |",
        "|---|---|---|",
    ]
    for nq in (1, 64):
        raw = statistics.median(results[f"raw FAISS Flat, {nq} query/call"])
        for name, values in results.items():
            if f", {nq} query" in name:
                lines.append(
                    f"| {name} | {statistics.median(values):,.0f} | {statistics.median(values) / raw:.2f} |"
                )
    lines += ["\ningest, items/s (one run)"] + [f"| {k} | {v:,.0f} |" for k, v in ingest.items()]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["cnn", "resnet18", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument(
        "--vectors", type=int, default=20_000, help="collection size for the search benchmark"
    )
    parser.add_argument("--peers", action="store_true", help="also Milvus Lite (pymilvus + milvus-lite)")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument(
        "--server-flags", default="", help="more `embedserve serve` flags, e.g. '--intra-op-threads 1'"
    )
    args = parser.parse_args()
    kinds = ["cnn", "resnet18"] if args.model == "both" else [args.model]
    print(
        f"{os.cpu_count()} CPUs, onnxruntime {ort.__version__}, faiss {faiss.__version__}, "
        f"{args.rounds} interleaved rounds of {args.seconds:g} s, medians"
    )
    with tempfile.TemporaryDirectory() as tmp:
        models = {kind: build_bundle(Path(tmp) / "models", kind) for kind in kinds}
        flags = args.server_flags.split()
        server = start_server(list(models.values()), Path(tmp) / "data", flags)
        # the same server running a 1-thread batch per core (concurrent_batches): more throughput
        # under concurrent load, a lone request on one core
        per_core = start_server(
            list(models.values()), Path(tmp) / "data-per-core", [*flags, "--intra-op-threads", "1"]
        )
        clients = Clients(16)
        try:
            with Client(server[1]) as c:
                c.wait_ready()
            lines, floor = bench_floor(args.rounds, args.seconds)
            servers = {"": server, ", --intra-op-threads 1": per_core}
            lines += bench_embed(models, clients, servers, args.rounds, args.seconds, floor)
            if not args.skip_search:
                model = load_manifest(models[kinds[0]]).name
                lines += bench_search(
                    clients,
                    server,
                    model,
                    args.vectors,
                    128,
                    args.rounds,
                    args.seconds,
                    args.peers,
                    Path(tmp),
                )
        finally:
            clients.close()
            for proc, _ in (server, per_core):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    print(textwrap.dedent("\n".join(lines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
