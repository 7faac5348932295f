"""The one place a gRPC failure becomes edgecloud's typed error.

Contract: ``error_from_rpc(exc)`` turns any ``grpc.RpcError`` (sync or ``grpc.aio``) into the
``InferenceError`` subclass for its status code (``edgecloud.status.kind_from_grpc``), carrying the
server's message and its retry hint: a ``retry-after`` trailing metadata value (seconds, as the
edgecloud servers send it) becomes ``retry_after_s``, and RESOURCE_EXHAUSTED *with* a hint is a
server shedding load (``Overloaded``, retryable elsewhere) rather than a request too large for it.
``translate_rpc_errors()`` re-raises inside its block, ``from`` the RpcError; other exceptions pass
through untouched. Used by the SDK and by the gateway's upstream calls alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from edgecloud.errors import ErrorKind, InferenceError, error_for_kind
from edgecloud.status import kind_from_grpc

__all__ = ["RETRY_AFTER_KEY", "error_from_rpc", "retry_after_s", "translate_rpc_errors"]

RETRY_AFTER_KEY = "retry-after"
"""Trailing metadata key of a retry hint, in seconds (also what edgecloud servers send)."""


def retry_after_s(exc: grpc.RpcError) -> float | None:
    """The positive retry hint a failed call carries, or None."""
    trailing = getattr(exc, "trailing_metadata", None)
    if trailing is None:
        return None
    try:
        metadata = trailing() or ()
    except Exception:  # a call that never reached the server may have no trailers to read
        return None
    for key, value in metadata:
        if key == RETRY_AFTER_KEY:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return seconds if 0 < seconds < float("inf") else None
    return None


def error_from_rpc(exc: grpc.RpcError) -> InferenceError:
    """The typed error for a failed call (an RpcError without a code reads as INTERNAL)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or (code.name if code else "rpc failed")
    kind = kind_from_grpc(code)
    hint = retry_after_s(exc)
    if kind is ErrorKind.RESOURCE_EXHAUSTED and hint is not None:
        kind = ErrorKind.OVERLOADED
    return error_for_kind(kind, details, retry_after_s=hint)


@contextmanager
def translate_rpc_errors() -> Iterator[None]:
    """Re-raise ``grpc.RpcError`` as a typed ``InferenceError`` (works around sync and ``await``)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
