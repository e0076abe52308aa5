"""Limits on one request's work and on what one item may hold, and the checks that enforce them.

One ``Limits`` object is built from the server's configuration (each field is a
setting of the same name: ``--max-queries``, ``EMBEDSERVE_MAX_QUERIES``, TOML
``max_queries``). The server checks a request against it when the request
arrives, before any decoding, embedding or searching (``embedserve.server.admission``);
the store checks the same limits for callers that use it as a library.

A request over a limit on *work or size* (too many queries, too big a reply) is
ResourceExhausted; a value outside what the API allows (k = 0, a negative
nprobe) is InvalidArgument. Either message names the limit, so a client knows
which setting to ask an operator for.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from embedserve.errors import InvalidArgument, ResourceExhausted, item_error, quote

DEFAULT_SEARCH_K = 10  # Search when the request leaves k at 0
MAX_ID_BYTES = 256  # UTF-8 bytes of an item id: part of the API (proto), not a setting
HIT_OVERHEAD_BYTES = 32  # protobuf framing and the score of one hit, beside its id/label/metadata


@dataclass(frozen=True)
class Limits:
    """Configurable limits. Memory for one request is bounded by these and ``max_message_bytes``."""

    max_k: int = 1024  # results per query (Search, Classify)
    max_queries: int = 1024  # queries in one Search or Classify
    max_results: int = 65_536  # queries x k in one Search or Classify
    max_ef_search: int = 4096  # HNSW search breadth a request may ask for
    max_nprobe: int = 4096  # IVF lists a request may ask to probe
    max_support: int = 10_000  # labelled examples in one few-shot Classify
    max_support_work: float = 2e10  # queries x support x dim multiply-adds in one few-shot Classify
    max_batch_items: int = 10_000  # inputs of an Embed, items of an Upsert message, ids of a Get or Delete
    max_label_bytes: int = 1024  # UTF-8 bytes of one label
    max_metadata_entries: int = 64  # keys in one item's metadata
    max_metadata_bytes: int = 16_384  # UTF-8 bytes of one item's metadata keys and values together
    max_ivf_lists: int = 65_536  # IVF list count in an index spec ("IVF<n>")
    max_hnsw_m: int = 128  # HNSW links per node in an index spec ("HNSW<M>")
    max_label_k: int = 100  # neighbours a labelling job may ask for (graph, vote, audit)
    max_label_iterations: int = 1000  # label spreading iterations a request may ask for
    max_label_job_bytes: int = 4 << 30  # memory one labelling job may take (k-NN graph, distributions)

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) >= 1:
                raise ValueError(f"{f.name} must be >= 1")

    # --- searches ------------------------------------------------------------------------------

    def check_k(self, k: object) -> int:
        """``k`` if it is an integer in 1..max_k; InvalidArgument otherwise."""
        if not _is_int(k) or not 1 <= k <= self.max_k:  # type: ignore[operator]
            raise InvalidArgument(f"k must be in 1..{self.max_k} (max_k), got {quote(k)}")
        return int(k)  # type: ignore[call-overload]

    def check_queries(self, n: int, k: int) -> None:
        """At least one query, at most max_queries, and at most max_results hits in all."""
        if n < 1:
            raise InvalidArgument("queries is empty")
        if n > self.max_queries:
            raise ResourceExhausted(f"{n} queries in one request is over max_queries ({self.max_queries})")
        if n * k > self.max_results:
            raise ResourceExhausted(
                f"{n} queries x k {k} = {n * k} results is over max_results ({self.max_results}); "
                "send fewer queries per request or ask for a smaller k"
            )

    def check_search_params(self, nprobe: object, ef_search: object) -> None:
        """``nprobe`` in 0..max_nprobe and ``ef_search`` in 0..max_ef_search (0 = the index's own setting)."""
        for name, value, limit in (
            ("nprobe", nprobe, self.max_nprobe),
            ("ef_search", ef_search, self.max_ef_search),
        ):
            if not _is_int(value) or value < 0:  # type: ignore[operator]
                raise InvalidArgument(f"{name} must be an integer >= 0, got {quote(value)}")
            if value > limit:  # type: ignore[operator]
                raise ResourceExhausted(f"{name} {value} is over max_{name} ({limit})")

    def check_support(self, queries: int, support: int, dim: int) -> None:
        """A few-shot Classify: at most max_support examples and max_support_work multiply-adds."""
        if support > self.max_support:
            raise ResourceExhausted(
                f"{support} support examples is over max_support ({self.max_support}); "
                "index the support set in a collection instead"
            )
        if queries * support * dim > self.max_support_work:
            raise ResourceExhausted(
                f"{queries} queries x {support} support examples x dim {dim} is over "
                f"max_support_work ({self.max_support_work:.0e} multiply-adds); "
                "index the support set in a collection instead"
            )

    # --- labelling jobs ------------------------------------------------------------------------

    def check_label_job(self, k: int, iterations: int, estimate: int, items: int) -> None:
        """A labelling job: k in 1..max_label_k, iterations in 0..max_label_iterations, and its
        estimated memory (``estimate`` bytes over ``items`` items) within max_label_job_bytes."""
        if not _is_int(k) or not 1 <= k <= self.max_label_k:
            raise InvalidArgument(f"k must be in 1..{self.max_label_k} (max_label_k), got {quote(k)}")
        if not _is_int(iterations) or not 0 <= iterations <= self.max_label_iterations:
            raise InvalidArgument(
                f"max_iterations must be in 0..{self.max_label_iterations} (max_label_iterations), "
                f"got {quote(iterations)}"
            )
        if estimate > self.max_label_job_bytes:
            raise ResourceExhausted(
                f"a labelling job over {items} items with k {k} needs about {estimate / 2**20:.1f} MiB, "
                f"over max_label_job_bytes ({self.max_label_job_bytes / 2**20:.1f} MiB)"
            )

    # --- batches and items ---------------------------------------------------------------------

    def check_batch(self, n: int, noun: str = "items") -> None:
        """At most max_batch_items inputs, items or ids in one request (or stream message)."""
        if n > self.max_batch_items:
            raise ResourceExhausted(
                f"{n} {noun} in one request is over max_batch_items ({self.max_batch_items}); split it"
            )

    def check_label(self, label: str, index: int, noun: str = "item") -> None:
        """One label of at most max_label_bytes UTF-8 bytes (``index``: the item's position)."""
        # fast path: no string of <= limit/4 characters exceeds the limit in UTF-8
        if len(label) <= self.max_label_bytes // 4:
            return
        size = _utf8_size(label, index, "label")
        if size > self.max_label_bytes:
            raise item_error(
                ResourceExhausted,
                index,
                f"label is {size} bytes long, over max_label_bytes ({self.max_label_bytes})",
                noun=noun,
            )

    def metadata_size(self, metadata: dict[str, str], index: int) -> int:
        """UTF-8 bytes of an item's metadata keys and values; ResourceExhausted over the limits."""
        if len(metadata) > self.max_metadata_entries:
            raise item_error(
                ResourceExhausted,
                index,
                f"metadata has {len(metadata)} keys, over max_metadata_entries ({self.max_metadata_entries})",
            )
        size = sum(
            _utf8_size(k, index, "metadata") + _utf8_size(v, index, "metadata") for k, v in metadata.items()
        )
        if size > self.max_metadata_bytes:
            raise item_error(
                ResourceExhausted,
                index,
                f"metadata is {size} bytes, over max_metadata_bytes ({self.max_metadata_bytes})",
            )
        return size


DEFAULT_LIMITS = Limits()
LIMIT_NAMES = frozenset(f.name for f in fields(Limits))


def check_reply(nbytes: int, max_message_bytes: int, what: str) -> None:
    """ResourceExhausted before any work if a reply could be over the message size limit."""
    if nbytes > max_message_bytes:
        raise ResourceExhausted(
            f"{what} could be up to {nbytes} bytes, over max_message_bytes ({max_message_bytes}); "
            "ask for less in one request"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _utf8_size(text: str, index: int, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise item_error(InvalidArgument, index, f"{what} is not valid Unicode text") from None
