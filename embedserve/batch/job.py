"""One batch indexing job on Ray Data: source → embedding actors → sink writers → summary.

    source rows ──map_batches(EmbedWorker, actor pool of num_workers)──▶ embedded rows
                ──map_batches(WriteWorker, small actor pool, no CPU reserved)──▶ one summary row per batch

Ray streams the blocks through both stages at once (reading, embedding and writing overlap) and
holds back the source when the writers fall behind, so memory stays bounded by the blocks in flight,
not by the size of the source. Only the summaries (counts and failed items) come back to the driver,
which draws the progress bar, writes the errors file and returns the totals.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedserve.batch.sources import open_source
from embedserve.batch.workers import BundleFiles, EmbedWorker, WriteWorker, worker_threads
from embedserve.models.bundle import load_manifest
from embedserve.models.encoder import find_bundle

log = logging.getLogger("embedserve.batch")

WRITERS = 2  # sink writer actors: I/O-bound, they reserve no CPU


@dataclass
class JobSpec:
    source: str
    model: str  # bundle directory or name
    sink: Any  # embedserve.batch.sinks.ServerSink | ParquetSink | MilvusSink
    num_workers: int = 2
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    batch_size: int = 64
    resume: bool = True
    label_from_dir: bool = False
    errors_path: str = "embedserve-batch-errors.csv"
    max_image_bytes: int = 20 << 20
    models_dirs: list[Path] = field(default_factory=list)


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    items_per_s: float = 0.0  # items embedded and written per second
    errors_path: str = ""
    destination: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def run(spec: JobSpec, *, progress: Callable[[Summary, int | None], None] | None = None) -> Summary:
    """Run the job on the Ray cluster this process is connected to (``ray.init`` first)."""
    import ray.data

    bundle_dir = find_bundle(spec.model, spec.models_dirs or None)
    manifest = load_manifest(bundle_dir)
    spec.sink.prepare(manifest)  # refuses a destination that does not fit, before any work
    # a few blocks per actor: each works on one block at a time, and the last ones balance out
    source = open_source(spec.source, label_from_dir=spec.label_from_dir, blocks=4 * spec.num_workers)
    bundle = BundleFiles.read(bundle_dir)
    device = "cuda" if spec.gpus_per_worker > 0 else "cpu"
    # a sink only this process may open (a Milvus Lite file) writes here, and resumes from the
    # ids it holds now; any other is written by writer actors, and asked by the embedding ones
    in_driver = spec.sink.in_driver
    known = frozenset(spec.sink.all_ids()) if in_driver and spec.resume else None
    embedded = source.dataset.map_batches(
        EmbedWorker,
        fn_constructor_args=(bundle,),
        fn_constructor_kwargs={
            "device": device,
            "threads": worker_threads(spec.cpus_per_worker),
            "sink": None if in_driver else spec.sink,
            "resume": spec.resume,
            "known_ids": known,
            "max_image_bytes": spec.max_image_bytes,
        },
        compute=ray.data.ActorPoolStrategy(size=spec.num_workers),
        num_cpus=spec.cpus_per_worker,
        num_gpus=spec.gpus_per_worker or None,
        batch_size=spec.batch_size,
        batch_format="pyarrow",
    )
    write_batch = max(spec.batch_size, 256)
    if in_driver:
        writer = WriteWorker(spec.sink)
        summaries = (
            writer(batch) for batch in embedded.iter_batches(batch_size=write_batch, batch_format="pyarrow")
        )
    else:
        summaries = embedded.map_batches(
            WriteWorker,
            fn_constructor_args=(spec.sink,),
            compute=ray.data.ActorPoolStrategy(size=WRITERS),
            num_cpus=0,
            batch_size=write_batch,
            batch_format="pyarrow",
        ).iter_batches(batch_size=None, batch_format="pyarrow")
    summary = Summary(errors_path=spec.errors_path, destination=spec.sink.describe())
    started = time.perf_counter()
    try:
        with open(spec.errors_path, "w", newline="") as f:
            errors = csv.writer(f)
            errors.writerow(["id", "source", "error"])
            for batch in summaries:
                for row in batch.to_pylist():
                    summary.done += row["done"]
                    summary.failed += row["failed"]
                    summary.skipped += row["skipped"]
                    errors.writerows(json.loads(row["errors"]))
                f.flush()
                if progress is not None:
                    progress(summary, source.total)
    finally:
        spec.sink.close()  # a Milvus Lite file is free for the next process even after a failure
    summary.seconds = time.perf_counter() - started
    summary.items_per_s = summary.done / summary.seconds if summary.seconds else 0.0
    return summary


class ProgressBar:
    """items done / total, rate and failures on one stderr line (a terminal only)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = time.perf_counter()

    def __call__(self, summary: Summary, total: int | None) -> None:
        if not self.enabled:
            return
        seen = summary.done + summary.failed + summary.skipped
        rate = summary.done / max(time.perf_counter() - self.started, 1e-9)
        if total:
            width = 30
            filled = int(width * seen / total)
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {seen}/{total}"
        else:
            bar = f"{seen} items"
        print(
            f"\r{bar}  {rate:.0f} items/s  {summary.failed} failed  {summary.skipped} skipped",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)
