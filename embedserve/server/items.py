"""IndexService: writing and reading items of a collection (Upsert, UpsertStream, Delete, Get)."""

from __future__ import annotations

from embedserve.errors import EmbedServeError, InvalidArgument
from embedserve.server import admission
from embedserve.server.base import Parts, deadline_of, rpc
from embedserve.server.contents import item_content, resolve, vector_batch
from embedserve.store import Collection, UpsertResult
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc
from embedserve.wire import array_to_tensor

MAX_TRUNCATED_IDS = 1000  # ids of truncated items one UpsertResponse lists (the count is always whole)


class IndexService(pb_grpc.IndexServiceServicer):
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def _upsert(self, request: pb.UpsertRequest, context) -> tuple[UpsertResult, list[str]]:
        """Embed and write one batch: all of it, or (on any error) nothing. Returns the result and the
        ids of the items whose text was truncated.

        A batch of raw vectors (batch jobs, the common ingest) is read and written in one call in
        the write pool: nothing per item runs on the event loop, which other RPCs share."""
        parts = self.parts
        collection = parts.store.get(request.collection)
        items = request.items
        # the first item says which path (a mixed batch is rare: it falls back after one hop)
        if items and items[0].WhichOneof("content") == "vector":
            result = await parts.pools.writing(_upsert_vectors, collection, items)
            if result is not None:
                parts.metrics.items.labels(collection.spec.name, "upsert").inc(len(items))
                return result, []
        contents = [item_content(item, i) for i, item in enumerate(items)]
        resolved = await resolve(
            contents,
            dim=collection.spec.dim,
            owner=f"collection '{collection.spec.name}'",
            model=parts.model_of(collection),
            model_name=collection.spec.model,
            collection=None,
            deadline=deadline_of(context),
            read=parts.pools.reading,
        )
        labels = [item.label if item.HasField("label") else None for item in items]
        metadata = [dict(item.metadata) for item in items]
        ids = [item.id for item in items]
        result = await parts.pools.writing(collection.upsert, ids, resolved.vectors, labels, metadata)
        parts.metrics.items.labels(collection.spec.name, "upsert").inc(len(items))
        return result, [ids[i] for i in resolved.truncated]

    @rpc("Upsert", admit=admission.upsert)
    async def Upsert(self, request: pb.UpsertRequest, context) -> pb.UpsertResponse:
        result, truncated = await self._upsert(request, context)
        return _response(result.inserted, result.replaced, 1, truncated, len(truncated))

    @rpc("UpsertStream", admit=admission.upsert, stream=True)
    async def UpsertStream(self, request_iterator, context) -> pb.UpsertResponse:
        inserted = replaced = batches = n_truncated = 0
        truncated: list[str] = []
        try:
            # each message arrives decoded and admitted, or its error is raised by the iteration
            async for request in request_iterator:
                result, cut = await self._upsert(request, context)
                inserted += result.inserted
                replaced += result.replaced
                batches += 1
                n_truncated += len(cut)
                truncated.extend(cut[: MAX_TRUNCATED_IDS - len(truncated)])
        except EmbedServeError as err:
            raise _in_batch(err, batches, inserted + replaced) from None
        return _response(inserted, replaced, batches, truncated, n_truncated)

    @rpc("Delete", admit=admission.delete)
    async def Delete(self, request: pb.DeleteRequest, context) -> pb.DeleteResponse:
        collection = self.parts.store.get(request.collection)
        deleted = await self.parts.pools.writing(collection.delete, list(request.ids), request.allow_missing)
        self.parts.metrics.items.labels(collection.spec.name, "delete").inc(deleted)
        return pb.DeleteResponse(deleted=deleted)

    @rpc("Get", admit=admission.get)
    async def Get(self, request: pb.GetRequest, context) -> pb.GetResponse:
        collection = self.parts.store.get(request.collection)
        if not request.ids:
            raise InvalidArgument("ids is empty")
        items = await self.parts.pools.reading(
            collection.get, list(request.ids), request.include_vector, request.allow_missing
        )
        out = []
        for item in items:
            stored = pb.StoredItem(id=item.id, metadata=item.metadata)
            if item.label is not None:
                stored.label = item.label
            if item.predicted_label is not None:
                stored.predicted_label = item.predicted_label
                stored.confidence = item.confidence
            if item.vector is not None:
                stored.vector.CopyFrom(array_to_tensor(item.vector))
            out.append(stored)
        return pb.GetResponse(items=out)


def _upsert_vectors(collection: Collection, items) -> UpsertResult | None:
    """Write a batch whose items all hold raw vectors of the collection's dim; None (nothing
    written) for any other batch."""
    vectors = vector_batch(items, collection.spec.dim)
    if vectors is None:
        return None
    ids = [item.id for item in items]
    labels = [item.label or None for item in items]  # unset and "" are both "no label"
    metadata = [dict(m) if (m := item.metadata) else {} for item in items]
    return collection.upsert(ids, vectors, labels, metadata)


def _in_batch(err: EmbedServeError, batch: int, committed: int) -> EmbedServeError:
    """``err`` re-addressed to message ``batch`` of a stream, saying what was committed before it."""
    return type(err)(
        f"batch {batch}: {err.message} ({batch} earlier batches, {committed} items, were committed)"
    )


def _response(
    inserted: int, replaced: int, batches: int, truncated_ids: list[str], truncated: int
) -> pb.UpsertResponse:
    return pb.UpsertResponse(
        upserted=inserted + replaced,
        inserted=inserted,
        replaced=replaced,
        batches=batches,
        truncated=truncated,
        truncated_ids=truncated_ids,
    )
