"""The one place the client SDK turns ``grpc.RpcError`` into edgecloud's typed errors.

Contract: inside ``translate_rpc_errors()`` any ``grpc.RpcError`` (sync or ``grpc.aio``) is
re-raised as the ``edgecloud.errors.InferenceError`` subclass for its status code
(``edgecloud.status.kind_from_grpc`` + ``edgecloud.errors.error_for_kind``), ``from`` the RpcError,
carrying the server's message. A ``retry-after`` trailing metadata value (seconds, as the
edgecloud servers send it) becomes ``retry_after_s``. Other exceptions pass through untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from edgecloud.errors import InferenceError, error_for_kind
from edgecloud.status import kind_from_grpc

__all__ = ["error_from_rpc", "translate_rpc_errors"]

_RETRY_AFTER = "retry-after"


def _retry_after_s(exc: grpc.RpcError) -> float | None:
    trailing = getattr(exc, "trailing_metadata", None)
    if trailing is None:
        return None
    for key, value in trailing() or ():
        if key == _RETRY_AFTER:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return seconds if seconds > 0 else None
    return None


def error_from_rpc(exc: grpc.RpcError) -> InferenceError:
    """The typed error for a failed call (an RpcError without a code reads as INTERNAL)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or (code.name if code else "rpc failed")
    error = error_for_kind(kind_from_grpc(code), details)
    error.retry_after_s = _retry_after_s(exc)
    return error


@contextmanager
def translate_rpc_errors() -> Iterator[None]:
    """Re-raise ``grpc.RpcError`` as a typed ``InferenceError`` (works around sync and ``await``)."""
    try:
        yield
    except grpc.RpcError as exc:
        raise error_from_rpc(exc) from exc
