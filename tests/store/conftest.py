"""Fixtures and reference computations for the store tests (real FAISS, real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedserve.store import CollectionSpec, Store


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path):
    s = Store(data_dir)
    s.open()
    yield s
    s.close()


def spec(name: str = "c", dim: int = 8, metric: str = "l2", index_spec: str = "Flat", train_size: int = 0):
    return CollectionSpec(
        name=name, model="m", dim=dim, metric=metric, index_spec=index_spec, train_size=train_size
    )


def ids_for(n: int, start: int = 0, prefix: str = "id") -> list[str]:
    return [f"{prefix}{i}" for i in range(start, start + n)]


def random_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """float32 [n, dim] standard normal."""
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """float32 [n, dim]: gaussian blobs around ``clusters`` random centres (spread 0.3 vs centres at ~1)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    return (centres[which] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def upsert_plain(collection, ids: list[str], vectors: np.ndarray, labels=None, metadata=None):
    n = len(ids)
    return collection.upsert(ids, vectors, labels or [None] * n, metadata or [{} for _ in range(n)])


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k in float64: (scores [q, k], row indices [q, k]), best first."""
    x, q = base.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    if metric == "l2":
        scores = (q**2).sum(1)[:, None] - 2 * q @ x.T + (x**2).sum(1)[None, :]
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    else:
        scores = q @ x.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order
