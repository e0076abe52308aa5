"""The server's threading model, in one place: which thread runs what, and how many there are.

* **Event loop** (one thread, grpc.aio on uvloop where installed): parses requests,
  validates them, hands work to the pools below and builds responses. Nothing slow
  runs on it: what it runs itself is a call alone in flight whose work is bounded,
  a search (``Collection.search_now``, see embedserve.server.search) or a small
  model's lone run (``Batcher.run_alone`` with ``inline``).
* **decode** (``decode_threads``, default one per core): image decoding and
  resizing, tokenization. Pillow and the tokenizers library release the GIL.
* **infer** (``infer_threads``, default 2): the dynamic batchers' calls into ONNX
  Runtime (a request that finds its tower idle is decoded here too, in the same call:
  ``Batcher.run_alone``). ORT itself runs each call on its own intra-op threads
  (``intra_op_threads``, default: one per core; they do not spin), so on CPU one batch
  per tower runs at a time; with ``intra_op_threads`` 1, a batch per core (a lone
  request cut into a share per core), and two on CUDA
  (``embedserve.models.tower.concurrent_batches``).
* **search** (``search_threads``, default one per core): FAISS searches and other
  reads of collections (Get, lookups by id, statistics). Each FAISS call uses
  ``faiss_threads`` OpenMP threads (default 1): requests already run in parallel
  here, and nested OpenMP teams would oversubscribe the cores. OpenMP's thread
  count is per thread, so each search and write thread sets it when it starts. A
  search that is the only call in flight takes one OpenMP thread per core for its
  FAISS calls (``reading_alone``): nothing else wants the cores then, and a batch of
  queries splits across them (a 64-query search over 20k x 128: see README).
* **write** (``write_threads``, default max(4, cores)): upserts, deletes, index
  training and rebuilds, snapshots, creating and deleting collections, SetLabels and
  the write-back of predictions, and the store's start-up and shutdown. A separate
  pool, so writers waiting on a collection's write lock or an fsync never starve searches.
* **label** (``label_threads``, default 1): labelling jobs (k-NN graphs, k-means, label
  spreading, audits), seconds to minutes each. Their own pool, so a long job never takes
  a search or write thread; each job's FAISS calls use one OpenMP thread per core, since
  a job is one large batched computation (searches still get their threads, at a share
  of the cores, while it runs).

Model loading at start-up runs in the infer pool before any request is served.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from embedserve.config import ServerConfig
from embedserve.store import tune_faiss, with_faiss_threads

T = TypeVar("T")


@dataclass(frozen=True)
class Pools:
    decode: ThreadPoolExecutor
    infer: ThreadPoolExecutor
    search: ThreadPoolExecutor
    write: ThreadPoolExecutor
    label: ThreadPoolExecutor
    faiss_threads: int = 1  # OpenMP threads of a search beside others
    cores: int = 1  # ... and of a search alone in flight
    decode_threads: int = 1  # the decode pool's threads

    @classmethod
    def from_config(cls, config: ServerConfig) -> Pools:
        cpus = os.cpu_count() or 2
        faiss = (config.faiss_threads,)
        decode_threads = config.decode_threads or cpus
        return cls(
            decode=ThreadPoolExecutor(decode_threads, thread_name_prefix="decode"),
            infer=ThreadPoolExecutor(config.infer_threads, thread_name_prefix="infer"),
            search=ThreadPoolExecutor(
                config.search_threads or cpus, "search", initializer=tune_faiss, initargs=faiss
            ),
            write=ThreadPoolExecutor(
                config.write_threads or max(4, cpus), "write", initializer=tune_faiss, initargs=faiss
            ),
            label=ThreadPoolExecutor(config.label_threads, "label", initializer=tune_faiss, initargs=(cpus,)),
            faiss_threads=config.faiss_threads,
            cores=cpus,
            decode_threads=decode_threads,
        )

    async def reading(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking read (FAISS search, lookups) in the search pool."""
        return await asyncio.get_running_loop().run_in_executor(self.search, fn, *args)

    async def reading_alone(self, fn: Callable[..., T], *args: Any) -> T:
        """``reading``, for the only call in flight: its FAISS calls get one OpenMP thread per core."""
        wide = functools.partial(
            with_faiss_threads, max(self.cores, self.faiss_threads), self.faiss_threads, fn
        )
        return await asyncio.get_running_loop().run_in_executor(self.search, wide, *args)

    async def writing(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking write (WAL fsync, training, snapshot) in the write pool."""
        return await asyncio.get_running_loop().run_in_executor(self.write, fn, *args)

    async def labelling(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a labelling job (graph, spreading) in the label pool."""
        return await asyncio.get_running_loop().run_in_executor(self.label, fn, *args)

    def shutdown(self) -> None:
        for pool in (self.decode, self.infer, self.search, self.write, self.label):
            pool.shutdown(wait=True)
