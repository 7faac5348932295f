"""Validation of a decoded request against the model it addresses.

Contract: ``validate_request`` raises ``InvalidArgument`` naming the field for a missing, unknown
or duplicated input, a datatype or shape that does not match the model's metadata (-1 matches any
size), an empty batch, a batch over the limit, inconsistent batch sizes, an unknown requested
output, or a requested output's ill-formed ``classification`` count. It reads only shapes and datatypes, never tensor data, so it is cheap and runs before
anything is queued, batched or cached.
"""

from __future__ import annotations

from edgecloud.classification import classification_count
from edgecloud.errors import InvalidArgument
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, ModelMetadata, TensorSpec


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _form_shape(datatype: str, spec: TensorSpec, field: str) -> tuple[int, ...]:
    """The shape ``spec`` expects for a tensor of ``datatype`` (its primary form or an alternative)."""
    if datatype == spec.datatype:
        return spec.shape
    for other, shape in spec.alternatives:
        if datatype == other:
            return shape
    forms = " or ".join(f"{d} {_fmt(s)}" for d, s in ((spec.datatype, spec.shape), *spec.alternatives))
    raise InvalidArgument(f"expected {forms if spec.alternatives else spec.datatype}, got {datatype}",
                          field=f"{field}.datatype")


def validate_request(request: InferRequest, meta: ModelMetadata, limits: RequestLimits) -> None:
    expected = {spec.name: spec for spec in meta.inputs}
    given = {tensor.name for tensor in request.inputs}
    missing = [name for name, spec in expected.items() if name not in given and not spec.optional]
    if missing:
        raise InvalidArgument(f"missing required input(s) {missing}; model expects {list(expected)}", field="inputs")
    batch_limit = meta.max_batch_size or limits.max_batch_size
    batch: int | None = None
    for tensor in request.inputs:
        field = f"inputs[{tensor.name}]"
        spec = expected.get(tensor.name)
        if spec is None:
            raise InvalidArgument(f"unknown input; model expects {list(expected)}", field=field)
        shape = _form_shape(tensor.datatype, spec, field)
        if len(tensor.shape) != len(shape) or any(want != -1 and want != got for want, got in zip(shape, tensor.shape)):
            raise InvalidArgument(f"expected {_fmt(shape)}, got {_fmt(tensor.shape)}", field=f"{field}.shape")
        if shape and shape[0] == -1:
            size = tensor.shape[0]
            if size == 0:
                raise InvalidArgument("empty batch (dimension 0 is 0)", field=f"{field}.shape")
            if size > batch_limit:
                raise InvalidArgument(f"batch of {size} exceeds the limit of {batch_limit}", field=f"{field}.shape")
            if batch is not None and size != batch:
                raise InvalidArgument(f"batch size {size} differs from other inputs' {batch}", field=f"{field}.shape")
            batch = size
    if request.outputs:
        known = {spec.name: spec for spec in meta.outputs}
        for requested in request.outputs:
            spec = known.get(requested.name)
            if spec is None:
                raise InvalidArgument(f"unknown output; model has {sorted(known)}", field=f"outputs[{requested.name}]")
            classification_count(requested, spec)
