"""Optional GPU copies of collection indexes, used for searches a GPU index can answer exactly as asked.

The CPU index stays the source of truth (snapshots, rebuilds, filtered searches).
FAISS GPU indexes ignore IDSelectors, so a search comes here only when it needs
no label filter, and over-fetches by the number of tombstones so dead rows can
be dropped afterwards (see embedserve.store.search). A mirror whose add or
search fails is marked ``failed`` and never used again: searches go to the CPU.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import faiss
import numpy as np

log = logging.getLogger("embedserve.store")

# FAISS GPU k-selection limit (GPU_MAX_SELECTION_K); larger k goes to the CPU
MAX_GPU_K = 2048


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees at least one GPU."""
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return faiss.get_num_gpus() > 0
    except RuntimeError:
        return False


class GpuContext:
    """One StandardGpuResources for the store. GPU resources are not thread-safe, so one lock guards them."""

    def __init__(self, resources: Any) -> None:  # faiss.StandardGpuResources
        self.resources = resources
        self.lock = threading.Lock()

    @classmethod
    def create(cls) -> GpuContext | None:
        """A context on GPU 0, or None (with the reason logged) when FAISS cannot use a GPU here."""
        if not hasattr(faiss, "StandardGpuResources"):
            log.warning("use_gpu is set but this FAISS build has no GPU support; searching on CPU")
            return None
        try:
            count = faiss.get_num_gpus()
        except RuntimeError as err:
            log.warning("use_gpu is set but FAISS cannot count GPUs (%s); searching on CPU", err)
            return None
        if count == 0:
            log.warning("use_gpu is set but FAISS sees no GPU; searching on CPU")
            return None
        return cls(faiss.StandardGpuResources())

    def mirror(self, name: str, index: faiss.Index) -> GpuMirror | None:
        """A GPU copy of ``index``, or None (logged) when its type has no GPU implementation."""
        try:
            with self.lock:
                gpu_index = faiss.index_cpu_to_gpu(self.resources, 0, index)
        except (RuntimeError, AttributeError) as err:
            log.info(
                "collection '%s': %s has no GPU version (%s); searching on CPU",
                name,
                type(faiss.downcast_index(index)).__name__,
                str(err).splitlines()[0] if str(err) else err,
            )
            return None
        ivf = isinstance(faiss.downcast_index(index), faiss.IndexIVF)
        return GpuMirror(self, gpu_index, ivf, name)


class GpuMirror:
    """A GPU index kept in step with a CPU index by the same adds (ids 0..ntotal-1 in both)."""

    def __init__(self, context: GpuContext, index: faiss.Index, ivf: bool, name: str) -> None:
        self._context = context
        self.index = index
        self._ivf = ivf  # only a bare IVF index takes SearchParametersIVF for nprobe on GPU
        self._name = name
        self.failed = False

    def add(self, vectors: np.ndarray) -> None:
        """Add as the CPU index did; on a GPU error the mirror is marked failed (logged)."""
        if self.failed:
            return
        try:
            with self._context.lock:
                self.index.add(vectors)
        except RuntimeError as err:
            self._fail("add", err)

    def search(self, x: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Unfiltered top-k (k <= MAX_GPU_K): scores float32 [q, k], rows int64 [q, k] (-1 padded);
        None when the GPU failed (the mirror is then marked failed)."""
        params = None
        if nprobe and self._ivf:
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe
        try:
            with self._context.lock:
                return self.index.search(x, k, params=params)
        except RuntimeError as err:
            self._fail("search", err)
            return None

    def _fail(self, what: str, err: RuntimeError) -> None:
        self.failed = True
        log.warning("collection '%s': GPU %s failed (%s); searching on CPU from now", self._name, what, err)
