"""Soak: mixed traffic at saturation for a long time, with a kill -9 every few minutes.

    python bench/soak.py                         # 30 minutes, a kill every 3 minutes
    python bench/soak.py --minutes 5 --kill-every 60 --plot /tmp/soak.png

A real `embedserve serve` process (default models, its own data directory) takes,
from client threads running flat out: Embed (PNG digits), Upsert of images and of
raw vectors, Delete, Search by vector and by id, Classify against the collection
and with a support set, CreateCollection / DeleteCollection cycles, and a share
of malformed requests (bad images, bad k, unknown collections). A ledger
collection records every acknowledged upsert (with a version in its metadata)
and delete; after each kill -9 and restart every acknowledged write is checked.

Reported: requests and errors by RPC and status code (UNAVAILABLE while the
server restarts is expected and counted apart), the server's RSS over time
(PNG plot) and its growth after warm-up within each server lifetime (the item
count is held steady, so growth means a leak), restart times, and lost writes.
"""

from __future__ import annotations

import argparse
import collections
import io
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_process import ServerProcess as Server  # noqa: E402
from embedserve.client import ById, Client, item  # noqa: E402

LEDGER_IDS = 4000  # the ledger's id space: writes replace and delete within it, so the size stays steady
POOL_IDS = 6000  # the image/vector collection's id space
RECONNECT_S = 3.0  # UNAVAILABLE up to this long after a restart counts as part of the restart


def digits_pngs() -> tuple[list[bytes], list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for img in d.images:
        buf = io.BytesIO()
        Image.fromarray((img * 255 / 16).astype(np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out, [str(t) for t in d.target]


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_code: collections.Counter = collections.Counter()
        self.restarting = threading.Event()

    def add(self, rpc: str, code: str) -> None:
        if code == "UNAVAILABLE" and self.restarting.is_set():
            code = "UNAVAILABLE (restart)"
        with self.lock:
            self.by_code[(rpc, code)] += 1


class Ledger:
    """Acknowledged state of the ledger collection: id -> version (None = deleted).

    ``uncertain``: ids of writes that failed without an answer (the kill came mid-call): they may
    or may not have been applied, until a later acknowledged write settles them. ``paused``:
    the writer waits while a check reads the collection.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.state: dict[str, int | None] = {}
        self.uncertain: set[str] = set()
        self.version = 0
        self.running = threading.Event()
        self.running.set()


def traffic(name: str, target: str, counts: Counts, stop: threading.Event, body) -> None:
    rng = random.Random(hash(name) & 0xFFFF)
    while not stop.is_set():
        try:
            with Client(target, timeout=30) as c:
                while not stop.is_set():
                    rpc = body(c, rng)
                    if rpc is not None:
                        counts.add(rpc, "OK")
        except grpc.RpcError as err:
            rpc = getattr(err, "rpc_name", name)
            counts.add(rpc, err.code().name)
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                time.sleep(0.05)
        except Exception as err:  # a bug in the bench itself must not stop the soak silently
            counts.add(name, f"client error {type(err).__name__}")
            time.sleep(0.05)


def tagged(rpc: str, fn):
    try:
        return fn()
    except grpc.RpcError as err:
        err.rpc_name = rpc  # type: ignore[attr-defined]
        raise


def make_bodies(pngs: list[bytes], labels: list[str], ledger: Ledger, counts: Counts):
    dim = 128
    vec_rng = np.random.default_rng(0)

    def embed(c, rng):
        n = rng.choice([1, 4, 16, 32])
        tagged("Embed", lambda: c.embed([rng.choice(pngs) for _ in range(n)]))
        return "Embed"

    def upsert_images(c, rng):
        idx = [rng.randrange(len(pngs)) for _ in range(rng.choice([8, 32]))]
        # ids from a bounded space: items are replaced, the collection's size levels off
        items = [item(f"img-{rng.randrange(POOL_IDS)}", image=pngs[j], label=labels[j]) for j in idx]
        items = list({i.id: i for i in items}.values())
        tagged("Upsert", lambda: c.upsert("soak-images", items))
        return "Upsert"

    def search(c, rng):
        kind = rng.random()
        if kind < 0.4:
            q = [rng.choice(pngs) for _ in range(rng.choice([1, 8]))]
        elif kind < 0.7:
            q = list(vec_rng.standard_normal((rng.choice([1, 16, 64]), dim)).astype(np.float32))
        else:
            q = [ById(f"v-{rng.randrange(POOL_IDS)}")]
        coll = "soak-images" if kind < 0.4 else "soak-vectors"
        try:
            tagged("Search", lambda: c.search(coll, q, k=rng.choice([1, 10, 50])))
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:  # a by-id query for a deleted item is fine
                raise
            counts.add("Search", "NOT_FOUND (by id)")
        return "Search"

    def classify(c, rng):
        q = [rng.choice(pngs) for _ in range(rng.choice([1, 8]))]
        if rng.random() < 0.5:
            tagged("Classify", lambda: c.classify(q, collection="soak-images"))
        else:
            support = [(pngs[j], labels[j]) for j in rng.sample(range(len(pngs)), 30)]
            tagged("Classify", lambda: c.classify(q, support=support, k=5))
        return "Classify"

    def vectors(c, rng):
        if rng.random() < 0.3:
            ids = [f"v-{rng.randrange(POOL_IDS)}" for _ in range(100)]
            tagged("Delete", lambda: c.delete("soak-vectors", ids, allow_missing=True))
            return "Delete"
        ids = list(dict.fromkeys(f"v-{rng.randrange(POOL_IDS)}" for _ in range(500)))
        x = vec_rng.standard_normal((len(ids), dim)).astype(np.float32)
        tagged("Upsert", lambda: c.upsert("soak-vectors", [item(i, vector=v) for i, v in zip(ids, x)]))
        return "Upsert"

    def ledger_writes(c, rng):
        ledger.running.wait()
        ids = list(dict.fromkeys(f"l-{rng.randrange(LEDGER_IDS)}" for _ in range(50)))
        with ledger.lock:
            ledger.uncertain |= set(ids)  # until acknowledged
        if rng.random() < 0.25:
            tagged("Delete", lambda: c.delete("soak-ledger", ids, allow_missing=True))
            with ledger.lock:
                ledger.state.update(dict.fromkeys(ids))
                ledger.uncertain -= set(ids)
            return "Delete"
        with ledger.lock:
            ledger.version += 1
            version = ledger.version
        x = vec_rng.standard_normal((len(ids), dim)).astype(np.float32)
        meta = {"version": str(version)}
        tagged(
            "Upsert",
            lambda: c.upsert("soak-ledger", [item(i, vector=v, metadata=meta) for i, v in zip(ids, x)]),
        )
        with ledger.lock:
            ledger.state.update(dict.fromkeys(ids, version))
            ledger.uncertain -= set(ids)
        return "Upsert"

    def collections_cycle(c, rng):
        name = f"soak-tmp-{rng.randrange(1000)}"
        try:
            tagged(
                "CreateCollection",
                lambda: c.create_collection(name, index_spec=rng.choice(["Flat", "HNSW16"])),
            )
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:  # left over by a kill: reuse it
                raise
        else:
            counts.add("CreateCollection", "OK")
        x = vec_rng.standard_normal((200, dim)).astype(np.float32)
        tagged("Upsert", lambda: c.upsert(name, [item(f"t{j}", vector=v) for j, v in enumerate(x)]))
        counts.add("Upsert", "OK")
        tagged("Search", lambda: c.search(name, list(x[:4]), k=5))
        counts.add("Search", "OK")
        tagged("DeleteCollection", lambda: c.delete_collection(name))
        return "DeleteCollection"

    def malformed(c, rng):
        kind = rng.randrange(4)
        calls = [
            ("Embed", lambda: c.embed([b"GIF89a not an image"])),
            ("Search", lambda: c.search("soak-vectors", [np.ones(7, np.float32)], k=5)),
            ("Search", lambda: c.search("soak-missing", [np.ones(dim, np.float32)], k=5)),
            ("Search", lambda: c.search("soak-vectors", [np.ones(dim, np.float32)] * 2000, k=1)),
        ]
        rpc, fn = calls[kind]
        try:
            fn()
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                err.rpc_name = rpc  # type: ignore[attr-defined]
                raise
            counts.add(rpc, f"{err.code().name} (malformed, expected)")
            return None
        raise RuntimeError("a malformed request was accepted")

    return {
        "embed": embed,
        "upsert-images": upsert_images,
        "search": search,
        "search-2": search,
        "classify": classify,
        "vectors": vectors,
        "ledger": ledger_writes,
        "collections": collections_cycle,
        "malformed": malformed,
    }


def check_ledger(target: str, ledger: Ledger) -> int:
    """Acknowledged ledger writes that did not survive (missing, stale or resurrected); the ledger
    writer is paused meanwhile, so the collection holds still."""
    ledger.running.clear()
    time.sleep(0.5)  # let a write in progress finish
    try:
        with ledger.lock:
            state = {i: v for i, v in ledger.state.items() if i not in ledger.uncertain}
        lost = 0
        with Client(target, timeout=60) as c:
            present = {i: v for i, v in state.items() if v is not None}
            found = {}
            ids = sorted(present)
            for start in range(0, len(ids), 2000):
                chunk = ids[start : start + 2000]
                try:
                    found.update({s.id: int(s.metadata["version"]) for s in c.get("soak-ledger", chunk)})
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    for i in chunk:  # which ones are missing
                        try:
                            found[i] = int(c.get("soak-ledger", [i])[0].metadata["version"])
                        except grpc.RpcError:
                            pass
            lost += sum(1 for i, v in present.items() if found.get(i, -1) < v)  # missing or older
            for i in [i for i, v in state.items() if v is None][:500]:
                try:
                    c.get("soak-ledger", [i])
                    lost += 1  # a deleted item came back
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.NOT_FOUND:
                        raise
        return lost
    finally:
        ledger.running.set()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--kill-every", type=float, default=180.0, help="seconds between kill -9s")
    p.add_argument(
        "--warmup", type=float, default=60.0, help="seconds of each server lifetime not judged for RSS"
    )
    p.add_argument("--plot", type=Path, default=ROOT / "bench" / "soak_rss.png")
    args = p.parse_args()

    pngs, labels = digits_pngs()
    server = Server(Path(tempfile.mkdtemp(prefix="soak-")))
    restarts = [server.start()]
    with Client(server.target) as c:
        c.create_collection("soak-images")
        c.create_collection("soak-vectors", index_spec="HNSW32")
        c.create_collection("soak-ledger")
        for start in range(0, len(pngs), 200):  # labelled base so Classify has votes
            c.upsert(
                "soak-images",
                [
                    item(f"base-{j}", image=pngs[j], label=labels[j])
                    for j in range(start, min(start + 200, len(pngs)))
                ],
            )

    counts, ledger, stop = Counts(), Ledger(), threading.Event()
    bodies = make_bodies(pngs, labels, ledger, counts)
    threads = [
        threading.Thread(target=traffic, args=(name, server.target, counts, stop, body), daemon=True)
        for name, body in bodies.items()
    ]
    for t in threads:
        t.start()

    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_kill = t0 + args.kill_every
    rss: list[tuple[float, float, int]] = []  # (seconds, MB, lifetime)
    lifetime, lifetime_start, lost, growth = 0, t0, 0, []
    while time.monotonic() < end:
        time.sleep(1.0)
        mb = server.rss_mb()
        if mb is not None:
            rss.append((time.monotonic() - t0, mb, lifetime))
        if time.monotonic() >= next_kill and time.monotonic() + 30 < end:
            growth.append(_growth(rss, lifetime, lifetime_start - t0 + args.warmup))
            counts.restarting.set()
            server.kill()
            restarts.append(server.start())
            time.sleep(RECONNECT_S)  # clients' channels reconnect (gRPC backoff) a moment after SERVING
            counts.restarting.clear()
            lost_now = check_ledger(server.target, ledger)
            lost += lost_now
            lifetime += 1
            lifetime_start = time.monotonic()
            next_kill = lifetime_start + args.kill_every
            print(f"{time.monotonic() - t0:7.0f} s: kill -9, SERVING again in {restarts[-1]:.2f} s, "
                  f"{lost_now} acknowledged writes lost, RSS before kill {rss[-1][1]:.0f} MB", flush=True)  # fmt: skip
    stop.set()
    growth.append(_growth(rss, lifetime, lifetime_start - t0 + args.warmup))
    lost += check_ledger(server.target, ledger)
    server.kill()
    for t in threads:
        t.join(timeout=10)
    report(counts, rss, growth, restarts, lost, args)


def _growth(rss, lifetime: int, judged_from: float) -> float | None:
    """RSS growth within one server lifetime, from the end of warm-up to its end (fraction)."""
    points = [(t, mb) for t, mb, life in rss if life == lifetime and t >= judged_from]
    if len(points) < 20:
        return None
    first = float(np.median([mb for _, mb in points[:10]]))
    last = float(np.median([mb for _, mb in points[-10:]]))
    return last / first - 1


def report(counts: Counts, rss, growth, restarts, lost: int, args) -> None:
    total = sum(counts.by_code.values())
    print(f"\n{args.minutes:.0f} minutes, {len(restarts) - 1} kill -9 restarts, {total} requests "
          f"({total / (args.minutes * 60):.0f}/s)")  # fmt: skip
    print(f"{'rpc':<18} {'code':<40} {'count':>9}")
    for (rpc, code), n in sorted(counts.by_code.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        print(f"{rpc:<18} {code:<40} {n:>9}")
    bad = sum(n for (_, code), n in counts.by_code.items() if code.split()[0] in ("INTERNAL", "UNKNOWN"))
    judged = [g for g in growth if g is not None]
    print(f"\nINTERNAL/UNKNOWN: {bad}   acknowledged writes lost: {lost}")
    print(
        f"restart to SERVING: median {np.median(restarts[1:] or [0]):.2f} s, max {max(restarts[1:] or [0]):.2f} s"
    )
    if judged:
        print("RSS growth after warm-up, per server lifetime: " + ", ".join(f"{g:+.1%}" for g in judged)
              + f"  (max {max(judged):+.1%})")  # fmt: skip
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for life in sorted({life for _, _, life in rss}):
        pts = [(t / 60, mb) for t, mb, lf in rss if lf == life]
        ax.plot(*zip(*pts), color="tab:blue", lw=1)
    ax.set_xlabel("minutes (each gap is a kill -9 and restart)")
    ax.set_ylabel("server RSS, MB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"embedserve soak: {total} requests, {len(restarts) - 1} kill -9, {lost} writes lost")
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
