"""Python clients for embedserve: ``Client`` (blocking; the CLI uses it) and ``AsyncClient`` (grpc.aio).

>>> from embedserve.client import Client, item
>>> with Client("127.0.0.1:50051") as c:
...     c.create_collection("digits")
...     c.upsert("digits", [item("a", image=png_bytes, label="3")])
...     hits = c.search("digits", [png_bytes], k=5)[0]
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from embedserve.v1 import embedserve_pb2 as pb
from embedserve.v1 import embedserve_pb2_grpc as pb_grpc
from embedserve.wire import array_to_tensor, tensor_to_array, unpack_hits


@dataclass(frozen=True)
class ById:
    """A query naming a stored item: search with its vector (the item itself is left out)."""

    id: str


QueryLike = bytes | str | np.ndarray | ById | pb.Query


# the wire format, under the names clients have used (see embedserve.wire)
to_tensor = array_to_tensor
from_tensor = tensor_to_array


def item(
    id: str,
    *,
    image: bytes | None = None,
    text: str | None = None,
    vector: np.ndarray | None = None,
    label: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> pb.Item:
    """One item to upsert: exactly one of image, text, vector."""
    if sum(x is not None for x in (image, text, vector)) != 1:
        raise ValueError("give exactly one of image, text, vector")
    msg = pb.Item(id=id, metadata=dict(metadata or {}))
    if image is not None:
        msg.image = image
    elif text is not None:
        msg.text = text
    elif vector is not None:
        msg.vector.CopyFrom(to_tensor(vector))
    if label is not None:
        msg.label = label
    return msg


def query(q: QueryLike) -> pb.Query:
    """bytes = an encoded image, str = text, array = a raw vector, ById = a stored item."""
    if isinstance(q, pb.Query):
        return q
    if isinstance(q, bytes):
        return pb.Query(image=q)
    if isinstance(q, str):
        return pb.Query(text=q)
    if isinstance(q, ById):
        return pb.Query(id=q.id)
    if isinstance(q, np.ndarray):
        return pb.Query(vector=to_tensor(q))
    raise TypeError(f"cannot make a query of {type(q).__name__}")


Queries = Sequence[QueryLike] | np.ndarray


def _set_queries(request: pb.SearchRequest | pb.ClassifyRequest, queries: Queries) -> None:
    """A 2-D array goes as one [Q, dim] tensor (``vectors``), anything else as a Query per item."""
    if isinstance(queries, np.ndarray) and queries.ndim == 2:
        request.vectors.CopyFrom(to_tensor(queries))
    else:
        request.queries.extend(query(q) for q in queries)


def _search_request(
    collection: str,
    queries: Queries,
    k: int,
    label_filter: Sequence[str],
    nprobe: int,
    ef_search: int,
    predicted_label_filter: Sequence[str],
) -> pb.SearchRequest:
    request = pb.SearchRequest(
        collection=collection,
        k=k,
        label_filter=list(label_filter),
        params=pb.SearchParams(nprobe=nprobe, ef_search=ef_search),
        predicted_label_filter=list(predicted_label_filter),
    )
    _set_queries(request, queries)
    return request


class _Api:
    """Every RPC, defined once. ``_call(method, request, post)`` sends ``request`` and maps the
    reply through ``post``: directly in :class:`Client`, as a coroutine in :class:`AsyncClient`."""

    _channels: tuple  # (insecure_channel, secure_channel) of grpc or grpc.aio

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        token: str | None = None,
        tls_ca: Path | None = None,
        tls: bool = False,
        timeout: float | None = 300.0,
        max_message_bytes: int = 64 << 20,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        insecure, secure = self._channels
        if tls or tls_ca is not None:
            root = tls_ca.read_bytes() if tls_ca is not None else None
            channel = secure(target, grpc.ssl_channel_credentials(root), options=options)
        else:
            channel = insecure(target, options=options)
        self.channel = channel
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.embedder = pb_grpc.EmbedServiceStub(channel)
        self.collections = pb_grpc.CollectionServiceStub(channel)
        self.index = pb_grpc.IndexServiceStub(channel)
        self.searcher = pb_grpc.SearchServiceStub(channel)
        self.labels = pb_grpc.LabelServiceStub(channel)
        self._health = health_pb2_grpc.HealthStub(channel)

    def _call(self, method, request, post=lambda reply: reply):
        raise NotImplementedError

    # -- health
    def health(self, service: str = ""):
        """ "SERVING" / "NOT_SERVING" / ... for the server ("") or one service."""
        return self._call(
            self._health.Check,
            health_pb2.HealthCheckRequest(service=service),
            lambda r: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status),
        )

    # -- EmbedService
    def embed(self, inputs: Sequence[bytes | str], model: str = "", *, return_truncated: bool = False):
        """float32 [len(inputs), dim]: bytes are encoded images, str are texts. With
        ``return_truncated``: (vectors, positions of the texts cut to the model's max_length)."""
        msgs = [pb.Input(image=x) if isinstance(x, bytes) else pb.Input(text=x) for x in inputs]
        request = pb.EmbedRequest(model=model, inputs=msgs)

        def post(reply: pb.EmbedResponse):
            vectors = from_tensor(reply.embeddings)
            return (vectors, list(reply.truncated)) if return_truncated else vectors

        return self._call(self.embedder.Embed, request, post)

    def list_models(self):
        return self._call(self.embedder.ListModels, pb.ListModelsRequest())

    # -- CollectionService
    def create_collection(
        self,
        name: str,
        *,
        model: str = "",
        metric: str = "",
        index_spec: str = "",
        train_size: int = 0,
        store: str = "",
    ):
        """``store``: "embedded", "milvus" (a server started with --milvus-uri), "" = the server's default."""
        request = pb.CreateCollectionRequest(
            name=name, model=model, metric=metric, index_spec=index_spec, train_size=train_size, store=store
        )
        return self._call(self.collections.CreateCollection, request)

    def list_collections(self):
        request = pb.ListCollectionsRequest()
        return self._call(self.collections.ListCollections, request, lambda r: list(r.collections))

    def describe_collection(self, name: str):
        return self._call(self.collections.DescribeCollection, pb.DescribeCollectionRequest(name=name))

    def delete_collection(self, name: str):
        return self._call(
            self.collections.DeleteCollection, pb.DeleteCollectionRequest(name=name), lambda r: None
        )

    # -- IndexService
    def upsert(self, collection: str, items: Iterable[pb.Item]):
        return self._call(self.index.Upsert, pb.UpsertRequest(collection=collection, items=list(items)))

    def delete(self, collection: str, ids: Sequence[str], *, allow_missing: bool = False):
        request = pb.DeleteRequest(collection=collection, ids=list(ids), allow_missing=allow_missing)
        return self._call(self.index.Delete, request, lambda r: r.deleted)

    def get(
        self,
        collection: str,
        ids: Sequence[str],
        *,
        include_vector: bool = False,
        allow_missing: bool = False,
    ):
        """The stored items; NOT_FOUND for an unknown id, unless ``allow_missing`` (then it is left out)."""
        request = pb.GetRequest(
            collection=collection, ids=list(ids), include_vector=include_vector, allow_missing=allow_missing
        )
        return self._call(self.index.Get, request, lambda r: list(r.items))

    # -- SearchService
    def search(
        self,
        collection: str,
        queries: Queries,
        *,
        k: int = 10,
        label_filter: Sequence[str] = (),
        nprobe: int = 0,
        ef_search: int = 0,
        include_metadata: bool = True,
        predicted_label_filter: Sequence[str] = (),
        min_confidence: float = 0.0,
    ):
        """Per query, its hits (best first). ``queries``: a list (image bytes, text, vector, ById),
        or a float32 [Q, dim] array of raw vectors, sent as one tensor (the compact form)."""
        request = _search_request(
            collection, queries, k, label_filter, nprobe, ef_search, predicted_label_filter
        )
        request.include_metadata, request.min_confidence = include_metadata, min_confidence
        return self._call(self.searcher.Search, request, lambda r: [list(q.hits) for q in r.results])

    def search_packed(
        self,
        collection: str,
        queries: Queries,
        *,
        k: int = 10,
        label_filter: Sequence[str] = (),
        nprobe: int = 0,
        ef_search: int = 0,
        predicted_label_filter: Sequence[str] = (),
        min_confidence: float = 0.0,
    ):
        """Per query, (ids, float32 scores) best first: ``Search`` with ``packed``, no message per hit
        on either end (no labels or metadata). The form for many queries or a large k."""
        request = _search_request(
            collection, queries, k, label_filter, nprobe, ef_search, predicted_label_filter
        )
        request.packed, request.min_confidence = True, min_confidence
        return self._call(self.searcher.Search, request, lambda r: unpack_hits(r.packed))

    def classify(
        self,
        queries: Queries,
        *,
        collection: str = "",
        support: Sequence[tuple[QueryLike, str]] = (),
        model: str = "",
        metric: str = "",
        k: int = 0,
        temperature: float = 0.0,
        include_neighbors: bool = False,
    ):
        """k-NN vote against a collection's labelled items, or against ``support`` (example, label) pairs."""
        request = pb.ClassifyRequest(
            collection=collection,
            support=[pb.LabelledExample(example=query(x), label=label) for x, label in support],
            model=model,
            metric=metric,
            k=k,
            temperature=temperature,
            include_neighbors=include_neighbors,
        )
        _set_queries(request, queries)
        return self._call(self.searcher.Classify, request, lambda r: list(r.results))

    # -- LabelService
    def suggest_labels(
        self, collection: str, count: int = 10, *, strategy: str = "", seed: int = 0, k: int = 0
    ):
        """The items to label next (a SuggestLabelsResponse: ``suggestions`` best first, and the
        ``strategy`` that ran): auto | typical | uncertain | random."""
        request = pb.SuggestLabelsRequest(
            collection=collection, count=count, strategy=strategy, seed=seed, k=k
        )
        return self._call(self.labels.SuggestLabels, request)

    def set_labels(
        self, collection: str, assignments: Mapping[str, str | None] | Iterable[tuple[str, str | None]]
    ):
        """Label stored items by id ({id: label}, or (id, label) pairs); None or "" clears a label.
        Returns a SetLabelsResponse (labelled, cleared, unchanged)."""
        pairs = assignments.items() if isinstance(assignments, Mapping) else assignments
        request = pb.SetLabelsRequest(
            collection=collection,
            assignments=[pb.LabelAssignment(id=i, label=label or "") for i, label in pairs],
        )
        return self._call(self.labels.SetLabels, request)

    def audit_labels(self, collection: str, count: int = 10, *, k: int = 0, temperature: float = 0.0):
        """Labelled items their neighbours disagree with, least supported first (LabelFindings)."""
        request = pb.AuditLabelsRequest(collection=collection, count=count, k=k, temperature=temperature)
        return self._call(self.labels.AuditLabels, request, lambda r: list(r.findings))

    @staticmethod
    def _propagate_request(
        collection: str, method: str, on_progress, options: dict
    ) -> pb.PropagateLabelsRequest:
        return pb.PropagateLabelsRequest(
            collection=collection, method=method, report_progress=on_progress is not None, **options
        )


class Client(_Api):
    """A blocking connection to one server. Errors surface as ``grpc.RpcError`` with the server's
    status code and message."""

    _channels = (grpc.insecure_channel, grpc.secure_channel)

    def _call(self, method, request, post=lambda reply: reply):
        return post(method(request, timeout=self.timeout, metadata=self._metadata))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server reports SERVING (models loaded)."""
        end = time.monotonic() + timeout
        while True:
            try:
                if self.health() == "SERVING":
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"server not SERVING after {timeout} s")
            time.sleep(0.1)

    def upsert_stream(self, collection: str, batches: Iterable[Iterable[pb.Item]]) -> pb.UpsertResponse:
        """Client-streaming upsert for batch jobs: each batch is committed as it arrives."""

        def requests() -> Iterator[pb.UpsertRequest]:
            for batch in batches:
                yield pb.UpsertRequest(collection=collection, items=list(batch))

        return self.index.UpsertStream(requests(), timeout=None, metadata=self._metadata)

    def propagate_labels(
        self,
        collection: str,
        method: str = "spread",
        *,
        on_progress: Callable[[str, int, int], None] | None = None,
        timeout: float | None = None,
        **options,
    ) -> Iterator[pb.PropagateLabelsResponse]:
        """A prediction (id, label, confidence, margin) per unlabelled item, as the server streams
        them. ``options``: the other PropagateLabelsRequest fields (k, temperature, write_back,
        alpha, max_iterations). ``on_progress(stage, done, total)`` gets the job's progress. No
        deadline by default (10^6 items take minutes)."""
        request = self._propagate_request(collection, method, on_progress, options)
        for reply in self.labels.PropagateLabels(request, timeout=timeout, metadata=self._metadata):
            if _prediction(reply, on_progress):
                yield reply


class AsyncClient(_Api):
    """The same API on ``grpc.aio``: every method is a coroutine.

    >>> async with AsyncClient("127.0.0.1:50051") as c:
    ...     vectors = await c.embed([png_bytes])
    """

    _channels = (grpc.aio.insecure_channel, grpc.aio.secure_channel)

    async def _call(self, method, request, post=lambda reply: reply):
        return post(await method(request, timeout=self.timeout, metadata=self._metadata))

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def upsert_stream(self, collection: str, batches: AsyncIterable | Iterable) -> pb.UpsertResponse:
        """Client-streaming upsert: ``batches`` yields lists of items (sync or async iterable)."""

        async def requests():
            if hasattr(batches, "__aiter__"):
                async for batch in batches:
                    yield pb.UpsertRequest(collection=collection, items=list(batch))
            else:
                for batch in batches:
                    yield pb.UpsertRequest(collection=collection, items=list(batch))

        return await self.index.UpsertStream(requests(), timeout=None, metadata=self._metadata)

    async def propagate_labels(
        self,
        collection: str,
        method: str = "spread",
        *,
        on_progress: Callable[[str, int, int], None] | None = None,
        timeout: float | None = None,
        **options,
    ) -> AsyncIterator[pb.PropagateLabelsResponse]:
        """As Client.propagate_labels, an async iterator."""
        request = self._propagate_request(collection, method, on_progress, options)
        async for reply in self.labels.PropagateLabels(request, timeout=timeout, metadata=self._metadata):
            if _prediction(reply, on_progress):
                yield reply


def _prediction(reply: pb.PropagateLabelsResponse, on_progress) -> bool:
    """True for a prediction; a progress message goes to ``on_progress`` instead."""
    if reply.id:
        return True
    if on_progress is not None and reply.HasField("progress"):
        on_progress(reply.progress.stage, reply.progress.done, reply.progress.total)
    return False
