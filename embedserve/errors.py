"""Typed errors: each maps to exactly one gRPC status code.

Raise them once, at the edge that knows the cause, with a message that names
the offending item (``"item 3: ..."``). The gRPC layer turns them into a status
and never invents messages of its own.
"""

from __future__ import annotations

import grpc


class EmbedServeError(Exception):
    """Base class; ``code`` is the gRPC status the client receives."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.index: int | None = None
        self.detail: str = message


class InvalidArgument(EmbedServeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(EmbedServeError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EmbedServeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(EmbedServeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(EmbedServeError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(EmbedServeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DeadlineExceeded(EmbedServeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(EmbedServeError):
    code = grpc.StatusCode.UNAVAILABLE


def item_error(
    cls: type[EmbedServeError], index: int, message: str, *, noun: str = "item"
) -> EmbedServeError:
    """An error about the ``index``-th item of a batch, worded the same everywhere.

    The index and the bare reason are kept on the error (``.index``, ``.detail``)
    so a caller that handed a sub-list to a lower layer can re-address it with
    :func:`readdress` to the position the client sent.
    """
    err = cls(f"{noun} {index}: {message}")
    err.index = index
    err.detail = message
    return err


def readdress(err: EmbedServeError, positions: list[int], noun: str = "item") -> EmbedServeError:
    """Re-address an item error raised on ``sublist`` to ``positions[index]`` of the request."""
    index = getattr(err, "index", None)
    if index is None or not 0 <= index < len(positions):
        return err
    return item_error(type(err), positions[index], err.detail, noun=noun)
