"""Open Inference Protocol datatypes and their numpy storage.

Contract: every protocol datatype string maps to one numpy storage dtype (BF16 is stored as
uint16 bits, BYTES as an object array of ``bytes``) and, where the protocol has one, to the
``InferTensorContents`` field that carries it in typed form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DatatypeInfo:
    """How one protocol datatype is stored and carried."""

    name: str
    numpy_dtype: np.dtype
    contents_field: str | None
    """``InferTensorContents`` field for typed contents; None when only raw bytes can carry it."""
    itemsize: int
    """Bytes per element in raw form; 0 for BYTES (variable-length)."""


def _info(name: str, dtype: str, field: str | None) -> DatatypeInfo:
    np_dtype = np.dtype(dtype)
    return DatatypeInfo(name, np_dtype, field, 0 if name == "BYTES" else np_dtype.itemsize)


DATATYPES: dict[str, DatatypeInfo] = {
    info.name: info
    for info in (
        _info("BOOL", "bool", "bool_contents"),
        _info("UINT8", "<u1", "uint_contents"),
        _info("UINT16", "<u2", "uint_contents"),
        _info("UINT32", "<u4", "uint_contents"),
        _info("UINT64", "<u8", "uint64_contents"),
        _info("INT8", "<i1", "int_contents"),
        _info("INT16", "<i2", "int_contents"),
        _info("INT32", "<i4", "int_contents"),
        _info("INT64", "<i8", "int64_contents"),
        _info("FP16", "<f2", None),
        _info("BF16", "<u2", None),
        _info("FP32", "<f4", "fp32_contents"),
        _info("FP64", "<f8", "fp64_contents"),
        _info("BYTES", "object", "bytes_contents"),
    )
}

_FROM_NUMPY: dict[np.dtype, str] = {
    np.dtype(kind): name
    for kind, name in (
        ("bool", "BOOL"),
        ("uint8", "UINT8"),
        ("uint16", "UINT16"),
        ("uint32", "UINT32"),
        ("uint64", "UINT64"),
        ("int8", "INT8"),
        ("int16", "INT16"),
        ("int32", "INT32"),
        ("int64", "INT64"),
        ("float16", "FP16"),
        ("float32", "FP32"),
        ("float64", "FP64"),
        ("object", "BYTES"),
    )
}


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype for a numpy array (``bytes``/``str`` arrays are BYTES)."""
    if array.dtype.kind in ("S", "U", "O"):
        return "BYTES"
    try:
        return _FROM_NUMPY[array.dtype.newbyteorder("=") if array.dtype.byteorder == ">" else array.dtype]
    except KeyError:
        raise TypeError(f"numpy dtype {array.dtype} has no Open Inference Protocol datatype") from None


# ONNX / torch element type names -> protocol datatype, used when reading model graphs.
ONNX_TYPE_TO_DATATYPE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(bfloat16)": "BF16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
