"""The Milvus sink of a batch job: vectors straight into a Milvus collection, mapped exactly as a
server started with ``--milvus-uri`` maps its collections (``embedserve.store.milvus``), so the
collection a job fills is one that server serves as it is.

A Milvus Lite file (``./file.db``) can be open in one process only: the job then writes from its
driver (``in_driver``) and learns which ids are already there once, before it starts; a server
(``http://host:19530``) takes writes from every writer actor at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from embedserve.batch.sinks import Rows, SinkError
from embedserve.errors import EmbedServeError, NotFound
from embedserve.models.bundle import Manifest
from embedserve.store.spec import CollectionSpec


@dataclass
class MilvusSink:
    uri: str
    collection: str
    token: str = ""
    _store: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    @property
    def in_driver(self) -> bool:
        """A Milvus Lite file: one process only."""
        return "://" not in self.uri

    def describe(self) -> str:
        return f"Milvus collection '{self.collection}' at {self.uri}"

    def _collection(self) -> Any:
        if self._store is None:
            from embedserve.store.milvus import MilvusStore

            self._store = MilvusStore(self.uri, token=self.token)
        return self._store.get(self.collection)

    def prepare(self, manifest: Manifest) -> None:
        from embedserve.store.milvus import MilvusStore

        try:
            if self._store is None:
                self._store = MilvusStore(self.uri, token=self.token)
            try:
                collection = self._store.get(self.collection)
            except NotFound:
                spec = CollectionSpec(self.collection, manifest.name, manifest.dim, manifest.metric)
                collection = self._store.create(spec)
        except EmbedServeError as err:
            raise SinkError(f"{self.describe()}: {err.message}") from None
        if collection.spec.dim != manifest.dim:
            raise SinkError(
                f"{self.describe()} holds {collection.spec.dim}-d vectors; "
                f"model '{manifest.name}' makes {manifest.dim}-d"
            )

    def all_ids(self) -> set[str]:
        """Every id the collection holds (how a driver-side sink resumes)."""
        return self._collection().all_ids()

    def existing(self, ids: list[str]) -> set[str]:
        return {item.id for item in self._collection().get(ids, allow_missing=True)}

    def write(self, rows: Rows) -> list[tuple[int, str]]:
        collection = self._collection()
        refused: list[tuple[int, str]] = []
        positions = list(range(len(rows.ids)))
        while positions:  # an item the store refuses is taken out, the rest written again
            batch = rows.take(positions)
            try:
                collection.upsert(batch.ids, batch.vectors, batch.labels, batch.metadata)
                break
            except EmbedServeError as err:
                if err.index is None or not 0 <= err.index < len(positions):
                    raise SinkError(f"{self.describe()}: {err.message}") from None
                refused.append((positions[err.index], err.detail))
                del positions[err.index]
        return refused

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
