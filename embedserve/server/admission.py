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
  embedding, and by the store for library callers);
- labelling jobs: suggestions or findings per request (max_batch_items), neighbours
  (max_label_k), spreading iterations (max_label_iterations), and the job's memory,
  estimated from the collection's size and k (max_label_job_bytes).
"""

from __future__ import annotations

import math

from embedserve import knn
from embedserve.errors import InvalidArgument, quote
from embedserve.labelling.labeller import DEFAULT_GRAPH_K, METHODS, neighbours_for
from embedserve.labelling.neighbours import graph_bytes
from embedserve.labelling.suggest import STRATEGIES
from embedserve.limits import DEFAULT_SEARCH_K, HIT_OVERHEAD_BYTES, MAX_ID_BYTES, check_reply
from embedserve.server.base import Parts
from embedserve.server.contents import query_count
from embedserve.store import Collection
from embedserve.v1 import embedserve_pb2 as pb

DEFAULT_COUNT = 10  # suggestions or findings when a request leaves count at 0

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
    n = query_count(request)
    limits.check_queries(n, k)
    limits.check_search_params(request.params.nprobe, request.params.ef_search)
    if not (math.isfinite(request.min_confidence) and 0 <= request.min_confidence <= 1):
        raise InvalidArgument(f"min_confidence must be in 0..1, got {request.min_confidence}")
    if request.min_confidence and not request.predicted_label_filter:
        raise InvalidArgument("min_confidence applies to predicted_label_filter: give that too")
    if request.packed and request.include_metadata:
        raise InvalidArgument("packed results carry ids and scores only: include_metadata must be false")
    collection = parts.store.get(request.collection)
    per_hit = collection.max_item_bytes(metadata=request.include_metadata) + HIT_OVERHEAD_BYTES
    check_reply(n * k * per_hit, parts.config.max_message_bytes, "the reply")


def classify(parts: Parts, request: pb.ClassifyRequest) -> None:
    limits = parts.config.limits
    k = limits.check_k(request.k or knn.DEFAULT_K)
    n = query_count(request)
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


# --- labelling -----------------------------------------------------------------------------------

_SUGGESTION_BYTES = MAX_ID_BYTES + 256 + HIT_OVERHEAD_BYTES  # id, reason, score and framing


def _count(parts: Parts, count: int, what: str) -> int:
    if count < 0:
        raise InvalidArgument(f"count must be >= 0, got {count}")
    count = count or DEFAULT_COUNT
    parts.config.limits.check_batch(count, what)
    return count


def _label_job(parts: Parts, collection: Collection, k: int, iterations: int = 0) -> None:
    n = collection.size
    estimate = graph_bytes(n, k, collection.label_names_count) + n * collection.spec.dim * 4  # + the vectors
    parts.config.limits.check_label_job(k, iterations, estimate, n)


def suggest_labels(parts: Parts, request: pb.SuggestLabelsRequest) -> None:
    count = _count(parts, request.count, "suggestions")
    if request.strategy and request.strategy not in STRATEGIES:
        raise InvalidArgument(
            f"strategy must be one of {', '.join(STRATEGIES)}, not {quote(request.strategy)}"
        )
    collection = parts.store.get(request.collection)
    k = request.k or DEFAULT_GRAPH_K
    if request.strategy in ("random", "typical"):  # no graph: only k's range applies
        parts.config.limits.check_label_job(k, 0, 0, collection.size)
    else:
        _label_job(parts, collection, k)
    check_reply(count * _SUGGESTION_BYTES, parts.config.max_message_bytes, "the reply")


def set_labels(parts: Parts, request: pb.SetLabelsRequest) -> None:
    limits = parts.config.limits
    limits.check_batch(len(request.assignments), "assignments")
    for i, assignment in enumerate(request.assignments):
        if assignment.label:
            limits.check_label(assignment.label, i, noun="assignment")


def propagate_labels(parts: Parts, request: pb.PropagateLabelsRequest) -> None:
    method = request.method or "spread"
    if method not in METHODS:
        raise InvalidArgument(f"method must be one of {', '.join(METHODS)}, not {quote(request.method)}")
    if not (math.isfinite(request.temperature) and request.temperature >= 0):
        raise InvalidArgument(f"temperature must be positive (0 = 0.07), got {request.temperature}")
    if not (math.isfinite(request.alpha) and 0 <= request.alpha < 1):
        raise InvalidArgument(f"alpha must be in (0, 1) (0 = 0.99), got {request.alpha}")
    collection = parts.store.get(request.collection)
    k = neighbours_for(method, request.k)
    _label_job(parts, collection, k, request.max_iterations)


def audit_labels(parts: Parts, request: pb.AuditLabelsRequest) -> None:
    count = _count(parts, request.count, "findings")
    if not (math.isfinite(request.temperature) and request.temperature >= 0):
        raise InvalidArgument(f"temperature must be positive (0 = 0.07), got {request.temperature}")
    collection = parts.store.get(request.collection)
    _label_job(parts, collection, request.k or knn.DEFAULT_K)
    per = MAX_ID_BYTES + 2 * collection.max_item_bytes(metadata=False) + HIT_OVERHEAD_BYTES
    check_reply(count * per, parts.config.max_message_bytes, "the reply")
