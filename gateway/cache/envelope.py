"""The stored value: a fixed binary header followed by the serialized ``ModelInferResponse``.

Layout (little-endian, ``HEADER.size`` = 44 bytes)::

    offset size  field
    0      4     magic  b"ECRC"
    4      1     format version (1)
    5      1     provenance: 1 = edge (INT8), 2 = cloud (full precision)
    6      2     reserved, 0
    8      8     created_at: float64, Unix seconds (wall clock: entries are shared across hosts)
    16     8     expires_at: float64, Unix seconds
    24     4     compute_s: float32, seconds the answer took to compute (XFetch's delta)
    28     4     body length: uint32
    32     4     CRC-32 of the body
    36     8     the first 8 bytes of the key digest the entry was written under
    44     ...   ModelInferResponse bytes

Contract: ``decode(value, digest)`` returns an ``Entry`` or raises ``CorruptEntry`` (wrong magic
or version, unknown provenance, a length or checksum that does not match, an entry written under
another key, or a body that is not a ``ModelInferResponse``); it never raises anything else. The
body's outputs are decoded only if something reads them (a hit relayed over gRPC never does; see
``edgecloud.codec.WireResponse``). No pickle: nothing in a value is ever executed.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from edgecloud.codec import response_from_wire
from edgecloud.errors import InferenceError
from edgecloud.types import InferResponse

__all__ = ["HEADER", "MAGIC", "VERSION", "CorruptEntry", "Entry", "Provenance", "decode", "encode"]

MAGIC = b"ECRC"
VERSION = 1
HEADER = struct.Struct("<4sBBHddfII8s")


class Provenance(enum.IntEnum):
    """Who computed a cached answer."""

    EDGE = 1
    CLOUD = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, served_by: str) -> Provenance | None:
        """``Served.served_by`` -> provenance; None for anything that is not a computed answer."""
        return _BY_LABEL.get(served_by)


_BY_LABEL = {p.name.lower(): p for p in Provenance}


class CorruptEntry(ValueError):
    """A stored value that is not a valid entry for its key (counted, then treated as a miss)."""


@dataclass(frozen=True, slots=True)
class Entry:
    response: InferResponse
    """Decoded, with the stored bytes as its ``wire`` (a front sends them without encoding again)."""
    provenance: Provenance
    created_at: float
    expires_at: float
    compute_s: float


def encode(body: bytes, provenance: Provenance, *, created_at: float, expires_at: float, compute_s: float,
           digest: bytes) -> bytes:
    """Header + ``body`` (a serialized ``ModelInferResponse``)."""
    header = HEADER.pack(MAGIC, VERSION, int(provenance), 0, created_at, expires_at, compute_s, len(body),
                         zlib.crc32(body), digest[:8])
    return header + body


def decode(value: bytes, digest: bytes) -> Entry:
    if len(value) < HEADER.size:
        raise CorruptEntry(f"{len(value)} bytes is shorter than the header")
    magic, version, provenance, _, created_at, expires_at, compute_s, length, crc, owner = \
        HEADER.unpack_from(value)
    if magic != MAGIC:
        raise CorruptEntry("not an edgecloud cache entry (bad magic)")
    if version != VERSION:
        raise CorruptEntry(f"entry format version {version}, expected {VERSION}")
    if provenance not in (1, 2):
        raise CorruptEntry(f"unknown provenance {provenance}")
    if length != len(value) - HEADER.size:
        raise CorruptEntry(f"body is {len(value) - HEADER.size} bytes, header says {length}")
    body = value[HEADER.size:]
    if zlib.crc32(body) != crc:
        raise CorruptEntry("body checksum mismatch")
    if owner != digest[:8]:
        raise CorruptEntry("entry was written under another key")
    try:
        response = response_from_wire(body)
    except InferenceError as exc:
        raise CorruptEntry(f"body is not a valid ModelInferResponse: {exc.message}") from None
    return Entry(response, Provenance(provenance), created_at, expires_at, compute_s)
