"""Snapshots: a collection's whole state in one directory, made current by an atomic rename.

Layout of ``snap-<seq, 20 digits>/`` (no pickle anywhere)::

    manifest.json   {"version": 1, "seq", "rows", "dim", "trained", "index": bool,
                     "max_metadata_bytes" (optional)}   written last
    vectors.npy     float32 [rows, dim]   every row, dead ones included (row r = FAISS id r)
    live.npy        bool [rows]
    labels.npy      int32 [rows]          label code, -1 = none
    items.json      {"ids": [str|null], "metadata": [obj|null], "label_names": [str]}
    index.faiss     faiss.write_index of the CPU index; absent for a plain IndexFlat,
                    which is rebuilt from vectors.npy at load (same content, half the disk)

The directory is written as ``.snap-<seq>.tmp``, every file fsync'd, then renamed
to ``snap-<seq>`` and the parent fsync'd; a crash at any point leaves either the
old or the new snapshot current. Load takes the highest ``snap-*``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from embedserve.errors import FailedPrecondition
from embedserve.store.fsio import fsync_dir, fsync_file
from embedserve.store.table import ItemTable

SNAPSHOT_VERSION = 1
_PREFIX = "snap-"


@dataclass
class Snapshot:
    seq: int  # last log record it contains
    table: ItemTable
    index: faiss.Index | None  # None: a plain IndexFlat to rebuild from table.vectors
    trained: bool
    nbytes: int  # size on disk


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def _is_plain_flat(index: faiss.Index) -> bool:
    return type(faiss.downcast_index(index)) in (faiss.IndexFlat, faiss.IndexFlatIP, faiss.IndexFlatL2)


def _save(path: Path, data: np.ndarray | bytes) -> None:
    with open(path, "wb") as f:
        if isinstance(data, np.ndarray):
            np.save(f, data, allow_pickle=False)
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_snapshot(directory: Path, seq: int, table: ItemTable, index: faiss.Index, trained: bool) -> int:
    """Write and make current a snapshot of state up to log record ``seq``; drop older ones.

    Returns its size in bytes.
    """
    final = directory / f"{_PREFIX}{seq:020d}"
    if final.exists():
        return _dir_bytes(final)  # same seq = same state, already durable
    tmp = directory / f".{final.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _save(tmp / "vectors.npy", table.vectors)
    _save(tmp / "live.npy", table.live)
    _save(tmp / "labels.npy", table.label_codes)
    items = {"ids": table.ids, "metadata": table.metadata, "label_names": table.label_names}
    _save(tmp / "items.json", json.dumps(items, separators=(",", ":")).encode())
    has_index = not _is_plain_flat(index)
    if has_index:
        faiss.write_index(index, str(tmp / "index.faiss"))
        fsync_file(tmp / "index.faiss")
    manifest = {
        "version": SNAPSHOT_VERSION,
        "seq": seq,
        "rows": table.n_rows,
        "dim": table.dim,
        "trained": trained,
        "index": has_index,
        "max_metadata_bytes": table.max_metadata_bytes,
    }
    _save(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(directory)
    _remove_older(directory, keep=final)
    return _dir_bytes(final)


def _remove_older(directory: Path, keep: Path) -> None:
    for old in directory.glob(f"{_PREFIX}*"):
        if old != keep:
            shutil.rmtree(old)
    for tmp in directory.glob(f".{_PREFIX}*.tmp"):
        shutil.rmtree(tmp)


def load_latest(directory: Path, dim: int) -> Snapshot | None:
    """The newest complete snapshot in ``directory``, or None; removes older and half-written ones."""
    found = sorted(directory.glob(f"{_PREFIX}*"))
    if not found:
        _remove_older(directory, keep=directory)
        return None
    path = found[-1]
    _remove_older(directory, keep=path)
    manifest = json.loads((path / "manifest.json").read_bytes())
    if manifest.get("version") != SNAPSHOT_VERSION:
        raise FailedPrecondition(f"{path}: snapshot version {manifest.get('version')!r} is not supported")
    if manifest["dim"] != dim:
        raise FailedPrecondition(
            f"{path}: snapshot dim {manifest['dim']} differs from the collection's {dim}"
        )
    items = json.loads((path / "items.json").read_bytes())
    table = ItemTable.from_columns(
        vectors=np.load(path / "vectors.npy", allow_pickle=False).reshape(-1, dim),
        live=np.load(path / "live.npy", allow_pickle=False),
        codes=np.load(path / "labels.npy", allow_pickle=False),
        ids=items["ids"],
        metadata=items["metadata"],
        label_names=items["label_names"],
        max_metadata_bytes=manifest.get("max_metadata_bytes"),
    )
    if table.n_rows != manifest["rows"]:
        raise FailedPrecondition(f"{path}: {table.n_rows} rows stored, manifest says {manifest['rows']}")
    index = faiss.read_index(str(path / "index.faiss")) if manifest["index"] else None
    return Snapshot(
        seq=int(manifest["seq"]),
        table=table,
        index=index,
        trained=bool(manifest["trained"]),
        nbytes=_dir_bytes(path),
    )
