"""``embedserve collections import NAME DIR``: Parquet shards of vectors into a server's collection.

Reads what ``embedserve-batch index --to-parquet`` writes (and the same columns from other tools,
autofaiss / clip-retrieval style): ``id`` (string), ``vector`` or ``embedding`` (a list of floats),
optional ``label`` (string) and ``metadata`` (a map of strings, or a JSON object as text). The
shards' ``embedserve`` schema metadata names the model, dim and metric; a collection that does not
exist yet is created for that model (or ``model`` given here). Rows go up in one UpsertStream,
a message of at most ``batch_size`` items each (each all-or-nothing and durable once the next is
read); ids make a re-run idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from embedserve.batch.sinks import read_shard_info, shard_files
from embedserve.batch.sources import resolve

VECTOR_COLUMNS = ("vector", "embedding")


class ShardError(ValueError):
    """The folder holds no shards we can read: said before anything is written."""


def import_parquet(
    client: Any,
    name: str,
    directory: str,
    *,
    model: str = "",
    batch_size: int = 1000,
) -> Any:
    """Upsert every row of the shards in ``directory`` into collection ``name``; returns the
    UpsertResponse of the stream."""
    import grpc
    import pyarrow.parquet as pq

    fs, root = resolve(directory)
    shards = shard_files(fs, root)
    if not shards:
        raise ShardError(f"{directory}: no .parquet shards")
    info = read_shard_info(fs, shards[0]) or {}
    first = pq.read_schema(shards[0], filesystem=fs)
    vector_column = next((c for c in VECTOR_COLUMNS if c in first.names), None)
    if "id" not in first.names or vector_column is None:
        raise ShardError(
            f"{shards[0]}: needs an 'id' and a 'vector' (or 'embedding') column; has {first.names}"
        )
    try:
        collection = client.describe_collection(name)
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        collection = client.create_collection(
            name, model=model or info.get("model", ""), metric=info.get("metric", "")
        )
    dim = collection.dim
    if info.get("dim") not in (None, dim):
        raise ShardError(f"{directory}: the shards hold {info['dim']}-d vectors, collection '{name}' {dim}-d")

    def batches() -> Iterator[list[Any]]:
        from embedserve.client import item

        for shard in shards:
            reader = pq.ParquetFile(shard, filesystem=fs)
            names = reader.schema_arrow.names
            columns = [c for c in ("id", vector_column, "label", "metadata") if c in names]
            for batch in reader.iter_batches(batch_size=batch_size, columns=columns):
                ids = batch.column("id").to_pylist()
                vectors = _vectors(batch.column(vector_column), shard)
                labels = batch.column("label").to_pylist() if "label" in names else [None] * len(ids)
                metadata = (
                    [_metadata(m) for m in batch.column("metadata").to_pylist()]
                    if "metadata" in names
                    else [{}] * len(ids)
                )
                yield [
                    item(i, vector=v, label=lab or None, metadata=m)
                    for i, v, lab, m in zip(ids, vectors, labels, metadata, strict=True)
                ]

    return client.upsert_stream(name, batches())


def _vectors(column: Any, shard: str) -> np.ndarray:
    """A list or fixed-size-list column of floats → float32 [N, dim] (one copy, no Python loop)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(column, pa.ListArray | pa.LargeListArray | pa.FixedSizeListArray):
        raise ShardError(f"{shard}: the vector column is {column.type}, not a list of floats")
    if len(column) == 0:
        return np.zeros((0, 0), np.float32)
    if column.null_count:
        raise ShardError(f"{shard}: a vector is null")
    if not isinstance(column, pa.FixedSizeListArray):
        lengths = pc.min_max(column.value_lengths())
        if lengths["min"].as_py() != lengths["max"].as_py():
            raise ShardError(f"{shard}: vectors of different lengths in one batch")
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(column), -1)


def _metadata(value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, list):  # a map column: [(key, value), ...]
        value = dict(value)
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
