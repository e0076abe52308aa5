"""The wire tensor format, shared by server and clients: packed little-endian float32 plus a shape.

``Tensor.data`` holds the values row-major as little-endian float32 (4 bytes
each); ``Tensor.shape`` their dimensions. ``prod(shape) * 4 == len(data)`` always.
"""

from __future__ import annotations

import numpy as np

from embedserve.v1 import embedserve_pb2 as pb

LE_FLOAT32 = np.dtype("<f4")


def array_to_tensor(array: np.ndarray) -> pb.Tensor:
    """float32 array of any shape -> Tensor."""
    array = np.ascontiguousarray(array, dtype=LE_FLOAT32)
    return pb.Tensor(shape=list(array.shape), data=array.tobytes())


def tensor_to_array(tensor: pb.Tensor) -> np.ndarray:
    """Tensor -> float32 array in native byte order; ValueError if shape and byte count disagree."""
    shape = tuple(int(s) for s in tensor.shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"negative dimension in shape {list(shape)}")
    expected = int(np.prod(shape, dtype=np.int64)) * 4 if shape else 0
    if len(tensor.data) != expected:
        raise ValueError(f"shape {list(shape)} needs {expected} bytes of float32, got {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=LE_FLOAT32).reshape(shape).astype(np.float32)


def unpack_hits(packed: pb.PackedHits) -> list[tuple[list[str], np.ndarray]]:
    """PackedHits -> per query (its ids, its float32 scores), best first."""
    scores = np.frombuffer(packed.scores, dtype=LE_FLOAT32).astype(np.float32)
    ids = list(packed.ids)
    if len(scores) != len(ids) or sum(packed.counts) != len(ids):
        raise ValueError(
            f"packed hits disagree: {sum(packed.counts)} counted, {len(ids)} ids, {len(scores)} scores"
        )
    out, start = [], 0
    for n in packed.counts:
        out.append((ids[start : start + n], scores[start : start + n]))
        start += n
    return out
