"""The one error root of edgecloud and its kinds.

Contract: every error that reaches a client is an ``InferenceError`` with an ``ErrorKind``; the
transports map kinds to gRPC / HTTP status in ``edgecloud.status`` (one table). Messages name the
offending field (``inputs[text].shape``) and never carry file paths, addresses or secrets. This
module imports no transport or web framework.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorKind(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    FAILED_PRECONDITION = "failed_precondition"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    UNIMPLEMENTED = "unimplemented"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    REQUEST_TIMEOUT = "request_timeout"
    INTERNAL = "internal"

    @property
    def retryable(self) -> bool:
        """Another backend (or a later attempt) may answer what failed with this kind."""
        return KIND_TRAITS[self].retryable

    @property
    def backend_fault(self) -> bool:
        """The failure says something is wrong with the backend itself: it counts against that
        backend's health (marked down, outlier ejection), not against the request."""
        return KIND_TRAITS[self].backend_fault


@dataclass(frozen=True, slots=True)
class KindTraits:
    retryable: bool
    backend_fault: bool


KIND_TRAITS: dict[ErrorKind, KindTraits] = {
    # The request itself is at fault: every backend would answer the same.
    ErrorKind.INVALID_ARGUMENT: KindTraits(retryable=False, backend_fault=False),
    ErrorKind.NOT_FOUND: KindTraits(retryable=False, backend_fault=False),
    ErrorKind.RESOURCE_EXHAUSTED: KindTraits(retryable=False, backend_fault=False),
    ErrorKind.FAILED_PRECONDITION: KindTraits(retryable=False, backend_fault=False),
    ErrorKind.UNAUTHENTICATED: KindTraits(retryable=False, backend_fault=False),
    ErrorKind.PERMISSION_DENIED: KindTraits(retryable=False, backend_fault=False),
    ErrorKind.UNIMPLEMENTED: KindTraits(retryable=False, backend_fault=False),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: KindTraits(retryable=False, backend_fault=False),
    ErrorKind.REQUEST_TIMEOUT: KindTraits(retryable=False, backend_fault=False),
    # A healthy backend that is busy: try another, but do not hold it against this one.
    ErrorKind.OVERLOADED: KindTraits(retryable=True, backend_fault=False),
    ErrorKind.CANCELLED: KindTraits(retryable=True, backend_fault=False),
    # The backend failed, could not be reached, or did not answer in time.
    ErrorKind.UNAVAILABLE: KindTraits(retryable=True, backend_fault=True),
    ErrorKind.DEADLINE_EXCEEDED: KindTraits(retryable=True, backend_fault=True),
    ErrorKind.INTERNAL: KindTraits(retryable=True, backend_fault=True),
}
"""Whether each kind may be retried elsewhere and whether it counts against a backend: the one
place routing and failover ask (never a set of status codes)."""


MAX_ECHO = 256


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + f"... ({len(text)} characters)"


class InferenceError(Exception):
    """Base of every error a client may see. ``field`` is the request field at fault, if any."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: float | None = None):
        # Client-supplied names can be arbitrarily long: never echo more than a bounded amount.
        self.message = f"{_clip(field)}: {_clip(message)}" if field else _clip(message)
        self.field = field
        self.retry_after_s = retry_after_s
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        return self.kind.retryable

    @property
    def backend_fault(self) -> bool:
        return self.kind.backend_fault


class InvalidArgument(InferenceError):
    kind = ErrorKind.INVALID_ARGUMENT


class NotFound(InferenceError):
    kind = ErrorKind.NOT_FOUND


class ResourceExhausted(InferenceError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


class Overloaded(InferenceError):
    """Past capacity: shed at once with a retry hint (``retry_after_s``)."""

    kind = ErrorKind.OVERLOADED


class Unavailable(InferenceError):
    kind = ErrorKind.UNAVAILABLE


class DeadlineExceeded(InferenceError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class Cancelled(InferenceError):
    kind = ErrorKind.CANCELLED


class FailedPrecondition(InferenceError):
    kind = ErrorKind.FAILED_PRECONDITION


class Unauthenticated(InferenceError):
    kind = ErrorKind.UNAUTHENTICATED


class PermissionDenied(InferenceError):
    kind = ErrorKind.PERMISSION_DENIED


class Unimplemented(InferenceError):
    kind = ErrorKind.UNIMPLEMENTED


class UnsupportedMediaType(InferenceError):
    kind = ErrorKind.UNSUPPORTED_MEDIA_TYPE


class RequestTimeout(InferenceError):
    """The client did not send its request in time (a body that stops arriving)."""

    kind = ErrorKind.REQUEST_TIMEOUT


class InternalError(InferenceError):
    kind = ErrorKind.INTERNAL


_BY_KIND: dict[ErrorKind, type[InferenceError]] = {
    cls.kind: cls
    for cls in (
        InvalidArgument,
        NotFound,
        ResourceExhausted,
        Overloaded,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        Unimplemented,
        UnsupportedMediaType,
        RequestTimeout,
        InternalError,
    )
}


def error_for_kind(kind: ErrorKind, message: str, *, retry_after_s: float | None = None) -> InferenceError:
    """Build the typed error for a kind (used when translating an upstream status)."""
    return _BY_KIND[kind](message, retry_after_s=retry_after_s)
