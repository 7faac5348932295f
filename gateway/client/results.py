"""What a call returns: outputs as numpy arrays, plus where and why it was served.

Contract: ``InferResult.outputs`` maps output names to arrays in the response's order (numeric
arrays are read-only views of the received bytes — ``.copy()`` to modify; BYTES outputs are object
arrays of ``bytes``). The where-served fields read the response parameters ``served_by``
("edge" / "cloud" / "cache"), ``route_reason`` and ``variant`` ("int8" / "fp32"), and are None when
the server does not say (a plain Triton or edge agent says nothing about routing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgecloud.errors import InternalError
from edgecloud.types import InferResponse, ParameterValue

__all__ = ["EmbedResult", "InferResult"]

SERVED_BY = "served_by"
ROUTE_REASON = "route_reason"
VARIANT = "variant"


def _text_parameter(parameters: Mapping[str, ParameterValue], key: str) -> str | None:
    value = parameters.get(key)
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class InferResult:
    """One inference answer."""

    model_name: str
    model_version: str
    id: str
    parameters: dict[str, ParameterValue]
    outputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    """Protocol datatype of each output (tells BF16 stored as uint16 apart from UINT16)."""

    @classmethod
    def from_response(cls, response: InferResponse) -> InferResult:
        return cls(
            model_name=response.model_name,
            model_version=response.model_version,
            id=response.id,
            parameters=dict(response.parameters),
            outputs={tensor.name: tensor.data for tensor in response.outputs},
            datatypes={tensor.name: tensor.datatype for tensor in response.outputs},
        )

    def as_numpy(self, name: str) -> np.ndarray:
        """The output called ``name``; ``KeyError`` listing the outputs present when missing."""
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(f"no output {name!r}; the response has {sorted(self.outputs)}") from None

    @property
    def served_by(self) -> str | None:
        """Who answered ("edge", "cloud", "cache"), when the server says."""
        return _text_parameter(self.parameters, SERVED_BY)

    @property
    def route_reason(self) -> str | None:
        """Why the gateway routed the request where it did, when it says."""
        return _text_parameter(self.parameters, ROUTE_REASON)

    @property
    def variant(self) -> str | None:
        """Which model variant answered ("int8", "fp32"), when the server says."""
        return _text_parameter(self.parameters, VARIANT)


@dataclass(frozen=True, slots=True)
class EmbedResult(InferResult):
    """An answer from an embedding model: ``embeddings`` [N, D] FP32, one row per text."""

    output_name: str = "embedding"

    @classmethod
    def from_infer(cls, result: InferResult, count: int, output_name: str = "embedding") -> EmbedResult:
        """Check the answer has one embedding row per text, then wrap it.

        Raises ``InternalError`` when the server's answer does not fit (missing output, wrong rank
        or row count): that is the server's fault, not the caller's.
        """
        data = result.outputs.get(output_name)
        if data is None:
            raise InternalError(f"the server's answer has no {output_name!r} output ({sorted(result.outputs)})")
        if data.ndim != 2 or data.shape[0] != count:
            raise InternalError(f"the server answered {count} texts with {output_name} of shape {list(data.shape)}")
        datatype = result.datatypes.get(output_name)
        if datatype not in ("FP32", "FP16", "FP64"):
            raise InternalError(f"the server's {output_name} is {datatype}, not floating point")
        return cls(result.model_name, result.model_version, result.id, result.parameters, result.outputs,
                   result.datatypes, output_name)

    @property
    def embeddings(self) -> np.ndarray:
        """The embeddings, [N, D]."""
        return self.outputs[self.output_name]


@dataclass(frozen=True, slots=True)
class Classification:
    """One class of an answer: its probability, index and label ("" when the model has none)."""

    score: float
    index: int
    label: str


@dataclass(frozen=True, slots=True)
class ClassifyResult(InferResult):
    """An answer from a classifier: ``classes[i]`` are image i's top classes, best first;
    ``served_by`` / ``route_reason`` say where it was answered and why (``low_confidence``:
    the edge was unsure and the cloud answered)."""

    classes: tuple[tuple[Classification, ...], ...] = ()

    @classmethod
    def from_infer(cls, result: InferResult, count: int, output_name: str = "probabilities") -> ClassifyResult:
        """Parse the classification extension's ``"score:index[:label]"`` strings (one row per image).

        Raises ``InternalError`` when the answer does not fit (missing output, wrong row count,
        unparseable strings): that is the server's fault, not the caller's."""
        data = result.outputs.get(output_name)
        if data is None:
            raise InternalError(f"the server's answer has no {output_name!r} output ({sorted(result.outputs)})")
        rows = data.reshape(1, -1) if data.ndim == 1 else data
        if rows.shape[0] != count:
            raise InternalError(f"the server answered {count} images with {rows.shape[0]} rows")
        classes = []
        for row in rows:
            parsed = []
            for item in row:
                text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
                parts = text.split(":", 2)
                try:
                    parsed.append(Classification(float(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else ""))
                except (ValueError, IndexError):
                    raise InternalError(f"the server sent an unreadable class {text[:60]!r}") from None
            classes.append(tuple(parsed))
        return cls(result.model_name, result.model_version, result.id, result.parameters, result.outputs,
                   result.datatypes, tuple(classes))

    @property
    def top(self) -> tuple[Classification, ...]:
        """Each image's best class."""
        return tuple(row[0] for row in self.classes)
