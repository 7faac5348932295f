"""Hypothesis strategies for the request path: well-formed requests (every datatype, every
encoding), near-valid protobuf and JSON requests (each field drawn from valid, boundary and wrong
values), and model metadata to validate them against.

``SMALL`` limits make the boundaries reachable with small examples: a generated shape crosses
``max_elements``, a list crosses ``max_inputs``, an element crosses ``max_bytes_element``.
"""

from __future__ import annotations

import math
import struct

import numpy as np
from hypothesis import strategies as st

from edgecloud.codec import serialize_bytes
from edgecloud.datatypes import DATATYPES
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, ModelMetadata, ParameterValue, RequestedOutput, Tensor, TensorSpec
from protos import inference_pb2 as pb

SMALL = RequestLimits(max_inputs=4, max_outputs=4, max_parameters=4, max_rank=4, max_elements=64,
                      max_bytes_element=16, max_batch_size=8)
NAMES = ("a", "b", "c", "text", "")
DATATYPE_NAMES = tuple(DATATYPES)
CONTENTS_FIELDS = tuple(f.name for f in pb.InferTensorContents.DESCRIPTOR.fields)
INT_RANGES = {name: (int(np.iinfo(info.numpy_dtype).min), int(np.iinfo(info.numpy_dtype).max))
              for name, info in DATATYPES.items() if info.numpy_dtype.kind in "iu" and name != "BF16"}
"""Value ranges of the integer datatypes (BF16 is stored as uint16 bits but is a float)."""
FIELD_RANGES = {"int_contents": (-(2**31), 2**31 - 1), "int64_contents": (-(2**63), 2**63 - 1),
                "uint_contents": (0, 2**32 - 1), "uint64_contents": (0, 2**64 - 1)}

names = st.one_of(st.sampled_from(NAMES), st.text(max_size=3))
"""Input/output names: mostly from a small pool (so they collide and match metadata), some anything."""
datatype_names = st.one_of(st.sampled_from(DATATYPE_NAMES), st.sampled_from(("", "bytes", "FP8", "STRING")))
dims = st.one_of(st.integers(-2, 5), st.sampled_from((2**31, 2**62, 2**63 - 1, -(2**63), 65, 64)))
shapes = st.lists(dims, max_size=5)
texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=4)
"""Strings JSON and protobuf can both carry (no lone surrogates)."""
parameter_values = st.one_of(st.booleans(), st.integers(-(2**63), 2**64 - 1),
                             st.floats(allow_nan=False, allow_infinity=False), texts)
parameters = st.dictionaries(st.sampled_from(("x", "y", "quality", "no_cache", "binary_data", "binary_data_output",
                                               "priority", "top_k")), parameter_values, max_size=3)


def count_of(shape) -> int:
    """Elements of ``shape`` when it is small enough to fill (at most 64), else -1."""
    if not all(0 <= d <= 64 for d in shape):
        return -1
    count = math.prod(shape)
    return count if count <= 64 else -1


# ---------------------------------------------------------------------------------------------
# well-formed requests


def _values(datatype: str, count: int) -> st.SearchStrategy[np.ndarray]:
    info = DATATYPES[datatype]
    if datatype == "BYTES":
        items = st.lists(texts.map(str.encode), min_size=count, max_size=count)
        return items.map(lambda xs: _object_array(xs))
    if datatype == "BOOL":
        return st.lists(st.booleans(), min_size=count, max_size=count).map(lambda xs: np.array(xs, dtype=bool))
    if datatype in INT_RANGES:
        low, high = INT_RANGES[datatype]
        return st.lists(st.integers(low, high), min_size=count, max_size=count).map(
            lambda xs: np.array(xs, dtype=info.numpy_dtype))
    if datatype == "BF16":  # bit patterns of finite bfloat16 values (JSON carries them as numbers)
        finite = st.integers(0, 0xFFFF).filter(lambda bits: ((bits >> 7) & 0xFF) != 0xFF)
        return st.lists(finite, min_size=count, max_size=count).map(lambda xs: np.array(xs, dtype="<u2"))
    width = {"FP16": 16, "FP32": 32, "FP64": 64}[datatype]
    floats = st.floats(width=width, allow_nan=False, allow_infinity=False)
    return st.lists(floats, min_size=count, max_size=count).map(lambda xs: np.array(xs, dtype=info.numpy_dtype))


def _object_array(items: list[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@st.composite
def tensors(draw, name: str, datatypes=DATATYPE_NAMES) -> Tensor:
    datatype = draw(st.sampled_from(datatypes))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    data = draw(_values(datatype, math.prod(shape))).reshape(shape)
    return Tensor(name, datatype, shape, data, draw(st.dictionaries(st.sampled_from(("p", "q")), parameter_values,
                                                                    max_size=2)))


@st.composite
def requests(draw, datatypes=DATATYPE_NAMES) -> InferRequest:
    """A well-formed request within ``SMALL``: unique names, data that fits shape and datatype."""
    input_names = draw(st.lists(st.sampled_from(("a", "b", "c", "text")), min_size=1, max_size=3, unique=True))
    output_names = draw(st.lists(st.sampled_from(("y", "z", "embedding")), max_size=2, unique=True))
    return InferRequest(
        model_name="m",
        inputs=[draw(tensors(name, datatypes)) for name in input_names],
        parameters=draw(parameters),
        outputs=[RequestedOutput(name, draw(st.dictionaries(st.just("binary_data"), st.booleans(), max_size=1)))
                 for name in output_names],
    )


# ---------------------------------------------------------------------------------------------
# near-valid protobuf


@st.composite
def _raw_payload(draw, datatype: str, shape: list[int]) -> bytes:
    count = count_of(shape)
    info = DATATYPES.get(datatype)
    if info is None or count < 0 or draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=40))
    if datatype == "BYTES":
        items = draw(st.lists(st.binary(max_size=20), min_size=count, max_size=count))
        payload = serialize_bytes(items)
        if draw(st.integers(0, 5)) == 0:  # lie in one length prefix
            payload = struct.pack("<I", draw(st.integers(0, 2**32 - 1))) + payload[4:]
        return payload
    size = count * info.itemsize + draw(st.sampled_from((0, 0, 0, 1, -1)))
    return draw(st.binary(min_size=max(0, size), max_size=max(0, size)))


@st.composite
def _typed_contents(draw, tensor: pb.ModelInferRequest.InferInputTensor, shape: list[int]) -> None:
    info = DATATYPES.get(tensor.datatype)
    field = info.contents_field if info is not None and info.contents_field and draw(st.integers(0, 4)) else \
        draw(st.sampled_from(CONTENTS_FIELDS))
    count = count_of(shape)
    size = count if count >= 0 and draw(st.integers(0, 3)) else draw(st.integers(0, 5))
    values = getattr(tensor.contents, field)
    if field == "bytes_contents":
        values.extend(draw(st.lists(st.binary(max_size=20), min_size=size, max_size=size)))
    elif field == "bool_contents":
        values.extend(draw(st.lists(st.booleans(), min_size=size, max_size=size)))
    elif field in ("fp32_contents", "fp64_contents"):
        width = 32 if field == "fp32_contents" else 64
        values.extend(draw(st.lists(st.floats(width=width), min_size=size, max_size=size)))
    else:
        low, high = FIELD_RANGES[field]
        values.extend(draw(st.lists(st.integers(low, high), min_size=size, max_size=size)))


def _set_parameter(slot: pb.InferParameter, value: ParameterValue | None) -> None:
    if value is None:
        return  # a parameter with no value set
    if isinstance(value, bool):
        slot.bool_param = value
    elif isinstance(value, int):
        if value >= 2**63:
            slot.uint64_param = value
        else:
            slot.int64_param = value
    elif isinstance(value, float):
        slot.double_param = value
    else:
        slot.string_param = value


@st.composite
def infer_messages(draw) -> pb.ModelInferRequest:
    """``ModelInferRequest``s whose every field may be right, at a boundary, or wrong."""
    msg = pb.ModelInferRequest(model_name=draw(st.sampled_from(("m", "all-MiniLM-L6-v2", ""))),
                               model_version=draw(st.sampled_from(("", "1"))), id=draw(texts))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 5))):
        shape = draw(shapes)
        tensor = msg.inputs.add(name=draw(names), datatype=draw(datatype_names), shape=shape)
        if raw:
            msg.raw_input_contents.append(draw(_raw_payload(tensor.datatype, shape)))
        else:
            draw(_typed_contents(tensor, shape))
        for key, value in draw(st.dictionaries(st.sampled_from(("p", "q")), st.none() | parameter_values,
                                               max_size=2)).items():
            _set_parameter(tensor.parameters[key], value)
    if draw(st.integers(0, 9)) == 0:
        msg.raw_input_contents.append(b"")  # one raw entry too many
    for name in draw(st.lists(names, max_size=5)):
        msg.outputs.add(name=name)
    for key, value in draw(st.dictionaries(st.sampled_from(("x", "y", "z", "w", "v")), st.none() | parameter_values,
                                           max_size=5)).items():
        _set_parameter(msg.parameters[key], value)
    return msg


@st.composite
def mutated_wire(draw) -> bytes:
    """Serialized near-valid requests with bytes flipped, cut, or inserted."""
    data = bytearray(draw(infer_messages()).SerializeToString())
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(("flip", "cut", "insert")))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# near-valid JSON


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=4))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(st.text(max_size=3), children, max_size=3)), max_leaves=8)


@st.composite
def _json_data(draw, datatype, shape):
    count = count_of(shape) if isinstance(shape, list) and all(type(d) is int for d in shape) else -1
    if count < 0 or not isinstance(datatype, str) or datatype not in DATATYPES or draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    if datatype == "BYTES":
        flat = draw(st.lists(st.text(max_size=20), min_size=count, max_size=count))
    elif datatype == "BOOL":
        flat = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    elif datatype in INT_RANGES:
        low, high = INT_RANGES[datatype]
        flat = draw(st.lists(st.integers(low - 2, high + 2), min_size=count, max_size=count))
    else:
        flat = draw(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-70000, 70000),
                             min_size=count, max_size=count))
    if len(shape) > 1 and draw(st.booleans()):
        for dim in reversed(shape[1:]):  # nest row-major, as the protocol allows
            flat = [flat[i : i + dim] for i in range(0, len(flat), dim)] if dim else [[] for _ in flat]
    return flat


@st.composite
def json_documents(draw) -> dict:
    """REST infer bodies whose fields are right, at a boundary, or any JSON value."""
    inputs = []
    for _ in range(draw(st.integers(0, 5))):
        entry = {}
        if draw(st.integers(0, 9)):
            entry["name"] = draw(names) if draw(st.integers(0, 5)) else draw(json_values)
        if draw(st.integers(0, 9)):
            entry["datatype"] = draw(datatype_names) if draw(st.integers(0, 5)) else draw(json_values)
        if draw(st.integers(0, 9)):
            entry["shape"] = draw(shapes) if draw(st.integers(0, 5)) else draw(json_values)
        if draw(st.integers(0, 9)):
            entry["data"] = draw(_json_data(entry.get("datatype"), entry.get("shape")))
        if draw(st.integers(0, 4)) == 0:
            entry["parameters"] = draw(parameters) if draw(st.booleans()) else draw(json_values)
        inputs.append(entry)
    doc = {"inputs": inputs}
    if draw(st.integers(0, 3)) == 0:
        doc["outputs"] = [{"name": draw(names)} for _ in range(draw(st.integers(0, 5)))] if draw(st.booleans()) \
            else draw(json_values)
    if draw(st.integers(0, 3)) == 0:
        doc["parameters"] = draw(parameters) if draw(st.booleans()) else draw(json_values)
    if draw(st.integers(0, 5)) == 0:
        doc["id"] = draw(json_values)
    return doc


# ---------------------------------------------------------------------------------------------
# metadata


@st.composite
def metadata(draw) -> ModelMetadata:
    specs = []
    for name in draw(st.lists(st.sampled_from(("a", "b", "c", "text")), min_size=1, max_size=3, unique=True)):
        shape = tuple(draw(st.lists(st.sampled_from((-1, 0, 1, 2, 3)), max_size=3)))
        specs.append(TensorSpec(name, draw(st.sampled_from(DATATYPE_NAMES)), shape))
    outputs = tuple(TensorSpec(name, "FP32", (-1,)) for name in draw(st.lists(
        st.sampled_from(("y", "z", "embedding")), min_size=1, max_size=3, unique=True)))
    return ModelMetadata("m", ("1",), "p", tuple(specs), outputs, max_batch_size=draw(st.sampled_from((0, 2, 8))))
