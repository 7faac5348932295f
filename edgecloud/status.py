"""The one table from error kinds to gRPC status codes and HTTP statuses.

Contract: ``grpc_code(kind)`` / ``http_status(kind)`` for outgoing errors and
``kind_from_grpc(code)`` for errors received from an upstream server. Nothing else in the code
base maps status codes.
"""

from __future__ import annotations

import grpc

from edgecloud.errors import ErrorKind

STATUS_TABLE: dict[ErrorKind, tuple[grpc.StatusCode, int]] = {
    ErrorKind.INVALID_ARGUMENT: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    ErrorKind.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, 404),
    ErrorKind.RESOURCE_EXHAUSTED: (grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    ErrorKind.OVERLOADED: (grpc.StatusCode.RESOURCE_EXHAUSTED, 503),
    ErrorKind.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, 503),
    ErrorKind.DEADLINE_EXCEEDED: (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    ErrorKind.CANCELLED: (grpc.StatusCode.CANCELLED, 499),
    ErrorKind.FAILED_PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, 400),
    ErrorKind.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, 401),
    ErrorKind.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, 403),
    ErrorKind.UNIMPLEMENTED: (grpc.StatusCode.UNIMPLEMENTED, 501),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: (grpc.StatusCode.INVALID_ARGUMENT, 415),
    ErrorKind.REQUEST_TIMEOUT: (grpc.StatusCode.DEADLINE_EXCEEDED, 408),
    ErrorKind.INTERNAL: (grpc.StatusCode.INTERNAL, 500),
}

_KIND_FROM_GRPC: dict[grpc.StatusCode, ErrorKind] = {}
for _kind, (_code, _http) in STATUS_TABLE.items():
    _KIND_FROM_GRPC.setdefault(_code, _kind)


def grpc_code(kind: ErrorKind) -> grpc.StatusCode:
    return STATUS_TABLE[kind][0]


def http_status(kind: ErrorKind) -> int:
    return STATUS_TABLE[kind][1]


def kind_from_grpc(code: grpc.StatusCode) -> ErrorKind:
    """The error kind for a status received from upstream (unknown codes are INTERNAL)."""
    return _KIND_FROM_GRPC.get(code, ErrorKind.INTERNAL)
