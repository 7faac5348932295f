"""Cache keys: SHA-256 over a canonical, length-prefixed encoding of everything that can change
the answer.

Contract for ``cache_key(request, ignored)``:
- Covered: the tenant, model name, the *resolved* model version (``CacheRequest.model_version``,
  so a new version never reads an older version's entries), every input's name, datatype, shape
  and raw bytes, every input's parameters, the requested outputs in request order with their
  parameters, and the request parameters.
- Canonical: inputs are taken in name order (names are unique; order does not change the answer);
  typed ``contents`` are converted to the protocol's raw little-endian form, so a tensor sent typed
  and the same tensor sent in ``raw_input_contents`` share a key; integers are keyed by value
  whether sent as int64 or uint64; parameters are keyed in name order.
- Unambiguous: every variable-length field is prefixed by its length and every list by its count,
  so no two different requests encode to the same byte string (``[2, 3]`` and ``[3, 2]`` over the
  same bytes differ, as do ``"ab" + "c"`` and ``"a" + "bc"``).
- Left out (``EXCLUDED_PARAMETERS`` plus the caller's ``ignored``): the request ``id``; the
  cache-control parameters ``no_cache`` and ``quality`` (quality is answered by the entry's
  provenance, not by the key); the REST transport parameters (``binary_data_size``,
  ``binary_data``, ``binary_data_output``: how tensors travel, not what they are); and the
  scheduling-only ``priority`` and ``timeout``. Any other parameter is part of the key, so an
  unknown parameter can only cost hits, never return a wrong answer.
- ``uncacheable(msg)`` is true for stateful (sequence) requests, whose answer depends on state
  the key cannot see.
``InvalidArgument``-class problems were refused before the cache is asked; this module assumes a
validated request.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

import numpy as np

from edgecloud.codec import serialize_bytes
from edgecloud.datatypes import DATATYPES
from edgecloud.json_codec import TRANSPORT_PARAMETERS
from gateway.cache_api import NO_CACHE_PARAMETER, QUALITY_PARAMETER, CacheRequest
from protos import inference_pb2 as pb

__all__ = ["EXCLUDED_PARAMETERS", "KEY_DOMAIN", "SEQUENCE_PARAMETERS", "cache_key", "canonical_raw", "uncacheable"]

KEY_DOMAIN = b"edgecloud/result-cache-key/v1"
"""Versions the encoding: changing the encoding changes this, so old and new keys never meet."""
CACHE_CONTROL_PARAMETERS = frozenset({NO_CACHE_PARAMETER, QUALITY_PARAMETER})
SCHEDULING_PARAMETERS = frozenset({"priority", "timeout"})
EXCLUDED_PARAMETERS = CACHE_CONTROL_PARAMETERS | TRANSPORT_PARAMETERS | SCHEDULING_PARAMETERS
"""Parameters that never change the answer and are left out of every key."""
SEQUENCE_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end"})
"""Stateful-model parameters: a request carrying one is never cached."""

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


def _put(parts: list[bytes], data: bytes) -> None:
    parts.append(_U64.pack(len(data)))
    parts.append(data)


def _put_str(parts: list[bytes], text: str) -> None:
    _put(parts, text.encode("utf-8"))


def _parameter_value(value: pb.InferParameter) -> bytes:
    choice = value.WhichOneof("parameter_choice")
    if choice == "bool_param":
        return b"b\x01" if value.bool_param else b"b\x00"
    if choice == "int64_param":
        return b"i" + str(value.int64_param).encode()
    if choice == "uint64_param":
        return b"i" + str(value.uint64_param).encode()
    if choice == "double_param":
        return b"d" + _F64.pack(value.double_param)
    if choice == "string_param":
        return b"s" + value.string_param.encode("utf-8")
    return b"n"


def _put_parameters(parts: list[bytes], params: Mapping[str, pb.InferParameter], ignored: frozenset[str]) -> None:
    if not params:  # the common case: no map iteration at all
        parts.append(b"\x00\x00\x00\x00")
        return
    names = sorted(name for name in params if name not in ignored)
    parts.append(_U32.pack(len(names)))
    for name in names:
        _put_str(parts, name)
        _put(parts, _parameter_value(params[name]))


def canonical_raw(tensor: pb.ModelInferRequest.InferInputTensor) -> bytes:
    """The raw little-endian bytes of a tensor sent as typed ``contents`` (the protocol's raw form)."""
    info = DATATYPES[tensor.datatype]
    if info.contents_field is None:
        raise ValueError(f"{tensor.datatype} has no typed contents")
    values = getattr(tensor.contents, info.contents_field)
    if info.name == "BYTES":
        return serialize_bytes(values)
    return np.asarray(values, dtype=info.numpy_dtype).tobytes()


def _put_shape(parts: list[bytes], shape: Iterable[int]) -> None:
    dims = list(shape)
    parts.append(_U32.pack(len(dims)))
    parts.append(struct.pack(f"<{len(dims)}q", *dims))


def cache_key(request: CacheRequest, ignored: frozenset[str] = EXCLUDED_PARAMETERS) -> bytes:
    """The 32-byte SHA-256 digest that identifies ``request``'s answer (see the module contract)."""
    msg = request.msg
    parts: list[bytes] = [KEY_DOMAIN]
    _put_str(parts, request.tenant)
    _put_str(parts, msg.model_name)
    _put_str(parts, request.model_version)
    raw = msg.raw_input_contents
    inputs = msg.inputs
    order = range(len(inputs)) if len(inputs) == 1 else sorted(range(len(inputs)), key=lambda i: inputs[i].name)
    parts.append(_U32.pack(len(inputs)))
    for index in order:
        tensor = inputs[index]
        _put_str(parts, tensor.name)
        _put_str(parts, tensor.datatype)
        _put_shape(parts, tensor.shape)
        _put_parameters(parts, tensor.parameters, ignored)
        _put(parts, raw[index] if raw else canonical_raw(tensor))
    parts.append(_U32.pack(len(msg.outputs)))
    for output in msg.outputs:
        _put_str(parts, output.name)
        _put_parameters(parts, output.parameters, ignored)
    _put_parameters(parts, msg.parameters, ignored)
    return hashlib.sha256(b"".join(parts)).digest()


def uncacheable(msg: pb.ModelInferRequest) -> bool:
    """True when the answer depends on state outside the request (sequence/stateful models)."""
    params = msg.parameters
    return bool(params) and any(name in params for name in SEQUENCE_PARAMETERS)
