"""``model.json``: what a TorchScript or ``torch.export`` program directory declares.

Example::

    {"name": "scorer", "version": "1", "format": "torch_export", "file": "model.pt2",
     "max_batch_size": 64, "variant": "fp32",
     "inputs":  [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
     "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}

Contract: ``load_manifest(directory)`` validates at load and raises ``ConfigError`` naming the
field path inside ``model.json``. The program takes its inputs positionally in ``inputs`` order and
returns one tensor, or a tuple/list (or dict by name) of tensors in ``outputs`` order.
``max_batch_size`` > 0 means the program accepts any batch size along dimension 0, so requests may
be concatenated (every input and output shape must then start with -1); 0 runs each request alone.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgecloud.config import ConfigError, Section, parse_config
from edgecloud.datatypes import DATATYPES
from edgecloud.types import TensorSpec

MANIFEST = "model.json"
DEFAULT_FILES = {"torchscript": "model.pt", "torch_export": "model.pt2"}


class TensorEntry(Section):
    name: str = Field(min_length=1)
    """Tensor name on the wire."""
    datatype: str
    """Open Inference Protocol datatype (BYTES is not a torch type and is refused)."""
    shape: list[int] = Field(min_length=1, max_length=8)
    """Dimensions; -1 marks a variable one."""

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES or value == "BYTES":
            raise ValueError(f"{value!r} is not a tensor datatype torch can take "
                             f"({', '.join(name for name in DATATYPES if name != 'BYTES')})")
        return value

    @field_validator("shape")
    @classmethod
    def _dims(cls, value: list[int]) -> list[int]:
        for dim in value:
            if dim < -1:
                raise ValueError(f"dimension {dim} is neither -1 nor a size")
        return value

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape))


class ProgramManifest(Section):
    name: str = Field(min_length=1)
    """Model name clients address."""
    version: str = Field("1", min_length=1)
    """Model version."""
    format: Literal["torchscript", "torch_export"]
    """``torchscript`` (``torch.jit.load``) or ``torch_export`` (``torch.export.load`` of a .pt2)."""
    file: str | None = None
    """Program file inside the directory; default ``model.pt`` / ``model.pt2`` by format."""
    variant: str = Field("fp32", min_length=1)
    """What responses report as ``variant``."""
    max_batch_size: int = Field(0, ge=0, le=65536)
    """> 0: requests may be concatenated along dimension 0 up to the batcher's limit; 0: run alone."""
    inputs: list[TensorEntry] = Field(min_length=1, max_length=64)
    """Program inputs, in the order the program takes them."""
    outputs: list[TensorEntry] = Field(min_length=1, max_length=64)
    """Program outputs, in the order the program returns them."""

    @field_validator("file")
    @classmethod
    def _inside_directory(cls, value: str | None) -> str | None:
        if value is not None:
            path = PurePosixPath(value)
            if path.is_absolute() or ".." in path.parts or not path.parts:
                raise ValueError("must be a relative path inside the model directory")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProgramManifest:
        for group in ("inputs", "outputs"):
            names = [entry.name for entry in getattr(self, group)]
            if len(set(names)) != len(names):
                raise ValueError(f"{group}: names must be unique, got {names}")
            if self.max_batch_size:
                for entry in getattr(self, group):
                    if entry.shape[0] != -1:
                        raise ValueError(f"{group}[{entry.name}].shape must start with -1 when max_batch_size > 0")
        return self

    @property
    def program_file(self) -> str:
        return self.file or DEFAULT_FILES[self.format]


def load_manifest(directory: str | Path) -> ProgramManifest:
    path = Path(directory) / MANIFEST
    source = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read: {exc.strerror}")]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(source, [("", f"not valid JSON: {exc}")]) from None
    manifest = parse_config(ProgramManifest, data, source)
    if not (Path(directory) / manifest.program_file).is_file():
        raise ConfigError(source, [("file", f"{manifest.program_file!r} is not a file in the model directory")])
    return manifest


__all__ = ["MANIFEST", "ProgramManifest", "TensorEntry", "load_manifest"]
