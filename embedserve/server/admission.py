"""Admission control: every request's cost, checked against the configured limits before any work.

Each RPC names its admission function in its ``rpc`` decorator
(``embedserve.server.base``); the wrapper calls it after the request decoded
and before the servicer runs, and for a client stream on every message. A
function looks only at the request and at cheap, already-known facts (a
model's dim, a collection's largest stored item), never decodes an image or
touches an index, and raises ResourceExhausted / InvalidArgument naming the
limit (``embedserve.limits``).

What bounds what:
- work: queries x k (max_results), ef_search, nprobe, support-set size and
  queries x support x dim, inputs or items or ids per message (max_batch_items);
  each image's pixels (max_image_pixels) and each text's bytes (max_text_bytes)
  are checked as the input is read, before it is decoded or tokenized;
- memory: the request itself (max_message_bytes), and the reply, estimated
  from the counts above and the largest id, label and metadata the collection
  holds, against max_message_bytes;
- what an item may hold: label and metadata bytes (checked here before
  embedding, and by the store for library callers).
"""

from __future__ import annotations

from embedserve import knn
from embedserve.limits import DEFAULT_SEARCH_K, HIT_OVERHEAD_BYTES, check_reply
from embedserve.server.base import Parts
from embedserve.v1 import embedserve_pb2 as pb

_TENSOR_OVERHEAD = 64  # a Tensor's shape and framing


def embed(parts: Parts, request: pb.EmbedRequest) -> None:
    limits = parts.config.limits
    n = len(request.inputs)
    limits.check_batch(n, "inputs")
    model = parts.model(request.model)
    check_reply(n * (model.dim * 4 + 8) + _TENSOR_OVERHEAD, parts.config.max_message_bytes, "the reply")


def upsert(parts: Parts, request: pb.UpsertRequest) -> None:
    limits = parts.config.limits
    limits.check_batch(len(request.items), "items")
    for i, item in enumerate(request.items):
        if item.label:
            limits.check_label(item.label, i)
        if item.metadata:
            limits.metadata_size(dict(item.metadata), i)


def delete(parts: Parts, request: pb.DeleteRequest) -> None:
    parts.config.limits.check_batch(len(request.ids), "ids")


def get(parts: Parts, request: pb.GetRequest) -> None:
    parts.config.limits.check_batch(len(request.ids), "ids")
    collection = parts.store.get(request.collection)
    per_item = collection.max_item_bytes(metadata=True) + HIT_OVERHEAD_BYTES
    if request.include_vector:
        per_item += collection.spec.dim * 4 + _TENSOR_OVERHEAD
    check_reply(len(request.ids) * per_item, parts.config.max_message_bytes, "the reply")


def search(parts: Parts, request: pb.SearchRequest) -> None:
    limits = parts.config.limits
    k = limits.check_k(request.k or DEFAULT_SEARCH_K)
    limits.check_queries(len(request.queries), k)
    limits.check_search_params(request.params.nprobe, request.params.ef_search)
    collection = parts.store.get(request.collection)
    per_hit = collection.max_item_bytes(metadata=request.include_metadata) + HIT_OVERHEAD_BYTES
    check_reply(len(request.queries) * k * per_hit, parts.config.max_message_bytes, "the reply")


def classify(parts: Parts, request: pb.ClassifyRequest) -> None:
    limits = parts.config.limits
    k = limits.check_k(request.k or knn.DEFAULT_K)
    n = len(request.queries)
    limits.check_queries(n, k)
    if request.support:
        limits.check_support(n, len(request.support), 1)  # x dim once the model is known
        for i, example in enumerate(request.support):
            limits.check_label(example.label, i, noun="support")
        label = max(len(ex.label.encode("utf-8", "replace")) for ex in request.support)
        per_neighbour = label + HIT_OVERHEAD_BYTES  # a probability, and a hit if neighbours are asked for
        per_neighbour *= 2 if request.include_neighbors else 1
    else:
        collection = parts.store.get(request.collection) if request.collection else None
        if collection is None:
            return  # the servicer says what is missing
        label = collection.max_item_bytes(metadata=False) + HIT_OVERHEAD_BYTES
        per_neighbour = label
        if request.include_neighbors:
            per_neighbour += collection.max_item_bytes(metadata=True) + HIT_OVERHEAD_BYTES
    check_reply(n * k * per_neighbour, parts.config.max_message_bytes, "the reply")
