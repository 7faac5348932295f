"""Cache keys: SHA-256 over a canonical, length-prefixed encoding of everything that can change
the answer.

Contract for ``cache_key(request, ignored)``:
- Covered: the tenant, model name, the *resolved* model version (``CacheRequest.model_version``,
  so a new version never reads an older version's entries), every input's name, datatype, shape
  and data, every input's parameters, the keyed outputs (``CacheRequest.keyed_outputs``) in
  request order with their parameters, and the request parameters.
- Canonical: computed from the decoded tensors, so a tensor sent as typed contents, as raw bytes
  or as JSON shares a key; numeric data is hashed in its little-endian storage form, BYTES elements
  as the protocol's length-prefixed raw form; inputs are taken in name order (names are unique;
  order does not change the answer); parameters are keyed in name order, integers by value.
- Unambiguous: every variable-length field is prefixed by its length and every list by its count,
  so no two different requests encode to the same byte string (``[2, 3]`` and ``[3, 2]`` over the
  same bytes differ, as do ``"ab" + "c"`` and ``"a" + "bc"``).
- Left out (``EXCLUDED_PARAMETERS`` plus the caller's ``ignored``): the request ``id``; the
  cache-control parameters ``no_cache`` and ``quality`` (quality is answered by the entry's
  provenance, not by the key); the REST transport parameters (``binary_data_size``,
  ``binary_data``, ``binary_data_output``: how tensors travel, not what they are); and the
  scheduling-only ``priority`` and ``timeout``. Any other parameter is part of the key, so an
  unknown parameter can only cost hits, never return a wrong answer.
- ``uncacheable(request)`` is true for stateful (sequence) requests, whose answer depends on state
  the key cannot see.
``InvalidArgument``-class problems were refused before the cache is asked; this module assumes a
validated request.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

import numpy as np

from edgecloud.datatypes import DATATYPES
from edgecloud.json_codec import TRANSPORT_PARAMETERS
from edgecloud.types import ParameterValue
from gateway.cache.api import NO_CACHE_PARAMETER, QUALITY_PARAMETER, CacheRequest

__all__ = ["EXCLUDED_PARAMETERS", "KEY_DOMAIN", "SEQUENCE_PARAMETERS", "cache_key", "entry_key", "lease_key", "uncacheable"]

KEY_DOMAIN = b"edgecloud/result-cache-key/v2"
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
_NO_PARAMETERS = _U32.pack(0)


def _update(digest, data: bytes) -> None:
    digest.update(_U64.pack(len(data)))
    digest.update(data)


def _update_str(digest, text: str) -> None:
    _update(digest, text.encode("utf-8"))


def _parameter_value(value: ParameterValue) -> bytes:
    if isinstance(value, bool):
        return b"b\x01" if value else b"b\x00"
    if isinstance(value, int):
        return b"i" + str(value).encode()
    if isinstance(value, float):
        return b"d" + _F64.pack(value)
    return b"s" + str(value).encode("utf-8")


def _update_parameters(digest, params: Mapping[str, ParameterValue], ignored: frozenset[str]) -> None:
    if not params:  # the common case: no map iteration at all
        digest.update(_NO_PARAMETERS)
        return
    names = sorted(name for name in params if name not in ignored)
    digest.update(_U32.pack(len(names)))
    for name in names:
        _update_str(digest, name)
        _update(digest, _parameter_value(params[name]))


def _update_shape(digest, shape: Iterable[int]) -> None:
    dims = tuple(shape)
    digest.update(_U32.pack(len(dims)))
    digest.update(struct.pack(f"<{len(dims)}q", *dims))


def _update_data(digest, datatype: str, data: np.ndarray) -> None:
    if datatype == "BYTES":
        items = data.reshape(-1)
        digest.update(_U64.pack(sum(4 + len(item) for item in items)))
        for item in items:
            digest.update(_U32.pack(len(item)))
            digest.update(item)
        return
    storage = DATATYPES[datatype].numpy_dtype
    array = data if data.dtype == storage and data.flags.c_contiguous else np.ascontiguousarray(data, storage)
    digest.update(_U64.pack(array.nbytes))
    if array.size:
        digest.update(memoryview(array.reshape(-1).view(np.uint8)))  # hashed in place, not copied


def cache_key(request: CacheRequest, ignored: frozenset[str] = EXCLUDED_PARAMETERS) -> bytes:
    """The 32-byte SHA-256 digest that identifies ``request``'s answer (see the module contract)."""
    decoded = request.request
    digest = hashlib.sha256(KEY_DOMAIN)
    _update_str(digest, decoded.tenant)
    _update_str(digest, decoded.model_name)
    _update_str(digest, request.model_version)
    inputs = decoded.inputs
    ordered = inputs if len(inputs) == 1 else sorted(inputs, key=lambda tensor: tensor.name)
    digest.update(_U32.pack(len(inputs)))
    for tensor in ordered:
        _update_str(digest, tensor.name)
        _update_str(digest, tensor.datatype)
        _update_shape(digest, tensor.shape)
        _update_parameters(digest, tensor.parameters, ignored)
        _update_data(digest, tensor.datatype, tensor.data)
    digest.update(_U32.pack(len(request.keyed_outputs)))
    for output in request.keyed_outputs:
        _update_str(digest, output.name)
        _update_parameters(digest, output.parameters, ignored)
    _update_parameters(digest, decoded.parameters, ignored)
    return digest.digest()


def uncacheable(request: CacheRequest) -> bool:
    """True when the answer depends on state outside the request (sequence/stateful models)."""
    params = request.request.parameters
    return bool(params) and any(name in params for name in SEQUENCE_PARAMETERS)


def entry_key(prefix: str, digest: bytes) -> str:
    """The backend key of the entry for ``digest``: ``prefix{hex}``. The braces are a Redis Cluster
    hash tag: the entry and its lease (``lease_key``) live in one slot, so storing an answer and
    releasing its lease is one atomic script. Only the digest is tagged, so entries still spread
    over every slot (tagging by tenant or model would put a whole model on one node)."""
    return f"{prefix}{{{digest.hex()}}}"


def lease_key(entry: str, require_cloud: bool) -> str:
    """The key of the lease a gateway holds while it computes the entry at ``entry`` (see
    ``GatewayCache``): one per quality, since a cloud-quality flight is a separate computation."""
    return entry + (":lease:cloud" if require_cloud else ":lease:any")
