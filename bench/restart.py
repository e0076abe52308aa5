"""Restart to SERVING after kill -9, on big collections that were taking writes and deletes.

    python bench/restart.py                              # 1M x 128 Flat and 200k x 128 HNSW32
    python bench/restart.py --flat 100000 --hnsw 20000   # a quick run

For each collection: a real `embedserve serve` process (default models, default
snapshot settings) is loaded with clustered 128-d vectors over UpsertStream;
then, in each cycle, two writers upsert new items, replace old ones and delete
others continuously, the server is killed with SIGKILL mid-write, and a new
process is started on the same data directory. Reported: seconds from the new
process's start to health SERVING (the import of the server and the loading of
its models included; an empty data directory is measured the same way as the
floor), log records replayed, and acknowledged writes lost (every acknowledged
upsert must be there, every acknowledged delete gone; a batch in flight at the
kill is all-or-nothing).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.server_process import ServerProcess  # noqa: E402
from embedserve.client import Client, item  # noqa: E402

DIM = 128


class Server(ServerProcess):
    def replayed(self) -> int:
        """Log records the last start replayed, summed over collections (from its log)."""
        return sum(
            int(m.group(1)) for line in self.log if (m := re.search(r"(\d+) log records replayed", line))
        )

    def replay_seconds(self) -> float:
        """Seconds the last start spent replaying logs, summed over collections (from its log)."""
        return sum(
            float(m.group(1))
            for line in self.log
            if (m := re.search(r"records replayed in ([\d.]+) s", line))
        )


def clustered(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    which = rng.integers(0, len(centres), n)
    return (centres[which] + 0.3 * rng.standard_normal((n, DIM))).astype(np.float32)


class Writers:
    """Two threads upserting, replacing and deleting; they record what was acknowledged."""

    def __init__(self, target: str, name: str, n_initial: int, centres: np.ndarray) -> None:
        self.target, self.name, self.centres = target, name, centres
        self.n_initial = n_initial
        self.acked_present: set[str] = set()
        self.acked_deleted: set[str] = set()
        self.in_flight: list[set[str]] = [set(), set()]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in (0, 1)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _run(self, w: int) -> None:
        rng = np.random.default_rng(1000 + w + int(time.time()))
        step = 0
        with Client(self.target, timeout=60) as c:
            while not self.stop.is_set():
                step += 1
                try:
                    if step % 3 == 0:  # delete 200 of the initial items (each writer its own half)
                        ids = [f"init-{j}" for j in rng.integers(0, self.n_initial, 200) if j % 2 == w]
                        with self.lock:
                            ids = [i for i in dict.fromkeys(ids) if i not in self.acked_deleted]
                        self.in_flight[w] = set(ids)
                        c.delete(self.name, ids, allow_missing=True)
                        with self.lock:
                            self.acked_deleted |= set(ids)
                            self.acked_present -= set(ids)
                    else:  # 500 new items, plus replacing 100 earlier ones of this writer
                        new = [f"w{w}-{time.time_ns()}-{j}" for j in range(500)]
                        with self.lock:
                            mine = [i for i in self.acked_present if i.startswith(f"w{w}-")][:100]
                        ids = new + mine
                        self.in_flight[w] = set(ids)
                        vectors = clustered(len(ids), rng, self.centres)
                        c.upsert(self.name, [item(i, vector=v, label="w") for i, v in zip(ids, vectors)])
                        with self.lock:
                            self.acked_present |= set(ids)
                    self.in_flight[w] = set()
                except grpc.RpcError:
                    return  # the server was killed mid-call

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def lost_writes(target: str, name: str, writers: Writers) -> int:
    """Acknowledged upserts missing plus acknowledged deletes present (in-flight batches excluded)."""
    uncertain = set().union(*writers.in_flight)
    present = sorted(writers.acked_present - uncertain)
    deleted = sorted(writers.acked_deleted - uncertain)
    lost = 0
    with Client(target, timeout=120) as c:
        for start in range(0, len(present), 5000):
            chunk = present[start : start + 5000]
            try:
                c.get(name, chunk)
            except grpc.RpcError:  # find how many are missing, one at a time
                for i in chunk:
                    try:
                        c.get(name, [i])
                    except grpc.RpcError:
                        lost += 1
        for i in deleted[:300]:
            try:
                c.get(name, [i])
                lost += 1  # resurrected
            except grpc.RpcError:
                pass
    return lost


def run_case(name: str, spec: str, n: int, cycles: int, write_s: float, rng) -> dict:
    data = Path(tempfile.mkdtemp(prefix=f"restart-{name}-"))
    server = Server(data)
    server.start()
    centres = rng.standard_normal((200, DIM)).astype(np.float32) * 2
    with Client(server.target, timeout=600) as c:
        c.create_collection(name, index_spec=spec)
        t = time.perf_counter()

        def batches():
            for start in range(0, n, 5000):
                ids = range(start, min(n, start + 5000))
                vectors = clustered(len(ids), rng, centres)
                yield [item(f"init-{j}", vector=v) for j, v in zip(ids, vectors)]

        c.upsert_stream(name, batches())
        print(f"  {name}: {n} x {DIM} {spec} loaded in {time.perf_counter() - t:.0f} s", flush=True)
    times, replayed, lost, rss = [], [], 0, []
    for cycle in range(cycles):
        writers = Writers(server.target, name, n, centres)
        writers.start()
        time.sleep(write_s)
        server.kill()
        writers.join()
        seconds = server.start()
        rss.append(server.rss_mb() or 0.0)
        times.append(seconds)
        replayed.append(server.replayed())
        lost += lost_writes(server.target, name, writers)
        with Client(server.target) as c:
            count = c.describe_collection(name).count
        print(
            f"  cycle {cycle}: SERVING {seconds:.2f} s after start, {replayed[-1]} records replayed "
            f"in {server.replay_seconds():.2f} s, "
            f"{count} items, {len(writers.acked_present)} acknowledged upserts checked",
            flush=True,
        )
    server.kill()
    return {"times": times, "replayed": replayed, "lost": lost, "rss": max(rss)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flat", type=int, default=1_000_000, help="items in the Flat collection")
    p.add_argument("--hnsw", type=int, default=200_000, help="items in the HNSW32 collection")
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--write-s", type=float, default=8.0, help="seconds of writes before each kill")
    args = p.parse_args()
    rng = np.random.default_rng(0)

    floor = Server(Path(tempfile.mkdtemp(prefix="restart-empty-")))
    empty, floor_rss = [], 0.0
    for _ in range(3):
        empty.append(floor.start())
        floor_rss = floor.rss_mb() or 0.0
        floor.kill()
    rows = [("empty data directory (the floor)", empty, [0] * 3, 0, floor_rss)]
    for name, spec, n in (("flat", "Flat", args.flat), ("hnsw", "HNSW32", args.hnsw)):
        if n:
            r = run_case(name, spec, n, args.cycles, args.write_s, rng)
            label = f"{n:,} x {DIM} {spec}, writes + deletes, kill -9"
            rows.append((label, r["times"], r["replayed"], r["lost"], r["rss"]))
    print()
    print(f"{'case':<52} {'to SERVING, s (median / max)':>30} {'replayed':>9} {'lost':>5} {'RSS MB':>7}")
    for label, times, replayed, lost, rss in rows:
        t = f"{statistics.median(times):.2f} / {max(times):.2f}"
        print(f"{label:<52} {t:>30} {max(replayed):>9} {lost:>5} {rss:>7.0f}")
    print("RSS: the server's resident memory just after a restart (the vectors alone: 4 x dim bytes each)")


if __name__ == "__main__":
    main()
