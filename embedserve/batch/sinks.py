"""Where a batch job's vectors go: a running server, Parquet shards, or a Milvus collection.

A sink is a small picklable object (its settings; connections open lazily in each Ray worker):

- ``prepare(manifest)`` runs once in the driver before any work: it creates what is missing (the
  collection, the folder) and refuses a destination that does not fit the model (its dim);
- ``existing(ids)`` says which ids the destination already holds: a re-run skips them, so a job
  that failed half way resumes and ends with exactly the input set;
- ``in_driver``: only the driver may open the destination (a Milvus Lite file): the job writes from
  there, and resumes from ``all_ids()``, read once;
- ``close()`` lets go of connections (the driver's, at the end of a job);
- ``write(rows)`` writes one batch and returns the items it refused, by position, with the
  destination's reason (they go to the errors file; the rest of the batch is written).
  An error that is not about one item (the server is gone, a permission) fails the job.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from embedserve.models.bundle import Manifest

WRITE_BATCH_BYTES = 8 << 20  # one Upsert message at most this big (the server's limit is 64 MiB)
WRITE_BATCH_ITEMS = 1000
EXISTING_BATCH = 1000  # ids per existence check
UNAVAILABLE_RETRIES = 6  # a server restarting: 0.5 s, 1 s, 2 s ... between tries
# "batch 3: item 7: <reason> (3 earlier batches, 3000 items, were committed)": UpsertStream's error
_STREAM_ITEM_ERROR = re.compile(r"^batch (\d+): item (\d+): ")
_COMMITTED = re.compile(r" \(\d+ earlier batches, \d+ items, were committed\)$")


class SinkError(RuntimeError):
    """The destination cannot take the job (said before work starts, or when it fails for all items)."""


@dataclass
class Rows:
    """One batch of embedded items for a sink."""

    ids: list[str]
    vectors: np.ndarray  # float32 [N, dim]
    labels: list[str | None]
    metadata: list[dict[str, str]]

    def take(self, keep: list[int]) -> Rows:
        return Rows(
            [self.ids[i] for i in keep],
            self.vectors[keep],
            [self.labels[i] for i in keep],
            [self.metadata[i] for i in keep],
        )


# ----------------------------------------------------------------------------------------- server
@dataclass
class ServerSink:
    """A running embedserve: one ``UpsertStream`` per block (each message all-or-nothing and durable
    once the next is read, so a failure loses at most the message in flight, which a re-run redoes)."""

    target: str
    collection: str
    token: str = ""
    tls: bool = False
    tls_ca: str = ""
    message_items: int = WRITE_BATCH_ITEMS  # items per UpsertStream message (and WRITE_BATCH_BYTES)
    _client: Any = field(default=None, repr=False, compare=False)

    in_driver = False  # writer actors connect themselves

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def describe(self) -> str:
        return f"collection '{self.collection}' on {self.target}"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def client(self) -> Any:
        if self._client is None:
            from embedserve.client import Client

            self._client = Client(
                self.target,
                token=self.token or None,
                tls=self.tls,
                tls_ca=Path(self.tls_ca) if self.tls_ca else None,
                timeout=300,
            )
        return self._client

    def prepare(self, manifest: Manifest) -> None:
        import grpc

        client = self.client()
        try:
            info = client.describe_collection(self.collection)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise SinkError(f"{self.describe()}: {err.code().name}: {err.details()}") from None
            try:
                info = client.create_collection(self.collection, model=manifest.name)
            except grpc.RpcError as err:
                raise SinkError(
                    f"cannot create {self.describe()} for model '{manifest.name}': "
                    f"{err.code().name}: {err.details()} (create it first: embedserve collections create)"
                ) from None
        if info.error:
            raise SinkError(f"{self.describe()} is unusable: {info.error}")
        if info.dim != manifest.dim:
            raise SinkError(
                f"{self.describe()} holds {info.dim}-d vectors; model '{manifest.name}' makes {manifest.dim}-d"
            )

    def existing(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), EXISTING_BATCH):
            chunk = ids[start : start + EXISTING_BATCH]
            items = self._retrying(lambda c=chunk: self.client().get(self.collection, c, allow_missing=True))
            found.update(item.id for item in items)
        return found

    def write(self, rows: Rows) -> list[tuple[int, str]]:
        """One UpsertStream for the block, in messages of at most WRITE_BATCH_ITEMS items and
        WRITE_BATCH_BYTES. An item the server refuses fails its message (the earlier ones are
        committed): it is taken out and the stream goes on from that message."""
        import grpc

        from embedserve.client import item

        per_item = (
            rows.vectors.shape[1] * 4 + 64 + max((len(json.dumps(m)) for m in rows.metadata), default=0)
        )
        step = max(1, min(self.message_items, WRITE_BATCH_BYTES // per_item))
        pending = [list(range(s, min(s + step, len(rows.ids)))) for s in range(0, len(rows.ids), step)]
        refused: list[tuple[int, str]] = []
        item_codes = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        while pending:

            def messages(chunks: list[list[int]] = pending) -> Any:
                for chunk in chunks:
                    yield [
                        item(
                            rows.ids[i],
                            vector=rows.vectors[i],
                            label=rows.labels[i],
                            metadata=rows.metadata[i],
                        )
                        for i in chunk
                    ]

            try:
                self._retrying(lambda: self.client().upsert_stream(self.collection, messages()))
                break
            except grpc.RpcError as err:
                details = err.details() or ""
                match = _STREAM_ITEM_ERROR.match(details)
                if match is None or err.code() not in item_codes:
                    raise SinkError(f"{self.describe()}: {err.code().name}: {details}") from None
                batch, index = int(match.group(1)), int(match.group(2))
                if batch >= len(pending) or index >= len(pending[batch]):
                    raise SinkError(f"{self.describe()}: {err.code().name}: {details}") from None
                reason = _COMMITTED.sub("", details[match.end() :])
                refused.append((pending[batch].pop(index), f"{err.code().name}: {reason}"))
                pending = [chunk for chunk in pending[batch:] if chunk]  # the earlier messages are in
        return refused

    def _retrying(self, call: Any) -> Any:
        import grpc

        for attempt in range(UNAVAILABLE_RETRIES + 1):
            try:
                return call()
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE or attempt == UNAVAILABLE_RETRIES:
                    raise
                time.sleep(0.5 * 2**attempt)


# ---------------------------------------------------------------------------------------- parquet
PARQUET_META_KEY = b"embedserve"  # schema metadata: {"model", "dim", "metric"} of the shard's vectors
SHARD_PREFIX = "part-"


def parquet_schema(manifest_info: dict[str, Any]) -> pa.Schema:
    """id, vector (fixed-size list of float32), label, metadata (map of strings): the columns
    autofaiss and clip-retrieval read, with the model that made the vectors in the schema metadata."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("vector", pa.list_(pa.float32(), int(manifest_info["dim"]))),
            ("label", pa.string()),
            ("metadata", pa.map_(pa.string(), pa.string())),
        ],
        metadata={PARQUET_META_KEY: json.dumps(manifest_info).encode()},
    )


@dataclass
class ParquetSink:
    """Parquet shards ``part-<uuid>.parquet`` in a folder (any filesystem pyarrow writes). A shard
    appears by a rename once fully written, so a job that dies leaves only whole shards, and
    a re-run skips the ids they hold."""

    directory: str
    info: dict[str, Any] = field(default_factory=dict)  # model, dim, metric: set by prepare
    _existing: set[str] | None = field(default=None, repr=False, compare=False)

    in_driver = False  # every writer writes shards of its own

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_existing": None}

    def describe(self) -> str:
        return f"Parquet shards in {self.directory}"

    def close(self) -> None:
        self._existing = None

    def _fs(self) -> tuple[Any, str]:
        from embedserve.batch.sources import resolve

        return resolve(self.directory)

    def prepare(self, manifest: Manifest) -> None:
        self.info = {"model": manifest.name, "dim": manifest.dim, "metric": manifest.metric.value}
        fs, root = self._fs()
        fs.create_dir(root, recursive=True)
        for shard in shard_files(fs, root, include_partial=True):
            name = posixpath.basename(shard)
            if name.startswith("."):  # a shard a dead job was writing
                fs.delete_file(shard)
                continue
            meta = read_shard_info(fs, shard)
            if meta is not None and int(meta.get("dim", -1)) != manifest.dim:
                raise SinkError(
                    f"{self.directory}: {name} holds {meta.get('dim')}-d vectors of model "
                    f"'{meta.get('model')}'; model '{manifest.name}' makes {manifest.dim}-d"
                )

    def existing(self, ids: list[str]) -> set[str]:
        if self._existing is None:
            import pyarrow.parquet as pq

            fs, root = self._fs()
            found: set[str] = set()
            for shard in shard_files(fs, root):
                found.update(pq.read_table(shard, columns=["id"], filesystem=fs).column("id").to_pylist())
            self._existing = found
        return self._existing.intersection(ids)

    def write(self, rows: Rows) -> list[tuple[int, str]]:
        import pyarrow.parquet as pq

        schema = parquet_schema(self.info)
        dim = int(self.info["dim"])
        table = pa.table(
            {
                "id": pa.array(rows.ids, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.ascontiguousarray(rows.vectors, np.float32).reshape(-1)), dim
                ),
                "label": pa.array(rows.labels, pa.string()),
                "metadata": pa.array(
                    [list(m.items()) for m in rows.metadata], pa.map_(pa.string(), pa.string())
                ),
            },
            schema=schema,
        )
        fs, root = self._fs()
        name = f"{SHARD_PREFIX}{uuid.uuid4().hex}.parquet"
        partial = posixpath.join(root, f".{name}.partial")
        pq.write_table(table, partial, filesystem=fs)
        fs.move(partial, posixpath.join(root, name))
        return []


def shard_files(fs: Any, root: str, *, include_partial: bool = False) -> list[str]:
    """The Parquet shards in ``root`` (sorted), and with ``include_partial`` the half-written ones."""
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, recursive=False, allow_not_found=True))
    out = []
    for info in infos:
        name = posixpath.basename(info.path)
        if info.type != pafs.FileType.File:
            continue
        if name.endswith(".parquet") and not name.startswith((".", "_")):
            out.append(info.path)
        elif include_partial and name.startswith(".") and name.endswith(".partial"):
            out.append(info.path)
    return sorted(out)


def read_shard_info(fs: Any, shard: str) -> dict[str, Any] | None:
    """The ``embedserve`` schema metadata of a shard (model, dim, metric), None if it has none."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(shard, filesystem=fs).metadata or {}
    raw = meta.get(PARQUET_META_KEY)
    return json.loads(raw) if raw else None
