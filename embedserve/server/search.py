"""SearchService: Search and Classify (k-NN against a collection or an in-request support set)."""

from __future__ import annotations

import numpy as np

from embedserve import knn
from embedserve.errors import InvalidArgument, ResourceExhausted, item_error
from embedserve.server import vectors
from embedserve.server.base import Parts, deadline_of, rpc
from embedserve.server.convert import IdRef, query_content
from embedserve.store import Hit
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc

MAX_K = 1024
DEFAULT_SEARCH_K = 10
MAX_SUPPORT_WORK = 2e10  # Q x S x D multiply-adds for one few-shot request (seconds of CPU, not minutes)


def _k(value: int, default: int) -> int:
    k = value or default
    if not 1 <= k <= MAX_K:
        raise InvalidArgument(f"k must be in 1..{MAX_K}, got {value}")
    return k


def _hit(hit: Hit, include_metadata: bool = True) -> pb.Hit:
    out = pb.Hit(id=hit.id, score=hit.score)
    if hit.label is not None:
        out.label = hit.label
    if include_metadata:
        out.metadata.update(hit.metadata)
    return out


class SearchService(pb_grpc.SearchServiceServicer):
    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    async def _collection_queries(self, collection, queries, context) -> tuple[np.ndarray, list[str | None]]:
        """Query vectors [Q, D] for a collection, and per query the id to leave out (search by id)."""
        if not queries:
            raise InvalidArgument("queries is empty")
        contents = [query_content(q, i) for i, q in enumerate(queries)]
        matrix = await vectors.resolve(
            contents,
            dim=collection.spec.dim,
            model=self.parts.model_of(collection),
            model_name=collection.spec.model,
            collection=collection,
            deadline=deadline_of(context),
            run_blocking=self.parts.blocking,
            noun="query",
        )
        exclude = [c.id if isinstance(c, IdRef) else None for c in contents]
        return matrix, exclude

    @rpc("Search")
    async def Search(self, request: pb.SearchRequest, context) -> pb.SearchResponse:
        k = _k(request.k, DEFAULT_SEARCH_K)
        collection = self.parts.store.get(request.collection)
        matrix, exclude = await self._collection_queries(collection, request.queries, context)
        params = request.params
        if params.nprobe < 0 or params.ef_search < 0:
            raise InvalidArgument("nprobe and ef_search must be >= 0")
        hits = await self.parts.blocking(
            lambda: collection.search(
                matrix,
                k,
                labels=set(request.label_filter) or None,
                exclude=exclude,
                nprobe=params.nprobe,
                ef_search=params.ef_search,
            )
        )
        return pb.SearchResponse(
            results=[pb.QueryResult(hits=[_hit(h, request.include_metadata) for h in row]) for row in hits]
        )

    @rpc("Classify")
    async def Classify(self, request: pb.ClassifyRequest, context) -> pb.ClassifyResponse:
        k = _k(request.k, knn.DEFAULT_K)
        temperature = request.temperature or knn.DEFAULT_TEMPERATURE
        if not temperature > 0 or not np.isfinite(temperature):
            raise InvalidArgument(f"temperature must be positive, got {request.temperature}")
        if request.collection and request.support:
            raise InvalidArgument("give either a collection or a support set, not both")
        if request.collection:
            neighbours, metric = await self._collection_neighbours(request, k, context)
        elif request.support:
            neighbours, metric = await self._support_neighbours(request, k, context)
        else:
            raise InvalidArgument("give a collection or a support set to classify against")
        results = []
        for row in neighbours:
            sims = np.array([knn.similarity(h.score, metric) for h in row], dtype=np.float64)
            vote = knn.knn_vote(sims, [h.label for h in row], temperature)
            result = pb.Classification(has_prediction=vote.label is not None)
            if vote.label is not None:
                result.label = vote.label
                result.confidence = vote.confidence
                result.probabilities.extend(
                    pb.ClassProbability(label=c, probability=p) for c, p in vote.probabilities
                )
            if request.include_neighbors:
                result.neighbors.extend(_hit(h) for h in row)
            results.append(result)
        return pb.ClassifyResponse(results=results)

    async def _collection_neighbours(self, request, k, context) -> tuple[list[list[Hit]], str]:
        collection = self.parts.store.get(request.collection)
        matrix, exclude = await self._collection_queries(collection, request.queries, context)
        hits = await self.parts.blocking(
            lambda: collection.search(matrix, k, labelled_only=True, exclude=exclude)
        )
        return hits, collection.spec.metric

    async def _support_neighbours(self, request, k, context) -> tuple[list[list[Hit]], str]:
        if not request.queries:
            raise InvalidArgument("queries is empty")
        support = [
            query_content(ex.example, i, noun="support", allow_id=False)
            for i, ex in enumerate(request.support)
        ]
        for i, ex in enumerate(request.support):
            if not ex.label:
                raise item_error(InvalidArgument, i, "label is empty", noun="support")
        queries = [query_content(q, i, allow_id=False) for i, q in enumerate(request.queries)]
        needs_model = any(not isinstance(c, np.ndarray) for c in support + queries)
        model = None
        if needs_model or request.model:
            model = self.parts.model(request.model)
        if model is not None:
            dim, metric = model.manifest.dim, model.manifest.metric
        else:
            dim, metric = support[0].shape[0], "cosine"
        metric = request.metric or metric
        if metric not in ("cosine", "ip", "l2"):
            raise InvalidArgument(f"metric must be cosine, ip or l2, not {metric!r}")
        common = dict(
            dim=dim,
            model=model,
            model_name=model.manifest.name if model else "",
            collection=None,
            deadline=deadline_of(context),
            run_blocking=self.parts.blocking,
        )
        support_vecs = await vectors.resolve(support, noun="support", **common)
        query_vecs = await vectors.resolve(queries, noun="query", **common)
        for noun, matrix in (("support", support_vecs), ("query", query_vecs)):
            bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
            if bad.size:
                raise item_error(InvalidArgument, int(bad[0]), "vector contains NaN or Inf", noun=noun)
        if len(query_vecs) * len(support_vecs) * dim > MAX_SUPPORT_WORK:
            raise ResourceExhausted(
                f"{len(queries)} queries x {len(support)} support examples x dim {dim} is over "
                f"{MAX_SUPPORT_WORK:.0e} multiply-adds; index the support set in a collection instead"
            )
        if metric == "cosine":
            support_vecs, query_vecs = knn.l2_normalize(support_vecs), knn.l2_normalize(query_vecs)
        scores, order = await self.parts.blocking(knn.support_neighbours, query_vecs, support_vecs, k, metric)
        labels = [ex.label for ex in request.support]
        hits = [
            [Hit(id=str(j), score=float(s), label=labels[j], metadata={}) for s, j in zip(srow, orow)]
            for srow, orow in zip(scores, order)
        ]
        return hits, metric
