"""Start-up order: the store starts loading before the rest of the server is even imported.

Opening the store (snapshots read, logs replayed) and importing and loading the
rest (gRPC, ONNX Runtime, model sessions) do not depend on each other, and a
restart after a crash costs the slower of the two only if they overlap.
``embedserve serve`` therefore builds the store first, with only FAISS and
numpy imported, opens it in a background thread, and hands it to the server,
whose own ``Store.open`` call then waits for that open to finish (or, if it
failed, runs it again and reports the error).
"""

from __future__ import annotations

import logging
import threading
from typing import cast

from embedserve.config import ServerConfig
from embedserve.store import Store, gpu_available

log = logging.getLogger("embedserve.server")


def store_for(config: ServerConfig) -> Store:
    """The server's store, as configured (GPU search when the device setting asks for it and FAISS can)."""
    # auto: GPU search when FAISS can; cuda: asked for, so the store warns if it cannot
    use_gpu = config.device == "cuda" or (config.device == "auto" and gpu_available())
    log.info("FAISS search on %s", "GPU" if use_gpu else "CPU")
    store = Store(
        config.data,
        use_gpu=use_gpu,
        snapshot_wal_bytes=config.snapshot_wal_bytes,
        snapshot_replay_s=config.snapshot_replay_s,
        limits=config.limits,
    )
    if not config.milvus_uri:
        return store
    from embedserve.store.milvus import MilvusStore, RoutedStore

    log.info("new collections in Milvus at %s (consistency Strong)", config.milvus_uri)
    milvus = MilvusStore(config.milvus_uri, token=config.milvus_token, limits=config.limits)
    # RoutedStore answers every call the server makes on a Store (duck-typed, not a subclass)
    return cast(Store, RoutedStore(store, milvus))


def opening_store(config: ServerConfig) -> Store:
    """``store_for(config)``, already opening in a background thread."""
    store = store_for(config)

    def open_quietly() -> None:
        try:
            store.open()
        except Exception:  # the server's own open() runs it again and reports the error
            pass

    threading.Thread(target=open_quietly, name="store-open", daemon=True).start()
    return store
