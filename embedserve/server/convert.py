"""Wire formats: packed little-endian float32 tensors <-> numpy, request contents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedserve.errors import InvalidArgument, item_error
from embedserve.models.registry import ImageInput, TextInput
from embedserve.v1 import embedserve_pb2 as pb

_LE_F32 = np.dtype("<f4")


@dataclass(frozen=True)
class IdRef:
    """A query that names a stored item: search with that item's vector."""

    id: str


Content = ImageInput | TextInput | IdRef | np.ndarray


def array_to_tensor(array: np.ndarray) -> pb.Tensor:
    """float32 array of any shape -> Tensor (row-major, little-endian)."""
    array = np.ascontiguousarray(array, dtype=_LE_F32)
    return pb.Tensor(shape=list(array.shape), data=array.tobytes())


def tensor_to_array(tensor: pb.Tensor) -> np.ndarray:
    """Tensor -> float32 array; ValueError if shape and byte count disagree."""
    shape = tuple(int(s) for s in tensor.shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {list(shape)}")
    expected = int(np.prod(shape, dtype=np.int64)) * 4 if shape else 0
    if len(tensor.data) != expected:
        raise ValueError(f"shape {list(shape)} needs {expected} bytes of float32, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=_LE_F32).reshape(shape).astype(np.float32)


def tensor_to_vector(tensor: pb.Tensor, index: int, *, noun: str = "item") -> np.ndarray:
    """A single vector, shape [D] or [1, D] on the wire -> float32 [D]."""
    shape = list(tensor.shape) or ([len(tensor.data) // 4] if tensor.data else [])
    if len(shape) == 2 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 1 or shape[0] < 1:
        raise item_error(
            InvalidArgument, index, f"vector must have shape [dim], got {list(tensor.shape)}", noun=noun
        )
    try:
        return tensor_to_array(pb.Tensor(shape=shape, data=tensor.data))
    except ValueError as exc:
        raise item_error(InvalidArgument, index, f"bad vector: {exc}", noun=noun) from None


def query_content(query: pb.Query, index: int, *, noun: str = "query", allow_id: bool = True) -> Content:
    """One Query (or an Item's content with the same field names) -> Content."""
    kind = query.WhichOneof("kind")
    if kind == "image":
        return ImageInput(query.image)
    if kind == "text":
        return TextInput(query.text)
    if kind == "vector":
        return tensor_to_vector(query.vector, index, noun=noun)
    if kind == "id" and allow_id:
        if not query.id:
            raise item_error(InvalidArgument, index, "id is empty", noun=noun)
        return IdRef(query.id)
    expected = "image, text, vector or id" if allow_id else "image, text or vector"
    raise item_error(InvalidArgument, index, f"no content: set one of {expected}", noun=noun)


def item_content(item: pb.Item, index: int) -> Content:
    kind = item.WhichOneof("content")
    if kind == "image":
        return ImageInput(item.image)
    if kind == "text":
        return TextInput(item.text)
    if kind == "vector":
        return tensor_to_vector(item.vector, index)
    raise item_error(InvalidArgument, index, f"item {item.id!r} has no content: set image, text or vector")


def input_content(inp: pb.Input, index: int) -> ImageInput | TextInput:
    kind = inp.WhichOneof("kind")
    if kind == "image":
        return ImageInput(inp.image)
    if kind == "text":
        return TextInput(inp.text)
    raise item_error(InvalidArgument, index, "input has neither image nor text")
