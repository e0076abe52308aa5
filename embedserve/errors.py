"""Typed errors: each class names one kind of fault, and knows nothing of any transport.

Raise them once, at the edge that knows the cause, with a message that names
the offending item (``"item 3: ..."``). The gRPC layer alone turns a kind into a
status code (``embedserve.server.status``) and never invents messages of its own,
so store/, models/ and training/ can raise these without grpcio.
"""

from __future__ import annotations


class EmbedServeError(Exception):
    """Base class, and the kind for a fault of the server itself (a bug, a failed inference)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.index: int | None = None
        self.detail: str = message


class InvalidArgument(EmbedServeError):
    """The request is malformed or names a value outside what the API allows."""


class NotFound(EmbedServeError):
    """A named collection, model or item does not exist."""


class AlreadyExists(EmbedServeError):
    """A collection of that name exists already."""


class ResourceExhausted(EmbedServeError):
    """The request is over a configured size or work limit."""


class Unauthenticated(EmbedServeError):
    """No valid bearer token."""


class FailedPrecondition(EmbedServeError):
    """The request is well formed but the system is not in a state to run it."""


class BundleError(FailedPrecondition):
    """A bundle directory or its manifest is unusable; the message names file and field."""


class DeadlineExceeded(EmbedServeError):
    """The caller's deadline passed before the work was done."""


class Cancelled(EmbedServeError):
    """The caller cancelled the call (or went away) before the work was done."""


class Unavailable(EmbedServeError):
    """The server, a model or a collection cannot take the request now (starting, closed, broken)."""


QUOTE_CHARS = 100  # how much of a client's value an error message repeats


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length said: messages name the
    offending value without echoing a megabyte of it back (gRPC caps the size of a status message)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str | bytes) else f"{len(text)} characters as text"
    return f"{text[:limit]}... ({size})"


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
    index = err.index
    if index is None or not 0 <= index < len(positions):
        return err
    return item_error(type(err), positions[index], err.detail, noun=noun)
