"""One translation from a gRPC failure to a typed error, shared by the SDK and the gateway; the
error kinds' retry and health traits as one table."""

from __future__ import annotations

import grpc
import pytest

from edgecloud.errors import (
    KIND_TRAITS,
    ErrorKind,
    InternalError,
    InvalidArgument,
    NotFound,
    Overloaded,
    ResourceExhausted,
    Unavailable,
)
from edgecloud.rpc_errors import error_from_rpc, translate_rpc_errors


class FakeRpcError(grpc.RpcError):
    def __init__(self, code, details="", trailing=()):
        self._code, self._details, self._trailing = code, details, trailing

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


def test_resource_exhausted_with_a_retry_hint_is_a_server_shedding_load():
    error = error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "at capacity", (("retry-after", "0.25"),)))
    assert isinstance(error, Overloaded) and error.retry_after_s == 0.25 and error.retryable
    too_big = error_from_rpc(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "message too large"))
    assert isinstance(too_big, ResourceExhausted) and too_big.retry_after_s is None and not too_big.retryable


@pytest.mark.parametrize("hint", ["nan", "-1", "0", "soon", "inf"])
def test_unusable_retry_hints_are_dropped(hint):
    error = error_from_rpc(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "x", (("retry-after", hint),)))
    assert error.retry_after_s is None


def test_translation_keeps_the_cause():
    original = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")
    with pytest.raises(Unavailable) as info:
        with translate_rpc_errors():
            raise original
    assert info.value.__cause__ is original and info.value.message == "connection refused"


def test_every_kind_says_whether_it_is_retryable_and_whether_it_is_the_backends_fault():
    assert set(KIND_TRAITS) == set(ErrorKind)
    retryable = {kind for kind in ErrorKind if kind.retryable}
    faults = {kind for kind in ErrorKind if kind.backend_fault}
    assert retryable == {ErrorKind.UNAVAILABLE, ErrorKind.DEADLINE_EXCEEDED, ErrorKind.INTERNAL, ErrorKind.OVERLOADED,
                         ErrorKind.CANCELLED}
    assert faults == {ErrorKind.UNAVAILABLE, ErrorKind.DEADLINE_EXCEEDED, ErrorKind.INTERNAL}
    assert faults <= retryable  # a backend's own failure can always be tried elsewhere


@pytest.mark.parametrize(("code", "error"), [
    (grpc.StatusCode.NOT_FOUND, NotFound),
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    (grpc.StatusCode.UNAVAILABLE, Unavailable),
    (grpc.StatusCode.UNKNOWN, InternalError),
])
def test_rpc_errors_become_typed_errors_with_the_servers_message_and_hint(code, error):
    rpc_error = FakeRpcError(code, "server says why", (("retry-after", "1.500"),))
    with pytest.raises(error, match="server says why") as info:
        with translate_rpc_errors():
            raise rpc_error
    assert info.value.__cause__ is rpc_error
    assert info.value.retry_after_s == 1.5


def test_other_exceptions_pass_through():
    with pytest.raises(KeyError):
        with translate_rpc_errors():
            raise KeyError("x")
