"""The two Ray Data stages of a batch job, as callable classes for ``map_batches`` actor pools.

``EmbedWorker`` (one per ``--num-workers``, each with its own ONNX Runtime session): checks each
row (id, label, metadata against the server's limits), leaves out the ids the sink already holds,
reads the files, and embeds with ``embedserve.models.encoder.Encoder`` (the server's own
preprocessing). ``WriteWorker`` hands the embedded rows to the sink and returns one summary row
per batch: counts, and the failed items with their reasons, which is all that reaches the driver.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embedserve.batch.sinks import Rows
from embedserve.errors import EmbedServeError
from embedserve.limits import DEFAULT_LIMITS, Limits
from embedserve.store.validate import check_new_ids

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
MAX_BUNDLE_BYTES = 4 << 30


@dataclass(frozen=True)
class BundleFiles:
    """A bundle's files, carried to the workers in Ray's object store: a cluster's nodes need no
    copy of the bundle on their disks."""

    name: str
    files: dict[str, bytes]

    @classmethod
    def read(cls, bundle_dir: Path) -> BundleFiles:
        files, total = {}, 0
        for path in sorted(Path(bundle_dir).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                total += path.stat().st_size
                if total > MAX_BUNDLE_BYTES:
                    raise ValueError(f"{bundle_dir}: bundle over {MAX_BUNDLE_BYTES >> 30} GiB")
                files[str(path.relative_to(bundle_dir))] = path.read_bytes()
        return cls(Path(bundle_dir).name, files)

    def unpack(self) -> Path:
        root = Path(tempfile.mkdtemp(prefix="embedserve-bundle-")) / self.name
        for rel, data in self.files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return root


class EmbedWorker:
    """Embeds one batch of source rows (``embedserve.batch.sources.COLUMNS``) → id, vector, label,
    metadata, source, status, error."""

    def __init__(
        self,
        bundle: BundleFiles,
        *,
        device: str,
        threads: int,
        sink: Any,
        resume: bool,
        known_ids: frozenset[str] | None = None,
        max_image_bytes: int,
        max_batch_size: int = 32,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        from embedserve.config import ServerConfig
        from embedserve.models.encoder import Encoder

        self.bundle_dir = bundle.unpack()
        config = ServerConfig(
            device=device,
            intra_op_threads=threads,
            max_image_bytes=max_image_bytes,
            max_batch_size=max_batch_size,
            limits=limits,
        )
        self.encoder = Encoder(self.bundle_dir, config)
        self.dim = self.encoder.dim
        self.sink = sink
        self.resume = resume
        self.known_ids = known_ids  # a sink that cannot be reached from here: its ids, known up front
        self.limits = limits
        self.max_image_bytes = max_image_bytes

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        ids = batch.column("id").to_pylist()
        paths = batch.column("path").to_pylist()
        datas = batch.column("data").to_pylist()
        texts = batch.column("text").to_pylist()
        labels = batch.column("label").to_pylist()
        raw_meta = batch.column("metadata").to_pylist()
        status = [OK] * n
        errors: list[str | None] = [None] * n
        metadata: list[dict[str, str]] = [{}] * n
        for i in range(n):
            reason = self._check(ids[i], labels[i], raw_meta[i], i, metadata)
            if reason is not None:
                status[i], errors[i] = FAILED, reason
        if self.resume:
            live = [i for i in range(n) if status[i] == OK]
            asked = [ids[i] for i in live]
            held = (
                self.known_ids.intersection(asked)
                if self.known_ids is not None
                else self.sink.existing(asked)
            )
            for i in live:
                if ids[i] in held:
                    status[i] = SKIPPED
        images = [i for i in range(n) if status[i] == OK and texts[i] is None]
        words = [i for i in range(n) if status[i] == OK and texts[i] is not None]
        vectors = np.zeros((n, self.dim), dtype=np.float32)
        if images:
            contents = [datas[i] if datas[i] is not None else self._read(paths[i], errors, i) for i in images]
            encoded = self.encoder.encode_images(contents)
            vectors[images] = encoded.vectors
            for i, err in zip(images, encoded.errors, strict=True):
                if err is not None and errors[i] is None:
                    errors[i] = err
        if words:
            encoded = self.encoder.encode_texts([texts[i] for i in words])
            vectors[words] = encoded.vectors
            for i, err in zip(words, encoded.errors, strict=True):
                if err is not None:
                    errors[i] = err
        for i in images + words:
            if errors[i] is not None:
                status[i] = FAILED
        return pa.table(
            {
                "id": pa.array([x if isinstance(x, str) else None for x in ids], pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim),
                "label": pa.array(labels, pa.string()),
                "metadata": pa.array([json.dumps(m) for m in metadata], pa.string()),
                "source": pa.array([p if p is not None else "" for p in paths], pa.string()),
                "status": pa.array(status, pa.string()),
                "error": pa.array(errors, pa.string()),
            }
        )

    def _check(
        self, item_id: Any, label: Any, raw_meta: Any, i: int, metadata: list[dict[str, str]]
    ) -> str | None:
        """None, or why the row cannot become an item (the server's own rules, checked before work)."""
        try:
            check_new_ids([item_id])
            if label is not None:
                self.limits.check_label(label, 0)
            meta = json.loads(raw_meta) if raw_meta else {}
            if not isinstance(meta, dict):
                return f"metadata is not a JSON object: {raw_meta[:100]!r}"
            meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
            self.limits.metadata_size(meta, 0)
            metadata[i] = meta
        except EmbedServeError as err:
            return err.detail
        except ValueError as err:
            return f"metadata is not JSON: {err}"
        return None

    def _read(self, path: str | None, errors: list[str | None], i: int) -> bytes | None:
        """The file's bytes, or None with the reason in ``errors[i]`` (missing, too large, unreadable)."""
        import pyarrow.fs as pafs

        from embedserve.batch.sources import SourceError, resolve

        if not path:
            errors[i] = "no path"
            return None
        try:
            fs, where = resolve(path)
            info = fs.get_file_info(where)
            if info.type == pafs.FileType.NotFound:
                errors[i] = "file not found"
                return None
            if info.type != pafs.FileType.File:
                errors[i] = "not a file"
                return None
            if info.size is not None and info.size > self.max_image_bytes:
                errors[i] = f"file is {info.size} bytes, limit {self.max_image_bytes} (max_image_bytes)"
                return None
            if isinstance(fs, pafs.LocalFileSystem):
                with open(where, "rb") as f:
                    return f.read()
            with fs.open_input_file(where) as f:
                return f.readall()
        except (OSError, SourceError, pa.ArrowException) as err:
            errors[i] = f"cannot read: {err}"
            return None


class WriteWorker:
    """Writes one batch of embedded rows to the sink → one summary row (done, failed, skipped, errors)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def __call__(self, batch: pa.Table) -> pa.Table:
        status = batch.column("status").to_pylist()
        ids = batch.column("id").to_pylist()
        sources = batch.column("source").to_pylist()
        reasons = batch.column("error").to_pylist()
        failed = [(ids[i], sources[i], reasons[i]) for i, s in enumerate(status) if s == FAILED]
        skipped = status.count(SKIPPED)
        ok = [i for i, s in enumerate(status) if s == OK]
        # an id twice in a batch: the last one wins, as two upserts in a row would have it
        last = {ids[i]: i for i in ok}
        skipped += len(ok) - len(last)
        ok = sorted(last.values())
        done = 0
        if ok:
            dim = batch.schema.field("vector").type.list_size
            flat = batch.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            vectors = np.asarray(flat, dtype=np.float32).reshape(-1, dim)[ok]
            labels = batch.column("label").to_pylist()
            metadata = batch.column("metadata").to_pylist()
            rows = Rows(
                [ids[i] for i in ok], vectors, [labels[i] for i in ok], [json.loads(metadata[i]) for i in ok]
            )
            refused = self.sink.write(rows)
            for position, reason in refused:
                failed.append((rows.ids[position], sources[ok[position]], reason))
            done = len(ok) - len(refused)
        return pa.table(
            {
                "done": pa.array([done], pa.int64()),
                "failed": pa.array([len(failed)], pa.int64()),
                "skipped": pa.array([skipped], pa.int64()),
                "errors": pa.array([json.dumps(failed)], pa.string()),
            }
        )


def worker_threads(cpus_per_worker: float) -> int:
    """ONNX Runtime threads for a worker given its CPU share (never more than the machine has)."""
    return max(1, min(int(cpus_per_worker), os.cpu_count() or 1))
