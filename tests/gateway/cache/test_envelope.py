"""The stored value's envelope: round trip, and every kind of damage is a ``CorruptEntry``."""

from __future__ import annotations

import pickle
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecloud.codec import response_to_wire
from gateway.cache.envelope import HEADER, CorruptEntry, Provenance, decode, encode
from tests.gateway.cache.conftest import embedding_response, text_msg

DIGEST = bytes(range(32))


def stored(provenance=Provenance.EDGE) -> tuple[bytes, bytes]:
    body = response_to_wire(embedding_response(text_msg(["x"]), 1))
    return encode(body, provenance, created_at=1000.5, expires_at=1300.5, compute_s=0.007, digest=DIGEST), body


def test_round_trip_keeps_the_response_bit_identical_and_the_provenance():
    value, body = stored(Provenance.CLOUD)
    assert HEADER.size == 44 and value[:4] == b"ECRC"
    entry = decode(value, DIGEST)
    assert entry.response.wire == body and response_to_wire(entry.response)[:len(body)] == body
    assert entry.provenance is Provenance.CLOUD
    assert (entry.created_at, entry.expires_at) == (1000.5, 1300.5)
    assert entry.compute_s == pytest.approx(0.007)


@pytest.mark.parametrize("damage", ["truncate", "magic", "version", "provenance", "length", "flip", "other_key",
                                    "empty", "pickle", "json"])
def test_damaged_or_foreign_values_are_corrupt_entries(damage):
    value, _ = stored()
    b = bytearray(value)
    if damage == "truncate":
        b = b[:-10]
    elif damage == "magic":
        b[0:4] = b"XXXX"
    elif damage == "version":
        b[4] = 9
    elif damage == "provenance":
        b[5] = 7
    elif damage == "length":
        struct.pack_into("<I", b, 28, 3)
    elif damage == "flip":
        b[-1] ^= 0x01  # one float bit in the embedding: the checksum catches it
    elif damage == "other_key":
        b = bytearray(encode(bytes(value[HEADER.size:]), Provenance.EDGE, created_at=0, expires_at=1, compute_s=0,
                             digest=bytes(32)))
    elif damage == "empty":
        b = bytearray()
    elif damage == "pickle":
        b = bytearray(pickle.dumps({"outputs": [1, 2, 3]}))
    elif damage == "json":
        b = bytearray(b'{"outputs": []}')
    with pytest.raises(CorruptEntry):
        decode(bytes(b), DIGEST)


def test_a_valid_header_over_a_body_that_is_not_a_response_is_corrupt():
    body = b"\xff\xff\xff\xff"  # not a protobuf message
    with pytest.raises(CorruptEntry):
        decode(encode(body, Provenance.EDGE, created_at=0, expires_at=1, compute_s=0, digest=DIGEST), DIGEST)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_corrupt_entry(junk):
    try:
        decode(junk, DIGEST)
    except CorruptEntry:
        pass


def test_provenance_of_served_by():
    assert Provenance.of("edge") is Provenance.EDGE and Provenance.of("cloud") is Provenance.CLOUD
    assert Provenance.of("cache") is None and Provenance.EDGE.label == "edge"
