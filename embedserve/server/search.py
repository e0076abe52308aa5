"""SearchService: Search and Classify (k-NN against a collection or an in-request support set)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from embedserve import knn
from embedserve.errors import InvalidArgument, item_error
from embedserve.limits import DEFAULT_SEARCH_K
from embedserve.metric import Metric
from embedserve.server import admission
from embedserve.server.base import Parts, deadline_of, rpc
from embedserve.server.contents import (
    IdRef,
    Resolved,
    query_content,
    query_contents,
    query_matrix,
    resolve,
    vector_batch,
)
from embedserve.store import Collection, Hit, PackedHits
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc
from embedserve.wire import LE_FLOAT32


def _add_hits(out, hits: list[Hit], include_metadata: bool = True) -> None:
    """Append ``hits`` to a repeated Hit field, each built in place (``add``: no message copied)."""
    for hit in hits:
        h = out.add(id=hit.id, score=hit.score)
        if hit.label is not None:
            h.label = hit.label
        if hit.predicted_label is not None:
            h.predicted_label = hit.predicted_label
            h.confidence = hit.confidence
        if include_metadata and hit.metadata:
            h.metadata.update(hit.metadata)


class SearchService(pb_grpc.SearchServiceServicer):
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def _search(
        self, collection: Collection, queries: np.ndarray, k: int, packed: bool = False, **options: Any
    ) -> Any:
        """``collection.search``: on the event loop if this call is the only one in flight and the
        search is cheap (``Collection.search_now``), else in the search pool.

        A hand-off to the pool and back costs the loop and the pool thread more CPU (the
        wake-ups, and the two threads taking turns at the GIL) than a 1-query search over
        20,000 x 128 vectors costs FAISS; with nothing else in flight no other call waits
        for the loop meanwhile. A costlier search alone in flight runs in the pool on every
        core (``Pools.reading_alone``); under concurrent calls searches run in the pool
        side by side, one core each."""
        search = collection.search_packed if packed else collection.search
        call = functools.partial(search, queries, k, **options)
        if self.parts.in_flight == 1:
            found = collection.search_now(queries, k, packed=packed, **options)
            if found is not None:
                return found
            return await self.parts.pools.reading_alone(call)
        return await self.parts.pools.reading(call)

    async def _collection_queries(
        self, collection: Collection, request, context
    ) -> tuple[Resolved, list[str | None]]:
        """A Search or Classify request's query vectors [Q, D] for a collection, and per query the
        id to leave out (search by id)."""
        owner = f"collection '{collection.spec.name}'"
        if request.HasField("vectors"):  # one [Q, dim] tensor (admission checked its shape)
            matrix = query_matrix(request.vectors, collection.spec.dim, owner)
            return Resolved(matrix, []), [None] * len(matrix)
        vectors = vector_batch(request.queries, collection.spec.dim, "kind")
        if vectors is not None:  # raw vectors only, each of the collection's dim: one conversion
            return Resolved(vectors, []), [None] * len(vectors)
        contents = query_contents(request)
        resolved = await resolve(
            contents,
            dim=collection.spec.dim,
            owner=owner,
            model=self.parts.model_of(collection),
            model_name=collection.spec.model,
            collection=collection,
            deadline=deadline_of(context),
            read=self.parts.pools.reading,
            noun="query",
        )
        exclude = [c.id if isinstance(c, IdRef) else None for c in contents]
        return resolved, exclude

    @rpc("Search", admit=admission.search)
    async def Search(self, request: pb.SearchRequest, context) -> pb.SearchResponse:
        k = request.k or DEFAULT_SEARCH_K  # admitted: in 1..max_k, queries x k within max_results
        params = request.params
        collection = self.parts.store.get(request.collection)
        queries, exclude = await self._collection_queries(collection, request, context)
        found = await self._search(
            collection,
            queries.vectors,
            k,
            packed=request.packed,
            labels=set(request.label_filter) or None,
            predicted=set(request.predicted_label_filter) or None,
            min_confidence=request.min_confidence,
            exclude=exclude,
            nprobe=params.nprobe,
            ef_search=params.ef_search,
        )
        response = pb.SearchResponse(truncated=queries.truncated)
        if isinstance(found, PackedHits):
            response.packed.counts.extend(found.counts)
            response.packed.ids.extend(found.ids)
            response.packed.scores = found.scores.astype(LE_FLOAT32, copy=False).tobytes()
        else:
            for row in found:
                _add_hits(response.results.add().hits, row, request.include_metadata)
        return response

    @rpc("Classify", admit=admission.classify)
    async def Classify(self, request: pb.ClassifyRequest, context) -> pb.ClassifyResponse:
        k = request.k or knn.DEFAULT_K  # admitted
        temperature = request.temperature or knn.DEFAULT_TEMPERATURE
        if not temperature > 0 or not np.isfinite(temperature):
            raise InvalidArgument(f"temperature must be positive, got {request.temperature}")
        if request.collection and request.support:
            raise InvalidArgument("give either a collection or a support set, not both")
        truncated_support: list[int] = []
        if request.collection:
            neighbours, metric, truncated = await self._collection_neighbours(request, k, context)
        elif request.support:
            neighbours, metric, truncated, truncated_support = await self._support_neighbours(
                request, k, context
            )
        else:
            raise InvalidArgument("give a collection or a support set to classify against")
        votes = knn.vote(
            [[h.score for h in row] for row in neighbours],
            [[h.label or "" for h in row] for row in neighbours],  # neighbours are labelled items only
            metric,
            temperature,
        )
        results = []
        for vote, row in zip(votes, neighbours, strict=True):
            result = pb.Classification(has_prediction=vote.label is not None)
            if vote.label is not None:
                result.label = vote.label
                result.confidence = vote.confidence
                result.probabilities.extend(
                    pb.ClassProbability(label=c, probability=p) for c, p in vote.probabilities
                )
            if request.include_neighbors:
                _add_hits(result.neighbors, row)
            results.append(result)
        return pb.ClassifyResponse(results=results, truncated=truncated, truncated_support=truncated_support)

    async def _collection_neighbours(self, request, k, context) -> tuple[list[list[Hit]], Metric, list[int]]:
        collection = self.parts.store.get(request.collection)
        queries, exclude = await self._collection_queries(collection, request, context)
        hits = await self._search(collection, queries.vectors, k, labelled_only=True, exclude=exclude)
        return hits, collection.spec.metric, queries.truncated

    async def _support_neighbours(
        self, request, k, context
    ) -> tuple[list[list[Hit]], Metric, list[int], list[int]]:
        """The k nearest support examples per query, as hits whose id is the example's position;
        the metric; the truncated queries and support examples."""
        support = [
            query_content(ex.example, i, noun="support", allow_id=False)
            for i, ex in enumerate(request.support)
        ]
        labels = [ex.label for ex in request.support]
        for i, label in enumerate(labels):
            if not label:
                raise item_error(InvalidArgument, i, "label is empty", noun="support")
        queries = query_contents(request, allow_id=False)
        needs_model = any(not isinstance(c, np.ndarray) for c in support + queries)
        model = self.parts.model(request.model) if needs_model or request.model else None
        if model is not None:
            dim, metric, owner = model.dim, model.manifest.metric, f"model '{model.name}'"
        else:
            dim, metric, owner = support[0].shape[0], Metric.COSINE, "support 0"  # type: ignore[union-attr]
        metric = Metric.parse(request.metric) if request.metric else metric
        self.parts.config.limits.check_support(len(queries), len(support), dim)
        common = dict(
            dim=dim,
            owner=owner,
            model=model,
            model_name=model.name if model else "",
            collection=None,
            deadline=deadline_of(context),
            read=self.parts.pools.reading,
        )
        support_vecs = await resolve(support, noun="support", **common)  # type: ignore[arg-type]
        query_vecs = await resolve(queries, noun="query", **common)  # type: ignore[arg-type]
        scores, order = await self.parts.pools.reading(
            knn.support_neighbours, query_vecs.vectors, support_vecs.vectors, k, metric, owner
        )
        hits = [
            [Hit(id=str(j), score=s, label=labels[j], metadata={}) for s, j in zip(srow, orow, strict=True)]
            for srow, orow in zip(scores.tolist(), order.tolist(), strict=True)
        ]
        return hits, metric, query_vecs.truncated, support_vecs.truncated
