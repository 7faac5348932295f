"""edgecloud's own request, response and metadata types; protobuf stays at the boundary.

Contract: tensors hold numpy arrays whose dtype is the storage dtype of ``datatype``
(``edgecloud.datatypes``); BYTES tensors hold object arrays of ``bytes``. Shapes are tuples of
non-negative ints in requests and responses; metadata shapes may use -1 for a variable dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping
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
    wire: bytes | None = field(default=None, repr=False, compare=False)
    """The serialized ``ModelInferRequest`` this request was decoded from, if it came over gRPC: a
    gRPC backend forwards these bytes as they are instead of encoding the request again. Whoever
    changes the request's contents must set this to None."""

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
    wire: bytes | None = field(default=None, repr=False, compare=False)
    """The serialized ``ModelInferResponse`` whose outputs, model name and version are the ones
    above (as received from a backend, or stored in the cache). A front then sends these bytes with
    ``id`` and ``parameters`` written after them (protobuf's last-one-wins merge), instead of
    encoding the outputs again. Parameters may be added or changed, never removed; whoever changes
    the outputs must set this to None."""

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
    optional: bool = False
    """An input a request may leave out (Triton's ``optional: true``)."""
    alternatives: tuple[tuple[str, tuple[int, ...]], ...] = ()
    """Other (datatype, shape) forms the input is accepted in (an image as encoded BYTES [-1] or as
    prepared UINT8 [-1, 224, 224, 3]); the wire's tensor metadata has room for one form, so the
    others travel in the model metadata's ``parameters`` (``edgecloud.codec``)."""


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    """0: the model takes no batch dimension limit beyond the request limits."""
    parameters: Mapping[str, ParameterValue] = field(default_factory=dict)
    """What the model advertises beyond its tensors (a generative model's ``chat_template``);
    carried in the metadata's ``parameters`` (an edgecloud extension other clients ignore)."""


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...] = ()
