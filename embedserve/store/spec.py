"""What a collection is (its spec) and the plain values the store hands back."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import NamedTuple, TypedDict

import numpy as np

from embedserve.errors import FailedPrecondition, InvalidArgument, quote
from embedserve.metric import Metric

NAME_RE = r"[A-Za-z0-9_-]{1,64}"
SPEC_VERSION = 1


@dataclass(frozen=True)
class CollectionSpec:
    """A collection's fixed configuration, written once to ``collection.json`` at create."""

    name: str
    model: str  # bundle name the collection embeds with (opaque to the store)
    dim: int
    metric: Metric  # a metric name is accepted and parsed (InvalidArgument if unknown)
    index_spec: str = "Flat"  # FAISS index_factory string
    train_size: int = 0  # 0 = automatic, see embedserve.store.index.auto_train_size
    created_at: float = 0.0  # unix seconds; Store.create fills it

    def __post_init__(self) -> None:
        object.__setattr__(self, "metric", Metric.parse(self.metric))


class SearchOptions(TypedDict, total=False):
    """A search's filters and effort, as every backend's ``search`` takes them (see Collection.search)."""

    labels: set[str] | None
    labelled_only: bool
    predicted: set[str] | None
    min_confidence: float
    exclude: list[str | None] | None
    nprobe: int
    ef_search: int


@dataclass(frozen=True)
class PackedHits:
    """Search results as three flat arrays, without an object per hit (SearchRequest.packed)."""

    counts: list[int]  # hits per query, in query order
    ids: list[str]  # sum(counts) ids: query 0's hits best first, then query 1's, ...
    scores: np.ndarray  # float32 [sum(counts)], parallel to ids

    @classmethod
    def of(cls, hits: list[list[Hit]]) -> PackedHits:
        return cls(
            [len(row) for row in hits],
            [h.id for row in hits for h in row],
            np.asarray([h.score for row in hits for h in row], dtype=np.float32),
        )


class Hit(NamedTuple):
    """One search result. ``score``: cosine/ip similarity (higher closer), l2 squared distance (lower closer).

    A NamedTuple, not a frozen dataclass: a 64-query search builds hundreds per request, and a
    frozen dataclass takes ~0.5 us more to build (each field set through object.__setattr__)."""

    id: str
    score: float
    label: str | None
    metadata: dict[str, str]
    predicted_label: str | None = None  # written back by label propagation
    confidence: float = 0.0  # of predicted_label


@dataclass(frozen=True)
class StoredItem:
    """An item as stored; ``vector`` is float32 [dim] (L2-normalised for cosine) or None if not asked for."""

    id: str
    label: str | None
    metadata: dict[str, str]
    vector: np.ndarray | None
    predicted_label: str | None = None
    confidence: float = 0.0


@dataclass(frozen=True)
class LabelResult:
    """What a SetLabels did: items given a label (or a new one), labels cleared, items unchanged."""

    labelled: int
    cleared: int
    unchanged: int


def label_changes(old: list[str | None], new: list[str | None]) -> tuple[list[int], LabelResult]:
    """Which assignments change an item's label (positions), and the SetLabels counts."""
    changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    return changed, LabelResult(
        labelled=sum(new[i] is not None for i in changed),
        cleared=sum(new[i] is None for i in changed),
        unchanged=len(new) - len(changed),
    )


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    replaced: int


@dataclass(frozen=True)
class CollectionStats:
    count: int
    labelled_count: int
    predicted_count: int
    trained: bool
    train_size: int
    memory_bytes: int
    gpu: bool


def check_name(name: object) -> str:
    """The collection name, or InvalidArgument if it does not fullmatch NAME_RE."""
    if not isinstance(name, str) or re.fullmatch(NAME_RE, name) is None:
        raise InvalidArgument(
            f"collection name {quote(name)} is invalid: use 1-64 characters from A-Z a-z 0-9 _ -"
        )
    return name


def check_spec_fields(spec: CollectionSpec) -> None:
    """Checks that need no FAISS (the index_spec itself is checked in embedserve.store.index)."""
    check_name(spec.name)
    if not isinstance(spec.model, str):
        raise InvalidArgument(f"collection '{spec.name}': model must be a string")
    if isinstance(spec.dim, bool) or not isinstance(spec.dim, int) or spec.dim < 1:
        raise InvalidArgument(f"collection '{spec.name}': dim must be a positive integer, got {spec.dim!r}")
    if not isinstance(spec.index_spec, str) or not spec.index_spec:
        raise InvalidArgument(f"collection '{spec.name}': index_spec must be a non-empty string")
    if isinstance(spec.train_size, bool) or not isinstance(spec.train_size, int) or spec.train_size < 0:
        raise InvalidArgument(f"collection '{spec.name}': train_size must be >= 0, got {spec.train_size!r}")


def spec_to_json(spec: CollectionSpec) -> bytes:
    """``collection.json`` contents: the spec fields plus a format ``version``."""
    doc = {"version": SPEC_VERSION, **asdict(spec), "metric": spec.metric.value}
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def spec_from_json(data: bytes, where: str) -> CollectionSpec:
    doc = json.loads(data)
    version = doc.pop("version", None)
    if version != SPEC_VERSION:
        raise FailedPrecondition(f"{where}: collection.json version {version!r} is not supported")
    return CollectionSpec(**doc)
