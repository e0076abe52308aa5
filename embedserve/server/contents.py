"""Request contents: protobuf messages -> contents (image, text, raw vector, stored id) -> one [N, D] matrix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedserve.errors import (
    EmbedServeError,
    FailedPrecondition,
    InvalidArgument,
    item_error,
    quote,
    readdress,
)
from embedserve.models import ImageInput, Model, ModelInput, TextInput
from embedserve.store import Collection
from embedserve.v1 import embedserve_pb2 as pb
from embedserve.vectors import dimension_error
from embedserve.wire import LE_FLOAT32


@dataclass(frozen=True)
class IdRef:
    """A query that names a stored item: search with that item's vector."""

    id: str


Content = ImageInput | TextInput | IdRef | np.ndarray


@dataclass(frozen=True)
class Resolved:
    vectors: np.ndarray  # float32 [N, dim]
    truncated: list[int]  # positions of texts cut to the model's max_length, ascending


def tensor_to_vector(tensor: pb.Tensor, index: int, *, noun: str = "item") -> np.ndarray:
    """A single vector, shape [D] or [1, D] on the wire -> float32 [D]."""
    data = tensor.data
    shape = list(tensor.shape) or ([len(data) // 4] if data else [])
    if len(shape) == 2 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 1 or shape[0] < 1:
        raise item_error(
            InvalidArgument, index, f"vector must have shape [dim], got {list(tensor.shape)}", noun=noun
        )
    if len(data) != 4 * shape[0]:
        raise item_error(
            InvalidArgument,
            index,
            f"bad vector: shape {shape} needs {4 * shape[0]} bytes of float32, got {len(data)}",
            noun=noun,
        )
    return np.frombuffer(data, dtype=LE_FLOAT32).astype(np.float32)


def vector_batch(messages, dim: int, oneof: str = "content") -> np.ndarray | None:
    """float32 [len(messages), dim] when every message (a pb.Item, or a pb.Query with ``oneof``
    "kind") holds a raw vector of exactly ``dim`` components (shape [dim], [1, dim] or unset),
    converted in one step: one join of the bytes and one view, not a message, a shape check and
    an array per vector. None otherwise (the per-message path then names the first offending one)."""
    nbytes = 4 * dim
    data = []
    for item in messages:
        if item.WhichOneof(oneof) != "vector":
            return None
        tensor = item.vector
        raw = tensor.data
        if len(raw) != nbytes:
            return None
        shape = tensor.shape
        if shape and not (
            (len(shape) == 1 and shape[0] == dim) or (len(shape) == 2 and shape[0] == 1 and shape[1] == dim)
        ):
            return None
        data.append(raw)
    return np.frombuffer(b"".join(data), dtype=LE_FLOAT32).reshape(len(messages), dim)


def query_count(request) -> int:
    """How many queries a SearchRequest or ClassifyRequest holds: its ``queries``, or the rows of
    its ``vectors`` tensor (whose shape is checked here, before anything is allocated)."""
    if not request.HasField("vectors"):
        return len(request.queries)
    if request.queries:
        raise InvalidArgument("give queries or vectors, not both")
    return _matrix_shape(request.vectors)[0]


def _matrix_shape(tensor: pb.Tensor) -> tuple[int, int]:
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise InvalidArgument(
            f"vectors must have shape [queries, dim], both at least 1, got {quote(str(shape))}"
        )
    if len(tensor.data) != 4 * shape[0] * shape[1]:
        raise InvalidArgument(
            f"vectors: shape {shape} needs {4 * shape[0] * shape[1]} bytes of float32, got {len(tensor.data)}"
        )
    return shape[0], shape[1]


def _matrix(tensor: pb.Tensor) -> np.ndarray:
    """A ``vectors`` tensor as a read-only [Q, D] view of its bytes (shape checked)."""
    return np.frombuffer(tensor.data, dtype=LE_FLOAT32).reshape(_matrix_shape(tensor))


def query_matrix(tensor: pb.Tensor, dim: int, owner: str) -> np.ndarray:
    """A request's ``vectors`` tensor -> float32 [Q, dim], a view of its bytes (one conversion)."""
    matrix = _matrix(tensor)
    if matrix.shape[1] != dim:
        raise InvalidArgument(f"vectors have dimension {matrix.shape[1]}, {owner} expects {dim}")
    return matrix


def query_contents(request, *, allow_id: bool = True) -> list[Content]:
    """A Search or Classify request's queries as contents: its ``queries`` one by one, or the rows
    of its ``vectors`` (raw vectors, their dimension checked where they are resolved)."""
    if request.HasField("vectors"):
        return list(_matrix(request.vectors).astype(np.float32))
    return [query_content(q, i, allow_id=allow_id) for i, q in enumerate(request.queries)]


def _embeddable(message, kind: str | None, index: int, noun: str) -> Content | None:
    """The image, text or vector set in a Query, Item or Input message, or None if none is."""
    if kind == "image":
        return ImageInput(message.image)
    if kind == "text":
        return TextInput(message.text)
    if kind == "vector":
        return tensor_to_vector(message.vector, index, noun=noun)
    return None


def query_content(query: pb.Query, index: int, *, noun: str = "query", allow_id: bool = True) -> Content:
    """One Query (or a LabelledExample's example) -> Content."""
    kind = query.WhichOneof("kind")
    content = _embeddable(query, kind, index, noun)
    if content is not None:
        return content
    if kind == "id" and allow_id:
        if not query.id:
            raise item_error(InvalidArgument, index, "id is empty", noun=noun)
        return IdRef(query.id)
    expected = "image, text, vector or id" if allow_id else "image, text or vector"
    raise item_error(InvalidArgument, index, f"no content: set one of {expected}", noun=noun)


def item_content(item: pb.Item, index: int) -> Content:
    content = _embeddable(item, item.WhichOneof("content"), index, "item")
    if content is None:
        raise item_error(
            InvalidArgument, index, f"item {quote(item.id)} has no content: set image, text or vector"
        )
    return content


def input_content(inp: pb.Input, index: int) -> ModelInput:
    content = _embeddable(inp, inp.WhichOneof("kind"), index, "item")
    if not isinstance(content, ImageInput | TextInput):
        raise item_error(InvalidArgument, index, "input has neither image nor text")
    return content


async def resolve(
    contents: list[Content],
    *,
    dim: int,
    owner: str,
    model: Model | None,
    model_name: str,
    collection: Collection | None,
    deadline: float | None,
    read: Callable[..., Awaitable[Any]],
    noun: str = "item",
) -> Resolved:
    """Vectors for ``contents`` in order: float32 [len(contents), dim], and the texts truncated.

    Raw vectors are checked for dimension here (``owner`` names what sets it);
    images and texts go through ``model`` (all of them in one call, so they batch
    together); ids are looked up in ``collection`` via ``read`` (the search pool).
    An error names the position in ``contents``.
    """
    out = np.empty((len(contents), dim), dtype=np.float32)
    truncated: list[int] = []
    to_embed: list[int] = []
    to_lookup: list[int] = []
    for i, content in enumerate(contents):
        if isinstance(content, np.ndarray):
            if content.shape != (dim,):
                raise dimension_error(i, content.shape[0], dim, owner, noun)
            out[i] = content
        elif isinstance(content, IdRef):
            if collection is None:
                raise item_error(InvalidArgument, i, "a query by id needs a collection", noun=noun)
            to_lookup.append(i)
        else:
            to_embed.append(i)

    if to_embed:
        if model is None:
            raise FailedPrecondition(
                f"model '{model_name}' is not loaded, so images and text cannot be embedded "
                f"({noun} {to_embed[0]}); raw vectors still work"
            )
        try:
            inputs: list[ModelInput] = [contents[i] for i in to_embed]  # type: ignore[misc]
            embedded = await model.encode(inputs, deadline=deadline)
        except EmbedServeError as err:
            raise readdress(err, to_embed, noun) from None
        out[to_embed] = embedded.vectors
        truncated = [to_embed[j] for j in embedded.truncated]
    if to_lookup:
        assert collection is not None
        ids = [contents[i].id for i in to_lookup]  # type: ignore[union-attr]
        try:
            out[to_lookup] = await read(collection.vectors_of, ids)
        except EmbedServeError as err:
            raise readdress(err, to_lookup, noun) from None
    return Resolved(out, truncated)
