"""Turn request contents (image, text, raw vector, stored id) into one [N, D] matrix."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from embedserve.errors import EmbedServeError, FailedPrecondition, InvalidArgument, item_error, readdress
from embedserve.models.registry import ImageInput, Model, TextInput
from embedserve.server.convert import Content, IdRef
from embedserve.store import Collection


async def resolve(
    contents: list[Content],
    *,
    dim: int,
    model: Model | None,
    model_name: str,
    collection: Collection | None,
    deadline: float | None,
    run_blocking: Callable,
    noun: str = "item",
) -> np.ndarray:
    """Vectors for ``contents`` in order: float32 [len(contents), dim].

    Raw vectors are checked for dimension here; images and texts go through
    ``model`` (all of them in one call, so they batch together); ids are looked
    up in ``collection``. An error names the position in ``contents``.
    """
    out = np.empty((len(contents), dim), dtype=np.float32)
    to_embed: list[int] = []
    to_lookup: list[int] = []
    for i, content in enumerate(contents):
        if isinstance(content, np.ndarray):
            if content.shape != (dim,):
                raise item_error(
                    InvalidArgument, i, f"vector has dimension {content.shape[0]}, expected {dim}", noun=noun
                )
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
            inputs: list[ImageInput | TextInput] = [contents[i] for i in to_embed]  # type: ignore[misc]
            out[to_embed] = await model.embed(inputs, deadline=deadline)
        except EmbedServeError as err:
            raise readdress(err, to_embed, noun) from None
    if to_lookup:
        ids = [contents[i].id for i in to_lookup]  # type: ignore[union-attr]
        try:
            out[to_lookup] = await run_blocking(collection.vectors_of, ids)
        except EmbedServeError as err:
            raise readdress(err, to_lookup, noun) from None
    return out
