"""The gateway's cache key against an oracle: two requests share a key exactly when a plain Python
model of "everything that changes the answer" says they are the same request.

The oracle (``canonical``) is written from the contract in ``gateway/cache/keys.py``, not from its
code: tenant, model, resolved version; inputs by name with datatype, shape, parameters and raw
bytes; requested outputs in order with their parameters; request parameters; integers by value
whatever their wire type; the excluded parameters left out. Pairs are built to be hard: one
request and a near-twin that moves a byte between two inputs, transposes a shape, retypes the
same bytes, moves a string between tenant and model, a parameter between levels, or changes only
what must not matter (input order, request id, int64 vs uint64, cache-control parameters).

Also: every encoding of one request — gRPC raw, gRPC typed, REST JSON and REST binary as the
gateway's REST front re-encodes them — has one key.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgecloud import codec, json_codec
from edgecloud.datatypes import DATATYPES
from edgecloud.errors import InvalidArgument
from gateway.cache.keys import EXCLUDED_PARAMETERS, cache_key
from gateway.cache.api import CacheRequest
from protos import inference_pb2 as pb
from tests.fuzz.strategies import SMALL, requests

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""For tests that build several requests per example."""
MUTATIONS = ("nothing", "tenant", "tenant<->model", "version", "shape transposed", "shape flattened",
             "datatype, same bytes", "byte moved between inputs", "input renamed", "inputs reordered",
             "parameter retyped", "parameter moved to the input", "int64 -> uint64", "excluded parameter added",
             "id changed", "outputs reordered", "output parameter added", "unknown parameter added")


def _parameter(value: pb.InferParameter):
    choice = value.WhichOneof("parameter_choice")
    if choice in ("int64_param", "uint64_param"):
        return ("int", getattr(value, choice))
    if choice == "double_param":
        return ("float", struct.pack("<d", value.double_param))
    return (choice, getattr(value, choice) if choice else None)


def _parameters(params) -> tuple:
    return tuple(sorted((name, _parameter(value)) for name, value in params.items()
                        if name not in EXCLUDED_PARAMETERS))


def canonical(tenant: str, version: str, msg: pb.ModelInferRequest) -> tuple:
    """The oracle: what the answer depends on, as a comparable value (raw requests only)."""
    inputs = sorted((t.name, t.datatype, tuple(t.shape), _parameters(t.parameters), msg.raw_input_contents[i])
                    for i, t in enumerate(msg.inputs))
    outputs = tuple((o.name, _parameters(o.parameters)) for o in msg.outputs)
    return (tenant, msg.model_name, version, tuple(inputs), outputs, _parameters(msg.parameters))


def key(tenant: str, version: str, msg: pb.ModelInferRequest) -> bytes:
    """The key the gateway computes: over the request as the codec decodes it."""
    request = codec.request_from_proto(msg)
    request.tenant = tenant
    return cache_key(CacheRequest(request, version, tuple(request.outputs), False, False))


def mutate(tenant: str, version: str, msg: pb.ModelInferRequest, how: str,
           data) -> tuple[str, str, pb.ModelInferRequest]:
    """A near-twin of ``msg`` (a copy; ``msg`` is left alone)."""
    out = pb.ModelInferRequest()
    out.CopyFrom(msg)
    first = out.inputs[0]
    if how == "tenant":
        tenant += "x"
    elif how == "tenant<->model":
        tenant, out.model_name = tenant + out.model_name[:1], out.model_name[1:]
    elif how == "version":
        version = "2" if version != "2" else "1"
    elif how == "shape transposed" and len(first.shape) >= 2:
        first.shape[0], first.shape[1] = first.shape[1], first.shape[0]
    elif how == "shape flattened" and len(first.shape) >= 2:
        size = first.shape[0] * first.shape[1]
        del first.shape[:2]
        first.shape.insert(0, size)
    elif how == "datatype, same bytes":
        info = DATATYPES[first.datatype]
        twins = [name for name, other in DATATYPES.items() if name != info.name and other.itemsize == info.itemsize]
        if twins:
            first.datatype = data.draw(st.sampled_from(sorted(twins)))
    elif how == "byte moved between inputs" and len(out.inputs) >= 2 and out.raw_input_contents[0]:
        a, b = out.raw_input_contents[0], out.raw_input_contents[1]
        out.raw_input_contents[0], out.raw_input_contents[1] = a[:-1], a[-1:] + b
    elif how == "input renamed" and len(out.inputs) >= 2:
        out.inputs[0].name, out.inputs[1].name = out.inputs[1].name, out.inputs[0].name
    elif how == "inputs reordered" and len(out.inputs) >= 2:
        order = list(reversed(range(len(out.inputs))))
        tensors = [pb.ModelInferRequest.InferInputTensor() for _ in order]
        for target, index in zip(tensors, order):
            target.CopyFrom(out.inputs[index])
        raws = [out.raw_input_contents[index] for index in order]
        del out.inputs[:]
        del out.raw_input_contents[:]
        out.inputs.extend(tensors)
        out.raw_input_contents.extend(raws)
    elif how == "parameter retyped":  # the original has k = int64 1
        out.parameters["k"].CopyFrom(data.draw(st.sampled_from((
            pb.InferParameter(string_param="1"), pb.InferParameter(bool_param=True),
            pb.InferParameter(double_param=1.0), pb.InferParameter(uint64_param=1)))))
    elif how == "parameter moved to the input":  # the original has k = "v" on the request
        del out.parameters["k"]
        first.parameters["k"].string_param = "v"
    elif how == "int64 -> uint64":
        for params in (out.parameters, first.parameters):
            for value in params.values():
                if value.WhichOneof("parameter_choice") == "int64_param" and value.int64_param >= 0:
                    value.uint64_param = value.int64_param
    elif how == "excluded parameter added":
        name = data.draw(st.sampled_from(sorted(EXCLUDED_PARAMETERS)))
        out.parameters[name].bool_param = True
    elif how == "id changed":
        out.id = out.id + "-again"
    elif how == "outputs reordered" and len(out.outputs) >= 2:
        names = [o.name for o in out.outputs]
        for output, name in zip(out.outputs, reversed(names)):
            output.name = name
    elif how == "output parameter added" and out.outputs:
        out.outputs[0].parameters["temperature"].double_param = 0.5
    elif how == "unknown parameter added":
        out.parameters["trace"].string_param = "t"
    return tenant, version, out


@FAST
@given(requests(), st.sampled_from(("default", "acme", "")), st.sampled_from(MUTATIONS), st.data())
def test_keys_are_equal_exactly_when_the_requests_are_the_same(request, tenant, how, data):
    msg = codec.request_to_proto(request)
    if how == "parameter moved to the input":
        msg.parameters["k"].string_param = "v"
    elif how == "parameter retyped":
        msg.parameters["k"].int64_param = 1
    twin = mutate(tenant, "1", msg, how, data)
    try:
        twin_key = key(*twin)
    except InvalidArgument:  # the gateway refuses such a twin before it is ever keyed
        assume(False)
    same = canonical(tenant, "1", msg) == canonical(*twin)
    assert (key(tenant, "1", msg) == twin_key) == same, (how, canonical(tenant, "1", msg), canonical(*twin))


@FEWER
@given(st.lists(st.tuples(requests(), st.sampled_from(("default", "acme"))), min_size=2, max_size=3))
def test_unrelated_requests_collide_only_when_the_same(pairs):
    seen: dict[bytes, tuple] = {}
    for request, tenant in pairs:
        msg = codec.request_to_proto(request)
        k, c = key(tenant, "1", msg), canonical(tenant, "1", msg)
        assert seen.setdefault(k, c) == c


def _typed(msg: pb.ModelInferRequest) -> pb.ModelInferRequest | None:
    decoded = codec.request_from_proto(msg, SMALL)
    typed = pb.ModelInferRequest()
    typed.CopyFrom(msg)
    del typed.raw_input_contents[:]
    for entry, tensor in zip(typed.inputs, decoded.inputs):
        field = DATATYPES[tensor.datatype].contents_field
        if field is None:
            return None
        getattr(entry.contents, field).extend(tensor.data.reshape(-1).tolist())
    return typed


@FAST
@given(requests())
def test_every_encoding_of_one_request_has_one_key(request):
    """gRPC raw, gRPC typed, and REST JSON / binary as the gateway's REST front forwards them."""
    raw = codec.request_to_proto(request)
    keys = {"grpc raw": key("t", "1", raw)}
    typed = _typed(raw)
    if typed is not None:
        keys["grpc typed"] = key("t", "1", typed)
    for binary in (False, True):
        body, length = json_codec.request_to_json(request, binary_inputs=binary)
        forwarded = codec.request_to_proto(json_codec.request_from_json(body, length, SMALL, model_name="m"))
        keys[f"rest {'binary' if binary else 'json'}"] = key("t", "1", forwarded)
    assert len(set(keys.values())) == 1, {name: k.hex()[:12] for name, k in keys.items()}
