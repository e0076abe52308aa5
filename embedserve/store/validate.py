"""Checks on write batches and queries, raised before anything is written (typed errors naming the item)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from embedserve.errors import InvalidArgument, item_error, quote
from embedserve.limits import MAX_ID_BYTES, Limits
from embedserve.store.spec import CollectionSpec
from embedserve.vectors import dimension_error, prepare


def check_id_list(ids: object, noun: str = "item") -> list[str]:
    """A list of strings (contents unchecked: get/delete answer NotFound for ids that cannot exist)."""
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InvalidArgument("ids must be a list of strings")
    for i, item_id in enumerate(ids):
        if not isinstance(item_id, str):
            raise item_error(
                InvalidArgument, i, f"id must be a string, not {type(item_id).__name__}", noun=noun
            )
    return list(ids)


def check_new_ids(ids: object) -> list[str]:
    """Ids for an upsert: non-empty, at most 256 UTF-8 bytes, no id twice in the batch."""
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise InvalidArgument("ids must be a list of strings")
    ids = list(ids)
    for i, item_id in enumerate(ids):
        # fast path: a non-empty str of <= 64 characters cannot exceed 256 bytes in UTF-8
        if type(item_id) is str and 0 < len(item_id) <= MAX_ID_BYTES // 4:
            continue
        if not isinstance(item_id, str):
            raise item_error(InvalidArgument, i, f"id must be a string, not {type(item_id).__name__}")
        if not item_id:
            raise item_error(InvalidArgument, i, "id is empty")
        try:
            size = len(item_id.encode("utf-8"))
        except UnicodeEncodeError:
            raise item_error(InvalidArgument, i, "id is not valid Unicode text") from None
        if size > MAX_ID_BYTES:
            raise item_error(InvalidArgument, i, f"id is {size} bytes long; the limit is {MAX_ID_BYTES}")
    check_unique(ids)
    return ids


def check_unique(ids: list[str], noun: str = "item") -> None:
    """InvalidArgument naming the first id that appears twice, and where it appeared first."""
    if len(set(ids)) == len(ids):
        return
    first: dict[str, int] = {}
    for i, item_id in enumerate(ids):
        if item_id in first:
            raise item_error(
                InvalidArgument, i, f"id {quote(item_id)} also appears at {noun} {first[item_id]}", noun=noun
            )
        first[item_id] = i


def check_labels(labels: Sequence[object], limits: Limits, noun: str = "item") -> None:
    """Each label a string (within max_label_bytes) or None; the error names the item."""
    for i, label in enumerate(() if labels.count(None) == len(labels) else labels):  # none: no loop
        if label is not None and not isinstance(label, str):
            raise item_error(
                InvalidArgument, i, f"label must be a string or None, not {type(label).__name__}", noun=noun
            )
        if label:
            limits.check_label(label, i, noun=noun)


def check_vectors(vectors: object, n: int, spec: CollectionSpec, noun: str = "item") -> np.ndarray:
    """float32 [n, dim], C-contiguous; rows L2-normalised for cosine. Names the first bad row."""
    dim = spec.dim
    owner = f"collection '{spec.name}'"
    if not isinstance(vectors, np.ndarray) and isinstance(vectors, Iterable):
        # a list of rows: find a short/long row before numpy refuses the ragged list
        vectors = list(vectors)
        for i, row in enumerate(vectors):
            if hasattr(row, "__len__") and len(row) != dim:
                raise dimension_error(i, len(row), dim, owner, noun)
    try:
        x = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise InvalidArgument(f"vectors must be a float32 array [N, {dim}]: {err}") from None
    if n == 0 and x.size == 0:
        return np.empty((0, dim), dtype=np.float32)
    if x.ndim == 2 and x.shape[0] != n:
        raise InvalidArgument(f"got {x.shape[0]} vectors for {n} {noun}s")
    return prepare(x, dim, spec.metric, owner, noun)


def check_upsert(
    spec: CollectionSpec, ids: object, vectors: object, labels: object, metadata: object, limits: Limits
) -> tuple[list[str], np.ndarray, list[str | None], list[dict[str, str] | None], int]:
    """The batch in canonical form and the UTF-8 bytes of its largest metadata; raises
    InvalidArgument (ResourceExhausted for a label or metadata over the limits) on the first bad item."""
    ids = check_new_ids(ids)
    if not isinstance(labels, Sequence) or isinstance(labels, str):
        raise InvalidArgument("labels must be a list of strings or None")
    if not isinstance(metadata, Sequence) or isinstance(metadata, str):
        raise InvalidArgument("metadata must be a list of string maps")
    n_vectors = len(vectors) if hasattr(vectors, "__len__") else -1
    if not len(ids) == n_vectors == len(labels) == len(metadata):
        raise InvalidArgument(
            f"ids, vectors, labels and metadata must have the same length, "
            f"got {len(ids)}, {n_vectors}, {len(labels)} and {len(metadata)}"
        )
    check_labels(labels, limits)
    # copies: later changes to the caller's dicts must not reach the store; an item without
    # metadata holds None (as it does after a snapshot load), not an empty dict of its own
    clean_meta: list[dict[str, str] | None] = []
    meta_bytes = 0
    bare = not any(metadata) and all(m is None or m == {} for m in metadata)  # the common batch
    if bare:
        clean_meta = [None] * len(metadata)
    for i, meta in enumerate(() if bare else metadata):
        if not meta:
            if meta is not None and not isinstance(meta, dict):
                raise item_error(InvalidArgument, i, "metadata must map strings to strings")
            clean_meta.append(None)
        elif isinstance(meta, dict) and all(type(k) is str and type(v) is str for k, v in meta.items()):
            meta_bytes = max(meta_bytes, limits.metadata_size(meta, i))
            clean_meta.append(dict(meta))
        else:
            raise item_error(InvalidArgument, i, "metadata must map strings to strings")
    x = check_vectors(vectors, len(ids), spec)
    # one rule on every path: an empty label means "no label" (clients in languages without
    # optional strings send "" for unset), never a class of its own
    return ids, x, [label or None for label in labels], clean_meta, meta_bytes


def check_predictions(ids: object, labels: list[str], confidence: object) -> tuple[list[str], np.ndarray]:
    """A write-back's ids and confidences (float32 [n]); ValueError unless the three lengths agree
    (a library caller's mistake: the labelling job builds these)."""
    ids = check_id_list(ids)
    conf = np.asarray(confidence, dtype=np.float32).reshape(-1)
    if not (len(ids) == len(labels) == len(conf)):
        raise ValueError("ids, labels and confidence must have the same length")
    return ids, conf


def check_label_assignments(
    ids: object, labels: object, limits: Limits
) -> tuple[list[str], list[str | None]]:
    """SetLabels input: ids (each once) and one label per id, "" or None clearing it."""
    ids = check_id_list(ids)
    if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) != len(ids):
        raise InvalidArgument(f"labels must be a list with one string or None per id ({len(ids)})")
    limits.check_batch(len(ids), "assignments")
    check_unique(ids, noun="assignment")
    check_labels(labels, limits, noun="assignment")
    return ids, [label or None for label in labels]


def check_search(
    spec: CollectionSpec,
    queries: object,
    k: object,
    labels: object,
    exclude: object,
    nprobe: object,
    ef_search: object,
    limits: Limits,
) -> tuple[np.ndarray, set[str] | None, list[str | None] | None]:
    """(queries float32 [q, dim], the label set, the per-query excluded ids) or InvalidArgument."""
    limits.check_k(k)
    limits.check_search_params(nprobe, ef_search)
    n = len(queries) if hasattr(queries, "__len__") else -1
    x = check_vectors(queries, n, spec, noun="query")
    label_set = None
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Iterable):
            raise InvalidArgument("labels must be a set of strings")
        label_set = set(labels)
        if not all(isinstance(label, str) for label in label_set):
            raise InvalidArgument("labels must be a set of strings")
    if exclude is not None:
        if isinstance(exclude, str) or not isinstance(exclude, Sequence) or len(exclude) != len(x):
            raise InvalidArgument(f"exclude must be a list with one id or None per query ({len(x)})")
        exclude = list(exclude)
    return x, label_set, exclude
