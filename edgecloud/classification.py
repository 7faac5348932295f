"""The protocol's classification extension (as Triton has it): a requested output with the
``classification`` parameter is answered as its top classes instead of its raw values.

Contract:
- ``classification_count(requested, spec, field)``: the count a requested output asks for (None when
  it asks for none); ``InvalidArgument`` naming ``outputs[name].parameters.classification`` for a
  count that is not a whole number >= 1, or an output that is not numeric.
- ``classify(tensor, count, labels)``: for an output of shape [N, C] (or [C]), a BYTES tensor of shape
  [N, count] (or [count]) of ``"<value>:<index>[:<label>]"`` strings, highest value first (ties:
  lower index first), the value formatted as ``%f`` and the label added when ``labels`` has one
  for the index. ``count`` over C is refused (``InvalidArgument``, the same field).
Labels come from a model directory's ``labels.txt`` (one per line, by index).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecloud.codec import bytes_array
from edgecloud.errors import InvalidArgument
from edgecloud.types import RequestedOutput, Tensor, TensorSpec

__all__ = ["CLASSIFICATION_PARAMETER", "classification_count", "classify"]

CLASSIFICATION_PARAMETER = "classification"
_NUMERIC = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                      "FP32", "FP64", "BF16"})


def _field(name: str) -> str:
    return f"outputs[{name}].parameters.{CLASSIFICATION_PARAMETER}"


def classification_count(requested: RequestedOutput, spec: TensorSpec) -> int | None:
    count = requested.parameters.get(CLASSIFICATION_PARAMETER)
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidArgument(f"must be a whole number >= 1, got {count!r}", field=_field(requested.name))
    if spec.datatype not in _NUMERIC:
        raise InvalidArgument(f"classifies numeric outputs only; {requested.name} is {spec.datatype}",
                              field=_field(requested.name))
    return count


def classify(tensor: Tensor, count: int, labels: Sequence[str] | None = None) -> Tensor:
    values = np.asarray(tensor.data)
    rows = values.reshape(1, -1) if values.ndim == 1 else values.reshape(values.shape[0], -1)
    classes = rows.shape[1]
    if count > classes:
        raise InvalidArgument(f"asks for {count} classes; the output has {classes}", field=_field(tensor.name))
    # A stable sort of the negated values: highest first, ties by lower index.
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :count]
    items = []
    for row, indices in zip(rows, order, strict=True):
        for index in indices:
            label = labels[index] if labels is not None and index < len(labels) else None
            text = f"{float(row[index]):f}:{int(index)}" + (f":{label}" if label else "")
            items.append(text.encode("utf-8"))
    shape = (count,) if values.ndim == 1 else (rows.shape[0], count)
    data = bytes_array(items).reshape(shape)
    return Tensor(tensor.name, "BYTES", shape, data)
