"""Batch indexing: `embedserve-batch index` on a local Ray (2 workers) vs single-process `embedserve index`.

The same folder of PNGs (scikit-learn's digits, written out with ``--copies`` names each), the same
model, into a fresh collection of the same running server each time; rounds interleaved, medians.

For each run: wall seconds from the command's start to its exit (Ray's start-up included), items/s
over that wall time, items/s as the batch job itself reports it (embedding and writing, without
starting Ray), and the memory peak of the job's processes (sum of RSS over the process tree,
sampled every 0.1 s) and of the server (VmHWM, reset before each run).

    python bench/batch.py [--copies 2] [--rounds 3] [--model digits-simclr]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import ServerProcess  # noqa: E402

BIN = Path(sys.executable).parent


def write_folder(root: Path, copies: int) -> int:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = 0
    for copy in range(copies):
        for i, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
            folder = root / str(target)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((pixels * 255 / 16).astype(np.uint8)).save(folder / f"{copy}-{i:04d}.png")
            n += 1
    return n


def tree_rss_mb(root_pid: int) -> float:
    """Sum of VmRSS of ``root_pid`` and every process below it, MB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = dict(
                line.split(":", 1)
                for line in Path(f"/proc/{entry}/status").read_text().splitlines()
                if ":" in line
            )
        except OSError:
            continue
        pid, ppid = int(entry), int(fields.get("PPid", "0").strip())
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 1024


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak tree RSS MB, stdout) of a command."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mb(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {out[-2000:]}")
    return wall, peak, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="digits-simclr")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        n = write_folder(folder, args.copies)
        server = ServerProcess(Path(tmp) / "data")
        server.start()
        print(f"{n} PNGs ({args.copies} copies of the digits), model {args.model}, server {server.target}")
        rows: dict[str, list[dict]] = {
            "embedserve index (1 process)": [],
            f"embedserve-batch, Ray, {args.workers} workers": [],
        }
        try:
            for r in range(args.rounds):
                order = list(rows) if r % 2 == 0 else list(reversed(rows))
                for name in order:
                    collection = f"bench_{r}_{'ray' if 'Ray' in name else 'index'}"
                    server.reset_peak()
                    if "Ray" in name:
                        cmd = [str(BIN / "embedserve-batch"), "index", str(folder), "--model", args.model]
                        cmd += ["--to-server", server.target, "--collection", collection, "--label-from-dir"]
                        cmd += ["--num-workers", str(args.workers), "--num-cpus", "2", "--no-progress"]
                        cmd += ["--errors", str(Path(tmp) / "errors.csv")]
                    else:
                        subprocess.run(
                            [str(BIN / "embedserve"), "collections", "create", collection, "--model", args.model,
                             "--target", server.target], check=True, stdout=subprocess.DEVNULL,
                        )  # fmt: skip
                        cmd = [str(BIN / "embedserve"), "index", collection, str(folder), "--label-from-dir"]
                        cmd += ["--target", server.target]
                    wall, peak, out = run_measured(cmd)
                    summary = json.loads(out.strip().splitlines()[-1])
                    done = summary.get("done", int(summary.get("upserted", 0)))
                    assert int(done) == n, summary
                    rows[name].append(
                        {
                            "wall": wall,
                            "rate": n / wall,
                            "job_rate": summary.get("items_per_s"),
                            "peak": peak,
                            "server_peak": server.peak_mb(),
                        }
                    )
                    print(
                        f"  round {r} {name}: {wall:.1f} s, {n / wall:.0f} items/s, job peak {peak:.0f} MB",
                        flush=True,
                    )
        finally:
            server.stop()

    print()
    print(
        "| how | wall s | items/s (wall) | items/s (job, Ray started) | job processes peak MB | server peak MB |"
    )
    print("|---|---|---|---|---|---|")
    for name, runs in rows.items():

        def med(key: str, runs: list[dict] = runs) -> float | None:
            values = [run[key] for run in runs if run[key] is not None]
            return statistics.median(values) if values else None

        job = med("job_rate")
        print(
            f"| {name} | {med('wall'):.1f} | {med('rate'):.0f} | {f'{job:.0f}' if job else '-'} "
            f"| {med('peak'):.0f} | {med('server_peak'):.0f} |"
        )


if __name__ == "__main__":
    main()
