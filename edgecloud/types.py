"""edgecloud's own request, response and metadata types; protobuf stays at the boundary.

Contract: tensors hold numpy arrays whose dtype is the storage dtype of ``datatype``
(``edgecloud.datatypes``); BYTES tensors hold object arrays of ``bytes``. Shapes are tuples of
non-negative ints in requests and responses; metadata shapes may use -1 for a variable dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

ParameterValue = Union[bool, int, float, str]


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: dict[str, ParameterValue] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    model_name: str
    inputs: list[Tensor]
    model_version: str = ""
    id: str = ""
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)
    deadline: float | None = None
    """Monotonic time (``time.monotonic()``) after which the answer is useless; not on the wire."""
    tenant: str = "default"
    """Who is asking, as authenticated by the front (API key -> tenant); not on the wire."""

    def input(self, name: str) -> Tensor:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


@dataclass(slots=True)
class InferResponse:
    model_name: str
    outputs: list[Tensor]
    model_version: str = ""
    id: str = ""
    parameters: dict[str, ParameterValue] = field(default_factory=dict)

    def output(self, name: str) -> Tensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output as advertised in metadata; -1 marks a variable dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    """0: the model takes no batch dimension limit beyond the request limits."""


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...] = ()
