"""Caller-side input values to edgecloud ``Tensor``s.

Contract: a numpy array keeps its shape and maps to its protocol datatype
(``edgecloud.datatypes.datatype_of``); a str/bytes/object array, or a list/tuple of ``str`` and
``bytes``, becomes a BYTES tensor (str encoded as UTF-8). Anything else — a bare string, a list
of numbers, objects in a BYTES array — raises ``TypeError`` naming the input: pass numbers as an
array with the dtype you mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgecloud.codec import bytes_array
from edgecloud.datatypes import datatype_of
from edgecloud.types import Tensor

__all__ = ["InputValue", "tensor_from_value", "tensors_from_inputs"]

InputValue = np.ndarray | Sequence[str | bytes]


def _bytes_items(name: str, items) -> np.ndarray:
    for item in items:
        if not isinstance(item, (str, bytes)):
            raise TypeError(f"inputs[{name}]: BYTES elements must be str or bytes, got {type(item).__name__}")
    return bytes_array(items)


def tensor_from_value(name: str, value: InputValue) -> Tensor:
    """One input tensor named ``name`` (see the module contract)."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in ("S", "U", "O"):
            data = _bytes_items(name, value.reshape(-1).tolist()).reshape(value.shape)
            return Tensor(name, "BYTES", tuple(value.shape), data)
        try:
            datatype = datatype_of(value)
        except TypeError as exc:
            raise TypeError(f"inputs[{name}]: {exc}") from None
        return Tensor(name, datatype, tuple(value.shape), value)
    if isinstance(value, (list, tuple)):
        data = _bytes_items(name, value)
        return Tensor(name, "BYTES", data.shape, data)
    raise TypeError(
        f"inputs[{name}]: expected a numpy array or a list of str/bytes, got {type(value).__name__}"
    )


def tensors_from_inputs(inputs: Mapping[str, InputValue]) -> list[Tensor]:
    """All input tensors, in the mapping's order."""
    if not isinstance(inputs, Mapping):
        raise TypeError("inputs must be a mapping of input name to value")
    return [tensor_from_value(name, value) for name, value in inputs.items()]

