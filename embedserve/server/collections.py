"""CollectionService: create, list, describe and delete collections."""

from __future__ import annotations

import logging

from embedserve.errors import EmbedServeError, InvalidArgument, quote
from embedserve.metric import Metric
from embedserve.server.base import Parts, rpc
from embedserve.store import Collection, CollectionSpec, CollectionStats, FailedCollection
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc

log = logging.getLogger("embedserve.server")

STORES = ("", "embedded", "milvus")  # CreateCollectionRequest.store


class CollectionService(pb_grpc.CollectionServiceServicer):
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    @rpc("CreateCollection")
    async def CreateCollection(self, request: pb.CreateCollectionRequest, context) -> pb.CollectionInfo:
        model = self.parts.model(request.model)
        metric = Metric.parse(request.metric) if request.metric else model.manifest.metric
        if request.train_size < 0:
            raise InvalidArgument("train_size must be >= 0")
        if request.store not in STORES:
            raise InvalidArgument(f"store must be embedded, milvus or empty, not {quote(request.store)}")
        spec = CollectionSpec(
            name=request.name,
            model=model.manifest.name,
            dim=model.manifest.dim,
            metric=metric,
            index_spec=request.index_spec or "Flat",
            train_size=request.train_size,
        )
        collection = await self.parts.pools.writing(self.parts.store.create, spec, request.store)
        return await self._info(collection)

    @rpc("ListCollections")
    async def ListCollections(self, request, context) -> pb.ListCollectionsResponse:
        store = self.parts.store
        infos = [await self._info(c) for c in store.list()] + [failed_info(f) for f in store.failed()]
        infos.sort(key=lambda info: info.name)
        return pb.ListCollectionsResponse(collections=infos)

    @rpc("DescribeCollection")
    async def DescribeCollection(self, request: pb.DescribeCollectionRequest, context) -> pb.CollectionInfo:
        store = self.parts.store
        for failed in store.failed():
            if failed.name == request.name:
                return failed_info(failed)
        return await self._info(store.get(request.name))

    @rpc("DeleteCollection")
    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context
    ) -> pb.DeleteCollectionResponse:
        await self.parts.pools.writing(self.parts.store.delete, request.name)
        self.parts.labeller.forget(request.name)
        return pb.DeleteCollectionResponse()

    async def _info(self, collection: Collection) -> pb.CollectionInfo:
        """The collection's entry; if its state cannot be read, an entry saying why (never a failed call)."""
        try:
            stats = await self.parts.pools.reading(collection.stats)
        except Exception as err:
            if not isinstance(err, EmbedServeError):
                log.exception("collection '%s': stats failed", collection.spec.name)
            reason = err.message if isinstance(err, EmbedServeError) else f"{type(err).__name__}: {err}"
            info = spec_info(collection.spec)
            info.error = reason[:1000]
            return info
        info = collection_info(collection.spec, stats)
        info.store = collection.backend
        return info


def spec_info(spec: CollectionSpec) -> pb.CollectionInfo:
    return pb.CollectionInfo(
        name=spec.name,
        model=spec.model,
        dim=spec.dim,
        metric=spec.metric.value,
        index_spec=spec.index_spec,
        train_size=spec.train_size,
        created_at=spec.created_at,
    )


def failed_info(failed: FailedCollection) -> pb.CollectionInfo:
    info = spec_info(failed.spec) if failed.spec is not None else pb.CollectionInfo(name=failed.name)
    info.error = f"failed to load: {failed.error}"
    return info


def collection_info(spec: CollectionSpec, stats: CollectionStats) -> pb.CollectionInfo:
    info = spec_info(spec)
    info.count = stats.count
    info.trained = stats.trained
    info.train_size = stats.train_size
    info.memory_bytes = stats.memory_bytes
    info.labelled_count = stats.labelled_count
    info.predicted_count = stats.predicted_count
    info.gpu = stats.gpu
    return info
