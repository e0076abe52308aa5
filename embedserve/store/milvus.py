"""Collections that live in Milvus: the second store backend (``embedserve serve --milvus-uri``).

``MilvusStore`` and ``MilvusCollection`` answer the calls the server makes on ``Store`` and
``Collection`` with the same semantics (upsert replaces by id, all-or-nothing batches, NotFound
naming the first unknown id, label filters, metadata, predictions beside labels), validated by
the same rules (``embedserve.store.validate``) before Milvus sees anything. ``RoutedStore`` puts
them beside the embedded FAISS store: collections already on disk keep loading from it, new ones
are created in Milvus.

Mapping (one Milvus collection per embedserve collection):

    name        "es_" + the name with "_" → "__" and "-" → "_d" (Milvus allows [A-Za-z0-9_])
    spec        collection property "embedserve.spec" (the JSON of collection.json)
    fields      id VARCHAR primary key; vector FLOAT_VECTOR(dim); label VARCHAR ("" = none);
                predicted_label VARCHAR; confidence FLOAT; serial INT64 (which content an id
                holds: a prediction lands only on the content it was made for); metadata JSON
    metric      cosine → COSINE, ip → IP, l2 → L2 (squared, as FAISS's)
    index_spec  Flat → FLAT; HNSW<M>[,Flat] → HNSW (M, efConstruction 40 as FAISS);
                IVF<n>,Flat → IVF_FLAT; IVF<n>,SQ8 → IVF_SQ8; IVF<n>,PQ<m>[x8] → IVF_PQ;
                anything else is refused with INVALID_ARGUMENT. nprobe and ef_search map to
                Milvus' search params (ef is raised to k where Milvus needs ef >= k)

Consistency: every request runs at Milvus' "Strong" level, so a search sees every write
acknowledged before it — what the embedded store guarantees; Milvus' cheaper "Bounded" level
would let a client miss its own last write. Durability is Milvus' (its log); ``snapshot`` and
``maintain`` have nothing to do here. Errors from Milvus map to typed codes (``_milvus_error``).
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, Unpack

import numpy as np

from embedserve.errors import (
    AlreadyExists,
    EmbedServeError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    item_error,
    quote,
)
from embedserve.limits import DEFAULT_LIMITS, MAX_ID_BYTES, Limits
from embedserve.metric import Metric
from embedserve.store.collection import LabellingView
from embedserve.store.index import VectorIndex
from embedserve.store.spec import (
    CollectionSpec,
    CollectionStats,
    Hit,
    LabelResult,
    PackedHits,
    SearchOptions,
    StoredItem,
    UpsertResult,
    check_name,
    check_spec_fields,
    label_changes,
    spec_from_json,
    spec_to_json,
)
from embedserve.store.store import FailedCollection, found
from embedserve.store.validate import (
    check_id_list,
    check_label_assignments,
    check_predictions,
    check_search,
    check_upsert,
)

log = logging.getLogger("embedserve.store")

PREFIX = "es_"
SPEC_PROPERTY = "embedserve.spec"
CONSISTENCY = "Strong"
METRICS = {Metric.COSINE: "COSINE", Metric.IP: "IP", Metric.L2: "L2"}
ID_CHARS = 1024  # VARCHAR max_length (characters); ids are checked against MAX_ID_BYTES first
ITERATOR_BATCH = 4096
# Milvus searches rows not yet sealed into a segment by brute force, and Milvus Lite seals rarely by
# itself (20,000 x 128 unsealed: 0.7 s a query, 0.05 s once flushed); a flush seals them (and
# builds the index), so one runs in the background every this many written rows
FLUSH_ROWS = 10_000
FIELDS = ["id", "label", "predicted_label", "confidence", "serial", "metadata"]
T = TypeVar("T")


def milvus_name(name: str) -> str:
    """The Milvus collection of embedserve collection ``name`` (injective: "_" and "-" escaped)."""
    return PREFIX + name.replace("_", "__").replace("-", "_d")


def index_params(spec: CollectionSpec) -> tuple[str, dict[str, int]]:
    """(Milvus index type, its build params) for a FAISS index_factory string; InvalidArgument if none maps."""
    s = spec.index_spec.replace(" ", "")
    if s == "Flat":
        return "FLAT", {}
    if m := re.fullmatch(r"HNSW(\d+)(,Flat)?", s):
        return "HNSW", {"M": int(m.group(1)), "efConstruction": 40}
    if m := re.fullmatch(r"IVF(\d+),Flat", s):
        return "IVF_FLAT", {"nlist": int(m.group(1))}
    if m := re.fullmatch(r"IVF(\d+),SQ8", s):
        return "IVF_SQ8", {"nlist": int(m.group(1))}
    if m := re.fullmatch(r"IVF(\d+),PQ(\d+)(x8)?", s):
        return "IVF_PQ", {"nlist": int(m.group(1)), "m": int(m.group(2)), "nbits": 8}
    raise InvalidArgument(
        f"collection '{spec.name}': index_spec {quote(spec.index_spec)} has no Milvus equivalent; "
        "use Flat, HNSW<M>, IVF<n>,Flat, IVF<n>,SQ8 or IVF<n>,PQ<m>"
    )


def _literal(value: str) -> str:
    """A string as a Milvus filter literal."""
    return json.dumps(value, ensure_ascii=False)


def _in(field: str, values: list[str] | set[str]) -> str:
    return f"{field} in [{', '.join(_literal(v) for v in sorted(values))}]"


def _milvus_error(err: Exception, what: str) -> EmbedServeError:
    """A pymilvus error as a typed one: bad parameters are INVALID_ARGUMENT, a missing collection
    NOT_FOUND, everything else (connection, timeouts, Milvus' own trouble) UNAVAILABLE."""
    message = str(getattr(err, "message", "") or err)[:500]
    lowered = message.lower()
    if "not found" in lowered or "not exist" in lowered:
        return NotFound(f"{what}: Milvus: {message}")
    if "invalid" in lowered or "illegal" in lowered or "param" in lowered or "exceed" in lowered:
        return InvalidArgument(f"{what}: Milvus refused it: {message}")
    return Unavailable(f"{what}: Milvus: {message}")


class _LiteNoise(logging.Filter):
    """Milvus Lite serves pymilvus from a gRPC server in this process, without every method pymilvus
    calls: its query iterator asks for a timestamp (AllocTimestamp), gets "not implemented", and
    carries on with a client-side one. Drop that traceback and warning, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "grpc._server" and record.exc_info and record.exc_info[2] is not None:
            tb = record.exc_info[2]
            while tb.tb_next is not None:
                tb = tb.tb_next
            return "pymilvus" not in tb.tb_frame.f_code.co_filename
        return not (record.name.startswith("pymilvus") and "mvccTs" in record.getMessage())


def _quiet_lite() -> None:
    noise = _LiteNoise()
    for name in ("grpc._server", "pymilvus.client.iterator.query_iterator"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _LiteNoise) for f in logger.filters):
            logger.addFilter(noise)


class _Milvus:
    """One MilvusClient, its calls turned into typed errors."""

    def __init__(self, uri: str, token: str = "") -> None:
        try:
            from pymilvus import MilvusClient
        except ModuleNotFoundError as err:
            raise FailedPrecondition(
                f"Milvus at {uri} needs the milvus extra: pip install 'embedserve[milvus]' ({err})"
            ) from None

        if "://" not in uri:  # a Milvus Lite file
            _quiet_lite()
        self.uri = uri
        try:
            self.client = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
        except Exception as err:
            raise Unavailable(f"cannot connect to Milvus at {uri}: {str(err)[:300]}") from None

    def __call__(self, what: str, method: str, *args: Any, **kw: Any) -> Any:
        try:
            return getattr(self.client, method)(*args, **kw)
        except EmbedServeError:
            raise
        except Exception as err:  # pymilvus raises MilvusException and grpc errors
            raise _milvus_error(err, what) from None

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            log.exception("closing the Milvus client")


class MilvusCollection:
    """One collection in Milvus (see the module docstring)."""

    backend = "milvus"

    def __init__(self, milvus: _Milvus, spec: CollectionSpec, limits: Limits) -> None:
        self.spec = spec
        self.limits = limits
        self._m = milvus
        self._name = milvus_name(spec.name)
        self._what = f"collection '{spec.name}'"
        self._write_lock = threading.Lock()  # read-modify-write calls (counts, label changes) one at a time
        self._closed: tuple[type[EmbedServeError], str] | None = None
        self._serial = time.time_ns()
        self.vectors_version = 0
        self._unflushed = 0
        self._flushing = threading.Lock()
        self._count = self._count_where("")
        self._label_names = self._labels_in_use()

    # --- writes ------------------------------------------------------------------------------
    def upsert(
        self,
        ids: list[str],
        vectors: np.ndarray,
        labels: list[str | None],
        metadata: list[dict[str, str]] | list[dict[str, str] | None],
    ) -> UpsertResult:
        ids, x, labels, clean_meta, _ = check_upsert(self.spec, ids, vectors, labels, metadata, self.limits)
        with self._writing():
            if not ids:
                return UpsertResult(0, 0)
            replaced = len(self._existing(ids))
            rows = [
                {
                    "id": item_id,
                    "vector": x[i],
                    "label": labels[i] or "",
                    "predicted_label": "",  # new content: an old prediction does not describe it
                    "confidence": 0.0,
                    "serial": self._next_serial(),
                    "metadata": clean_meta[i] or {},
                }
                for i, item_id in enumerate(ids)
            ]
            self._m(self._what, "upsert", self._name, rows)
            self._count += len(ids) - replaced
            self.vectors_version += 1
            self._label_names.update(label for label in labels if label)
            self._wrote(len(ids))
        return UpsertResult(len(ids) - replaced, replaced)

    def delete(self, ids: list[str], allow_missing: bool = False) -> int:
        ids = check_id_list(ids)
        with self._writing():
            found = self._existing(ids)
            if not allow_missing:
                self._check_all_found(ids, found)
            gone = [x for x in dict.fromkeys(ids) if x in found]
            if not gone:
                return 0
            self._m(self._what, "delete", self._name, ids=gone)
            self._count -= len(gone)
            self.vectors_version += 1
        return len(gone)

    def set_labels(self, ids: list[str], labels: list[str | None]) -> LabelResult:
        ids, labels = check_label_assignments(ids, labels, self.limits)
        with self._writing():
            current = self._rows(ids, ["label"])
            self._check_all_found(ids, current, noun="assignment")
            changed, result = label_changes([current[x]["label"] or None for x in ids], labels)
            if changed:
                rows = [{"id": ids[i], "label": labels[i] or ""} for i in changed]
                self._m(self._what, "upsert", self._name, rows, partial_update=True)
                self._label_names.update(label for i in changed if (label := labels[i]))
        return result

    def set_predictions(
        self,
        ids: list[str],
        labels: list[str],
        confidence: np.ndarray,
        *,
        replace: bool = True,
        made_for: tuple[np.ndarray, int] | None = None,
    ) -> int:
        """As ``Collection.set_predictions``: a prediction lands only on the content it was made for."""
        ids, confidence = check_predictions(ids, labels, confidence)
        with self._writing():
            current = self._rows(ids, ["serial"])
            if made_for is not None and made_for[1] != self.vectors_version:
                then = made_for[0]
                keep = [i for i, x in enumerate(ids) if x in current and current[x]["serial"] == int(then[i])]
            else:
                keep = [i for i, x in enumerate(ids) if x in current]
            rows = [
                {"id": ids[i], "predicted_label": labels[i], "confidence": float(confidence[i])} for i in keep
            ]
            if replace:
                keeping = {ids[i] for i in keep}
                stale = [
                    r["id"]
                    for r in self._iterate(['predicted_label != ""'], ["id"])
                    if r["id"] not in keeping
                ]
                rows += [{"id": x, "predicted_label": "", "confidence": 0.0} for x in stale]
            for start in range(0, len(rows), ITERATOR_BATCH):
                self._m(
                    self._what,
                    "upsert",
                    self._name,
                    rows[start : start + ITERATOR_BATCH],
                    partial_update=True,
                )
        return len(keep)

    # --- reads -------------------------------------------------------------------------------
    def get(
        self, ids: list[str], include_vector: bool = False, allow_missing: bool = False
    ) -> list[StoredItem]:
        ids = check_id_list(ids)
        self._check_open()
        rows = self._rows(ids, FIELDS + (["vector"] if include_vector else []))
        if not allow_missing:
            self._check_all_found(ids, rows)
        return [self._item(rows[x], include_vector) for x in ids if x in rows]

    def vectors_of(self, ids: list[str]) -> np.ndarray:
        ids = check_id_list(ids)
        self._check_open()
        rows = self._rows(ids, ["vector"])
        self._check_all_found(ids, rows)
        return np.asarray([rows[x]["vector"] for x in ids], dtype=np.float32).reshape(len(ids), self.spec.dim)

    def search_now(
        self, queries: np.ndarray, k: int, packed: bool = False, **options: Unpack[SearchOptions]
    ) -> list[list[Hit]] | PackedHits | None:
        """Never: a Milvus search is a network call, so it always goes through the search pool."""
        return None

    def search_packed(self, queries: np.ndarray, k: int, **options: Unpack[SearchOptions]) -> PackedHits:
        """``search``'s hits as PackedHits (Milvus returns rows; they are packed here)."""
        return PackedHits.of(self.search(queries, k, **options))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        labels: set[str] | None = None,
        labelled_only: bool = False,
        predicted: set[str] | None = None,
        min_confidence: float = 0.0,
        exclude: list[str | None] | None = None,
        nprobe: int = 0,
        ef_search: int = 0,
    ) -> list[list[Hit]]:
        x, label_set, exclude = check_search(
            self.spec, queries, k, labels, exclude, nprobe, ef_search, self.limits
        )
        if not len(x):
            return []
        self._check_open()
        clauses = []
        if label_set is not None:
            label_set.discard("")
            if not label_set:
                return [[] for _ in range(len(x))]
            clauses.append(_in("label", label_set))
        elif labelled_only:
            clauses.append('label != ""')
        if predicted is not None:
            wanted = set(predicted) - {""}
            if not wanted:  # no item has the empty prediction: nothing qualifies
                return [[] for _ in range(len(x))]
            clauses.append(_in("predicted_label", wanted))
            if min_confidence > 0:
                clauses.append(f"confidence >= {float(min_confidence)!r}")
        limit = k + 1 if exclude is not None and any(e is not None for e in exclude) else k
        params: dict[str, int] = {}
        if nprobe:
            params["nprobe"] = nprobe
        if ef_search or self.spec.index_spec.startswith("HNSW"):
            params["ef"] = max(ef_search, limit)
        results = self._m(
            self._what,
            "search",
            self._name,
            data=list(x),
            limit=limit,
            filter=" and ".join(clauses),
            output_fields=FIELDS,
            search_params={"metric_type": METRICS[self.spec.metric], "params": params},
            consistency_level=CONSISTENCY,
        )
        out = []
        for i, hits in enumerate(results):
            skip = exclude[i] if exclude is not None else None
            row = [self._hit(h) for h in hits if h["entity"]["id"] != skip]
            out.append(row[:k])
        return out

    def labelling_view(self) -> LabellingView:
        self._check_open()
        version = self.vectors_version
        ids, vectors, labels, serials = [], [], [], []
        for row in self._iterate([], ["id", "vector", "label", "serial"]):
            ids.append(row["id"])
            vectors.append(row["vector"])
            labels.append(row["label"])
            serials.append(row["serial"])
        names = sorted({label for label in labels if label})
        code = {name: i for i, name in enumerate(names)}
        return LabellingView(
            ids=ids,
            vectors=np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.spec.dim),
            label_codes=np.asarray([code.get(label, -1) for label in labels], dtype=np.int32),
            label_names=names,
            serials=np.asarray(serials, dtype=np.int64),
            version=version,
        )

    def all_ids(self) -> set[str]:
        """Every id stored (one pass of Milvus' query iterator)."""
        self._check_open()
        return {row["id"] for row in self._iterate([], ["id"])}

    @property
    def size(self) -> int:
        """Live items, as this server last counted them (no Milvus call: admission reads it on the loop)."""
        return self._count

    @property
    def label_names_count(self) -> int:
        return len(self._label_names)

    def max_item_bytes(self, *, metadata: bool) -> int:
        limits = self.limits
        size = MAX_ID_BYTES + 2 * limits.max_label_bytes + 8
        if metadata:
            size += limits.max_metadata_bytes + 4 * limits.max_metadata_entries
        return size

    def stats(self) -> CollectionStats:
        self._check_open()
        self._count = self._count_where("")
        return CollectionStats(
            count=self._count,
            labelled_count=self._count_where('label != ""'),
            predicted_count=self._count_where('predicted_label != ""'),
            trained=True,
            train_size=0,
            memory_bytes=0,  # held by Milvus, not by this server
            gpu=False,
        )

    def snapshot(self) -> None:
        """Nothing to do: Milvus keeps its own log."""

    def maintain(self) -> None:
        """Nothing to do: Milvus builds and compacts its indexes itself."""

    def close(self, *, deleted: bool = False) -> None:
        self._closed = (
            (NotFound, f"collection '{self.spec.name}' not found")
            if deleted
            else (Unavailable, f"collection '{self.spec.name}' is closed")
        )

    # --- internals ---------------------------------------------------------------------------
    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._write_lock:
            self._check_open()
            yield

    def _wrote(self, rows: int) -> None:
        """Count written rows; past FLUSH_ROWS, seal them with a flush in the background."""
        self._unflushed += rows
        if self._unflushed < FLUSH_ROWS or not self._flushing.acquire(blocking=False):
            return
        self._unflushed = 0

        def flush() -> None:
            try:
                self._m(self._what, "flush", self._name)
            except EmbedServeError as err:  # an optimisation: the rows are written either way
                log.warning("collection '%s': Milvus flush failed: %s", self.spec.name, err.message)
            finally:
                self._flushing.release()

        threading.Thread(target=flush, name=f"milvus-flush-{self.spec.name}", daemon=True).start()

    def _next_serial(self) -> int:
        self._serial = max(self._serial + 1, time.time_ns())
        return self._serial

    def _rows(self, ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        """The stored rows of ``ids`` by id (missing ids are absent)."""
        out: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), ITERATOR_BATCH):
            chunk = unique[start : start + ITERATOR_BATCH]
            rows = self._m(
                self._what,
                "query",
                self._name,
                filter=_in("id", chunk),
                output_fields=["id", *fields],
                consistency_level=CONSISTENCY,
            )
            out.update((row["id"], row) for row in rows)
        return out

    def _existing(self, ids: list[str]) -> set[str]:
        return set(self._rows(ids, []))

    def _check_all_found(self, ids: list[str], found: Any, noun: str = "item") -> None:
        for i, item_id in enumerate(ids):
            if item_id not in found:
                raise item_error(
                    NotFound, i, f"id {quote(item_id)} not found in collection '{self.spec.name}'", noun=noun
                )

    def _count_where(self, expr: str) -> int:
        rows = self._m(
            self._what,
            "query",
            self._name,
            filter=expr,
            output_fields=["count(*)"],
            consistency_level=CONSISTENCY,
        )
        return int(rows[0]["count(*)"]) if rows else 0

    def _labels_in_use(self) -> set[str]:
        return {row["label"] for row in self._iterate(['label != ""'], ["label"])}

    def _iterate(self, clauses: list[str], fields: list[str]) -> Iterator[dict[str, Any]]:
        it = self._m(
            self._what,
            "query_iterator",
            self._name,
            batch_size=ITERATOR_BATCH,
            filter=" and ".join(clauses),
            output_fields=fields,
            consistency_level=CONSISTENCY,
        )
        try:
            while True:
                try:
                    batch = it.next()
                except Exception as err:
                    raise _milvus_error(err, self._what) from None
                if not batch:
                    return
                yield from batch
        finally:
            it.close()

    def _item(self, row: dict[str, Any], include_vector: bool) -> StoredItem:
        return StoredItem(
            row["id"],
            row["label"] or None,
            dict(row["metadata"] or {}),
            np.asarray(row["vector"], dtype=np.float32) if include_vector else None,
            row["predicted_label"] or None,
            float(row["confidence"]) if row["predicted_label"] else 0.0,
        )

    def _hit(self, hit: dict[str, Any]) -> Hit:
        e = hit["entity"]
        return Hit(
            e["id"],
            float(hit["distance"]),
            e["label"] or None,
            dict(e["metadata"] or {}),
            e["predicted_label"] or None,
            float(e["confidence"]) if e["predicted_label"] else 0.0,
        )

    def _check_open(self) -> None:
        if self._closed is not None:
            cls, message = self._closed
            raise cls(message)


class MilvusStore:
    """The collections in one Milvus (``uri``: ``./file.db`` for Milvus Lite, ``http://host:19530``)."""

    backend = "milvus"

    def __init__(self, uri: str, *, token: str = "", limits: Limits = DEFAULT_LIMITS) -> None:
        self.uri = uri
        self._token = token
        self.limits = limits
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._m: _Milvus | None = None
        self._collections: dict[str, MilvusCollection] = {}
        self._failed: dict[str, FailedCollection] = {}
        self._busy: set[str] = set()
        self._closed = False

    def open(self) -> None:

        with self._open_lock:
            if self._m is not None:
                return
            if self._closed:
                raise Unavailable("the store is closed")
            milvus = _Milvus(self.uri, self._token)
            loaded, failed = {}, {}
            for name in milvus("listing collections", "list_collections"):
                if not name.startswith(PREFIX):
                    continue  # not ours: other applications may share the Milvus
                spec = None
                try:
                    described = milvus(f"Milvus collection '{name}'", "describe_collection", name)
                    raw = (described.get("properties") or {}).get(SPEC_PROPERTY)
                    if raw is None:
                        raise FailedPrecondition(
                            f"Milvus collection '{name}' has no {SPEC_PROPERTY} property"
                        )
                    spec = spec_from_json(raw.encode(), f"Milvus collection '{name}'")
                    if milvus_name(spec.name) != name:
                        raise FailedPrecondition(
                            f"Milvus collection '{name}' holds the spec of '{spec.name}'"
                        )
                    milvus(f"collection '{spec.name}'", "load_collection", name)
                    loaded[spec.name] = MilvusCollection(milvus, spec, self.limits)
                except EmbedServeError as err:
                    key = spec.name if spec is not None else name
                    failed[key] = FailedCollection(key, spec, err.message[:1000])
                    log.error("Milvus collection '%s' failed to load: %s", name, err.message)
            with self._lock:
                self._m, self._collections, self._failed = milvus, loaded, failed
            log.info("Milvus store at %s: %d collection(s)", self.uri, len(loaded))

    def _milvus(self) -> _Milvus:
        if self._m is None:
            self.open()
        assert self._m is not None
        return self._m

    def validate(self, spec: CollectionSpec) -> None:
        """Refuse a spec before anything is created (the same bounds as the FAISS store, then the mapping)."""
        check_spec_fields(spec)
        VectorIndex(spec, self.limits)
        index_params(spec)

    def create(self, spec: CollectionSpec) -> MilvusCollection:
        import dataclasses

        from pymilvus import DataType

        self.validate(spec)
        if not spec.created_at:
            spec = dataclasses.replace(spec, created_at=time.time())
        m = self._milvus()
        name = spec.name
        with self._lock:
            self._check_not_closed()
            if name in self._collections or name in self._failed or name in self._busy:
                raise AlreadyExists(f"collection '{name}' already exists")
            self._busy.add(name)
        try:
            what = f"collection '{name}'"
            mname = milvus_name(name)
            if m(what, "has_collection", mname):
                raise AlreadyExists(f"collection '{name}' already exists (in Milvus)")
            schema = m.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_CHARS)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dim)
            label_chars = max(1, self.limits.max_label_bytes)
            schema.add_field("label", DataType.VARCHAR, max_length=label_chars)
            schema.add_field("predicted_label", DataType.VARCHAR, max_length=label_chars)
            schema.add_field("confidence", DataType.FLOAT)
            schema.add_field("serial", DataType.INT64)
            schema.add_field("metadata", DataType.JSON)
            index_type, build = index_params(spec)
            params = m.client.prepare_index_params()
            params.add_index("vector", index_type=index_type, metric_type=METRICS[spec.metric], params=build)
            m(
                what,
                "create_collection",
                mname,
                schema=schema,
                index_params=params,
                consistency_level=CONSISTENCY,
                properties={SPEC_PROPERTY: spec_to_json(spec).decode()},
            )
            collection = MilvusCollection(m, spec, self.limits)
            with self._lock:
                self._collections[name] = collection
        finally:
            with self._lock:
                self._busy.discard(name)
        log.info(
            "created collection '%s' in Milvus (%s, dim %d, %s)", name, spec.index_spec, spec.dim, spec.metric
        )
        return collection

    def get(self, name: str) -> MilvusCollection:
        check_name(name)
        self._milvus()
        with self._lock:
            self._check_not_closed()
            collection = self._collections.get(name)
            failed = self._failed.get(name)
        return found(name, collection, failed)

    def has(self, name: str) -> bool:
        self._milvus()
        with self._lock:
            return name in self._collections or name in self._failed or name in self._busy

    def list(self) -> list[MilvusCollection]:
        self._milvus()
        with self._lock:
            self._check_not_closed()
            return [self._collections[n] for n in sorted(self._collections)]

    def failed(self) -> builtins.list[Any]:
        self._milvus()
        with self._lock:
            return [self._failed[n] for n in sorted(self._failed)]

    def delete(self, name: str) -> None:
        check_name(name)
        m = self._milvus()
        with self._lock:
            self._check_not_closed()
            collection = self._collections.pop(name, None)
            failed = self._failed.pop(name, None)
            if collection is None and failed is None:
                raise NotFound(f"collection '{name}' not found")
            self._busy.add(name)
        try:
            if collection is not None:
                with collection._write_lock:  # a write in progress finishes first
                    collection.close(deleted=True)
            m(f"collection '{name}'", "drop_collection", milvus_name(name))
        finally:
            with self._lock:
                self._busy.discard(name)
        log.info("deleted collection '%s' from Milvus", name)

    def maintain(self) -> None:
        """Nothing to do: Milvus maintains its own indexes."""

    def close(self) -> None:
        with self._open_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                collections = list(self._collections.values())
            for collection in collections:
                collection.close()
            if self._m is not None:
                self._m.close()

    def _check_not_closed(self) -> None:
        if self._closed:
            raise Unavailable("the store is closed")


class RoutedStore:
    """The embedded store and a Milvus store behind one interface: collections found in either are
    served from where they are; new collections are created in Milvus. A name is unique across both."""

    def __init__(self, embedded: Any, milvus: MilvusStore) -> None:
        self.embedded = embedded
        self.milvus = milvus
        self.limits = embedded.limits
        self.data_dir = embedded.data_dir

    def open(self) -> None:
        self.embedded.open()
        self.milvus.open()

    def create(self, spec: CollectionSpec, backend: str = "") -> Any:
        """In Milvus, unless ``backend`` is "embedded"."""
        if backend == "embedded":
            if self.milvus.has(spec.name):
                raise AlreadyExists(f"collection '{spec.name}' already exists")
            return self.embedded.create(spec)
        self.milvus.validate(spec)
        if any(c.spec.name == spec.name for c in self.embedded.list()) or any(
            f.name == spec.name for f in self.embedded.failed()
        ):
            raise AlreadyExists(f"collection '{spec.name}' already exists")
        return self.milvus.create(spec)

    def get(self, name: str) -> Any:
        return self._route(name, lambda store: store.get(name))

    def delete(self, name: str) -> None:
        self._route(name, lambda store: store.delete(name))

    def list(self) -> list[Any]:
        return sorted(self.embedded.list() + self.milvus.list(), key=lambda c: c.spec.name)

    def failed(self) -> builtins.list[Any]:
        return sorted(self.embedded.failed() + self.milvus.failed(), key=lambda f: f.name)

    def maintain(self) -> None:
        self.embedded.maintain()

    def close(self) -> None:
        try:
            self.embedded.close()
        finally:
            self.milvus.close()

    def _route(self, name: str, call: Callable[[Any], T]) -> T:
        check_name(name)
        if self.milvus.has(name):
            return call(self.milvus)
        return call(self.embedded)
