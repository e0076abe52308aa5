"""What a batch job reads: an image folder or a manifest, on any filesystem pyarrow understands.

Every source becomes a Ray Dataset of the same columns (``COLUMNS``), one row per item:

    id        string   the item's id (folder: the path relative to the folder, as `embedserve index`)
    path      string   the file to read (a filesystem path or URI), or null
    data      binary   the encoded image itself (a manifest's bytes column), or null
    text      string   the text to embed (a manifest's text column), or null
    label     string   or null (folder: the parent folder's name with --label-from-dir)
    metadata  string   a JSON object of string values (folder: {"path": ...})

Sources:

- a folder (local path or URI: ``s3://bucket/images``): every image file under it, sorted;
- a manifest, by its suffix: ``.csv``, ``.jsonl`` / ``.json`` (one object per line) or
  ``.parquet`` (a file or a folder of ``*.parquet``). Columns: one of ``path`` (relative paths are
  relative to the manifest's folder), ``image`` (the encoded bytes, Parquet only) or ``text``;
  optional ``id`` (default: the path; required with ``image`` or ``text``), ``label``, and
  ``metadata`` (a JSON object, a map or a struct; values become strings).
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
CONTENT_COLUMNS = ("path", "image", "text")
MAX_BLOCK_ROWS = 1000
# Reading and normalising a manifest reserve no CPU: the embedding actors hold the CPUs, and a
# read stage waiting for one would stall the whole job (the actors have nothing to embed)
READ_CPUS = 0
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("data", pa.binary()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("metadata", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


class SourceError(ValueError):
    """The source cannot be read as a folder or manifest: said before any work starts."""


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path in it) for a local path or a URI (s3://, gs://, hdfs://, file://)."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as err:
            raise SourceError(f"{uri}: {err}") from None
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def full_uri(fs: pafs.FileSystem, path: str) -> str:
    """A path of ``fs`` as something ``resolve`` reads back (a URI unless the filesystem is local)."""
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    return f"{fs.type_name}://{path}"


@dataclass
class Source:
    """A planned source: its dataset (``COLUMNS``) and, where known without reading it, its size."""

    description: str
    dataset: Any  # ray.data.Dataset
    total: int | None


def open_source(src: str, *, label_from_dir: bool = False, blocks: int = 8) -> Source:
    """Plan reading ``src`` (see the module docstring); SourceError when it is neither kind.

    ``blocks``: how many pieces to cut the source into at least (each embedding actor works on
    one block at a time, so a source in fewer blocks than actors leaves actors idle)."""
    import ray.data

    fs, path = resolve(src)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"{src}: no such file or folder")
    suffix = posixpath.splitext(path)[1].lower()
    is_dir = info.type == pafs.FileType.Directory
    if is_dir and not _is_parquet_folder(fs, path):
        rows = _folder_rows(fs, path, label_from_dir)
        if not rows:
            raise SourceError(f"{src}: no image files ({', '.join(IMAGE_SUFFIXES)}) under it")
        return Source(
            f"folder {src}", _in_blocks(pa.Table.from_pylist(rows, schema=SCHEMA), blocks), len(rows)
        )
    if suffix not in MANIFEST_SUFFIXES and not is_dir:
        raise SourceError(f"{src}: not a folder, nor a manifest ({', '.join(MANIFEST_SUFFIXES)})")
    base = full_uri(fs, posixpath.dirname(path) if not is_dir else path)
    if is_dir or suffix == ".parquet":
        # Parquet may hold the images themselves: the driver only lists the row groups (footers),
        # Ray tasks read them, one block each (Ray's own reader lists files in a task that needs
        # a CPU, which the embedding actors hold)
        import pyarrow.parquet as pq

        files = [path] if not is_dir else _parquet_files(fs, path)
        pieces, columns, total = [], set(), 0
        for file in files:
            meta = pq.ParquetFile(file, filesystem=fs).metadata
            columns.update(meta.schema.names)
            total += meta.num_rows
            pieces += [{"file": full_uri(fs, file), "row_group": g} for g in range(meta.num_row_groups)]
        if not pieces:
            raise SourceError(f"{src}: no Parquet files")
        content = _content_column(src, columns, binary_ok=True)
        reader = _RowGroupReader(_Normaliser(base, content))
        dataset = ray.data.from_items(pieces, override_num_blocks=len(pieces)).map_batches(
            reader, batch_size=1, batch_format="pyarrow", num_cpus=READ_CPUS
        )
        return Source(f"manifest {src}", dataset, total)
    # CSV and JSON lines hold paths or texts, not images: small enough to read here, whole
    table = _read_text_manifest(fs, path, suffix)
    content = _content_column(src, set(table.column_names), binary_ok=False)
    table = _Normaliser(base, content)(table)
    return Source(f"manifest {src}", _in_blocks(table, blocks), table.num_rows)


def _in_blocks(table: pa.Table, blocks: int) -> Any:
    """A dataset of ``table`` cut into about ``blocks`` blocks of at most MAX_BLOCK_ROWS rows, here:
    a repartition would need CPUs the embedding actors hold."""
    import ray.data

    rows = max(1, min(MAX_BLOCK_ROWS, -(-table.num_rows // max(1, blocks))))
    return ray.data.from_arrow([table.slice(i, rows) for i in range(0, max(table.num_rows, 1), rows)])


def _read_text_manifest(fs: pafs.FileSystem, path: str, suffix: str) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    try:
        with fs.open_input_stream(path) as f:
            if suffix == ".csv":
                # every column as text: ids like "007" stay ids, and a label is never a number
                options = pacsv.ConvertOptions(column_types=_all_strings(fs, path), strings_can_be_null=False)
                return pacsv.read_csv(f, convert_options=options)
            return pajson.read_json(f)
    except pa.ArrowInvalid as err:
        raise SourceError(f"{path}: cannot read as {suffix[1:].upper()}: {err}") from None


def _content_column(src: str, columns: set[str], *, binary_ok: bool) -> str:
    content = [c for c in CONTENT_COLUMNS if c in columns]
    if len(content) != 1:
        raise SourceError(
            f"{src}: a manifest needs exactly one of the columns {', '.join(CONTENT_COLUMNS)}; "
            f"it has {', '.join(sorted(columns)) or 'none'}"
        )
    if content[0] != "path" and "id" not in columns:
        raise SourceError(f"{src}: a manifest with an {content[0]!r} column needs an 'id' column")
    if content[0] == "image" and not binary_ok:
        raise SourceError(f"{src}: image bytes need a Parquet manifest (a binary column)")
    return content[0]


class _RowGroupReader:
    """One (file, row group) → that row group's rows as source COLUMNS (a map_batches function)."""

    def __init__(self, normalise: _Normaliser) -> None:
        self.normalise = normalise

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow.parquet as pq

        fs, where = resolve(batch.column("file")[0].as_py())
        return self.normalise(
            pq.ParquetFile(where, filesystem=fs).read_row_group(batch.column("row_group")[0].as_py())
        )


def _parquet_files(fs: pafs.FileSystem, root: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.endswith(".parquet")
        and not posixpath.basename(i.path).startswith((".", "_"))
    )


def _is_parquet_folder(fs: pafs.FileSystem, path: str) -> bool:
    selector = pafs.FileSelector(path, recursive=False)
    return any(i.path.endswith(".parquet") for i in fs.get_file_info(selector))


def _folder_rows(fs: pafs.FileSystem, root: str, label_from_dir: bool) -> list[dict[str, Any]]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File
        and i.path.lower().endswith(IMAGE_SUFFIXES)
        and not posixpath.basename(i.path).startswith(".")
    )
    rows = []
    for file in files:
        where = full_uri(fs, file)
        rows.append(
            {
                "id": file[len(root) :].lstrip("/"),  # the listing's paths are all under root
                "path": where,
                "data": None,
                "text": None,
                "label": posixpath.basename(posixpath.dirname(file)) if label_from_dir else None,
                "metadata": json.dumps({"path": where}),
            }
        )
    return rows


def _all_strings(fs: pafs.FileSystem, path: str) -> dict[str, pa.DataType]:
    """Every column of a CSV's header as a string column."""
    import csv

    with fs.open_input_stream(path) as f:
        head = f.read(1 << 16).decode("utf-8", "replace").splitlines()
    header = next(csv.reader(head[:1]), [])
    return {name: pa.string() for name in header}


class _Normaliser:
    """A manifest's batch → the source COLUMNS (a Ray Data map_batches function)."""

    def __init__(self, base: str, content: str) -> None:
        self.base = base
        self.content = content

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        names = set(batch.column_names)

        def column(name: str) -> list[Any]:
            return batch.column(name).to_pylist() if name in names else [None] * n

        paths = [self._path(p) for p in column("path")] if self.content == "path" else [None] * n
        ids = column("id") if "id" in names else column("path")
        ids = [None if x is None else str(x) for x in ids]
        labels = [None if x is None or x == "" else str(x) for x in column("label")]
        metadata = [_metadata_json(m) for m in column("metadata")]
        if "metadata" not in names:
            metadata = [json.dumps({"path": p}) if p else "{}" for p in paths]
        data = column("image") if self.content == "image" else [None] * n
        texts = column("text") if self.content == "text" else [None] * n
        return pa.table(
            {
                "id": pa.array(ids, pa.string()),
                "path": pa.array(paths, pa.string()),
                "data": pa.array(data, pa.binary()),
                "text": pa.array([None if t is None else str(t) for t in texts], pa.string()),
                "label": pa.array(labels, pa.string()),
                "metadata": pa.array(metadata, pa.string()),
            }
        )

    def _path(self, path: Any) -> str | None:
        if path is None or path == "":
            return None
        path = str(path)
        if "://" in path or path.startswith("/"):
            return path
        if "://" in self.base:
            return f"{self.base.rstrip('/')}/{path}"
        return os.path.join(self.base, path)


def _metadata_json(value: Any) -> str:
    """A manifest's metadata cell (JSON text, a map as key/value pairs, a struct as a dict) → JSON
    text of an object with string values ("" for none; a cell that is not an object is kept
    as-is so the item's error can say what it was)."""
    if value is None or value == "":
        return "{}"
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # a map column: [(key, value), ...]
        value = dict(value)
    if isinstance(value, dict):
        return json.dumps({str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()})
    return json.dumps(value)
