"""Generic torch programs: TorchScript (``torch.jit.load``) or ``torch.export`` (``.pt2``).

Contract: a ``ProgramRuntime`` serves one program directory (``manifest``): inputs are handed to
the program positionally in ``model.json`` order on the configured device, outputs come back to the
host and must have the datatype and shape ``model.json`` declares (anything else is an
``InternalError``, never a silently different answer). A batchable program (``max_batch_size`` > 0)
gets concurrent requests concatenated along dimension 0 and its outputs split back by row count.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cloud_worker.config import RuntimeSettings
from cloud_worker.device import configure_threads, resolve_device
from cloud_worker.manifest import ProgramManifest, load_manifest
from cloud_worker.threads import thread_plan
from edgecloud.datatypes import DATATYPES
from edgecloud.errors import FailedPrecondition, InternalError
from edgecloud.types import InferRequest, ModelMetadata, Tensor, TensorSpec

log = logging.getLogger(__name__)

PLATFORMS = {"torchscript": "pytorch_libtorch", "torch_export": "pytorch_export"}
_TORCH_DTYPES = {
    "BOOL": torch.bool, "UINT8": torch.uint8, "UINT16": torch.uint16, "UINT32": torch.uint32,
    "UINT64": torch.uint64, "INT8": torch.int8, "INT16": torch.int16, "INT32": torch.int32,
    "INT64": torch.int64, "FP16": torch.float16, "BF16": torch.bfloat16, "FP32": torch.float32,
    "FP64": torch.float64,
}


def to_torch(array: np.ndarray, datatype: str, device: torch.device) -> torch.Tensor:
    """A tensor owning a copy of ``array`` (wire arrays are read-only views)."""
    if datatype == "BF16":
        return torch.from_numpy(np.array(array, dtype=np.uint16).view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(np.array(array, dtype=DATATYPES[datatype].numpy_dtype)).to(device)


def to_numpy(tensor: torch.Tensor, spec: TensorSpec) -> np.ndarray:
    want = _TORCH_DTYPES[spec.datatype]
    if tensor.dtype != want:
        raise InternalError(f"program output {spec.name!r} is {tensor.dtype}, model.json declares {spec.datatype}")
    if len(tensor.shape) != len(spec.shape) or any(w not in (-1, g) for w, g in zip(spec.shape, tensor.shape)):
        raise InternalError(f"program output {spec.name!r} has shape {list(tensor.shape)}, "
                            f"model.json declares {list(spec.shape)}")
    tensor = tensor.detach().to("cpu").contiguous()
    if spec.datatype == "BF16":
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


class ProgramRuntime:
    def __init__(self, directory: str | Path, settings: RuntimeSettings | None = None,
                 manifest: ProgramManifest | None = None):
        self.directory = Path(directory)
        self.manifest = manifest or load_manifest(self.directory)
        self.settings = settings or RuntimeSettings()
        self.device = resolve_device(self.settings.device)
        self.threads = thread_plan(self.settings.instances, self.settings.intra_op_threads, self.device.type)
        self.instances = self.threads.instances
        self.variant = self.manifest.variant
        self.batchable = self.manifest.max_batch_size > 0
        self.input_specs = tuple(entry.spec() for entry in self.manifest.inputs)
        self.output_specs = tuple(entry.spec() for entry in self.manifest.outputs)
        self.metadata = ModelMetadata(
            name=self.manifest.name,
            versions=(self.manifest.version,),
            platform=PLATFORMS[self.manifest.format],
            inputs=self.input_specs,
            outputs=self.output_specs,
            max_batch_size=self.manifest.max_batch_size,
        )
        self._program = None

    # lifecycle (model thread) ----------------------------------------------------------------

    def load(self) -> None:
        if self.device.type == "cpu":
            configure_threads(self.threads, self.settings.inter_op_threads)
        path = self.directory / self.manifest.program_file
        if self.manifest.format == "torchscript":
            program = torch.jit.load(str(path), map_location=self.device)
            program.eval()
        else:
            program = torch.export.load(str(path)).module()
            if self.device.type != "cpu":
                program = program.to(self.device)
        self._program = program
        log.info("loaded %s (%s) on %s", self.manifest.name, self.manifest.format, self.device)

    def close(self) -> None:
        self._program = None

    # per request (event loop) ----------------------------------------------------------------

    def prepare(self, request: InferRequest) -> tuple[list[np.ndarray], int]:
        arrays = [request.input(spec.name).data for spec in self.input_specs]
        rows = int(arrays[0].shape[0]) if self.batchable else 1
        return arrays, rows

    # per batch (model thread) ----------------------------------------------------------------

    def run(self, items: list[list[np.ndarray]]) -> list[list[Tensor]]:
        if not self.batchable or len(items) == 1:
            return [self._tensors(self._call(item)) for item in items]
        rows = [int(item[0].shape[0]) for item in items]
        merged = [np.concatenate([item[i] for item in items]) for i in range(len(self.input_specs))]
        outputs = self._call(merged)
        total = sum(rows)
        for spec, value in zip(self.output_specs, outputs):
            if value.shape[0] != total:
                raise InternalError(f"program output {spec.name!r} has {value.shape[0]} rows for {total} inputs")
        results = []
        start = 0
        for count in rows:
            results.append(self._tensors([value[start : start + count] for value in outputs]))
            start += count
        return results

    def _call(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self._program is None:
            raise FailedPrecondition(f"model {self.manifest.name!r} is not loaded")
        inputs = [to_torch(array, spec.datatype, self.device) for array, spec in zip(arrays, self.input_specs)]
        with torch.inference_mode():
            result = self._program(*inputs)
        if isinstance(result, torch.Tensor):
            values = [result]
        elif isinstance(result, dict):
            try:
                values = [result[spec.name] for spec in self.output_specs]
            except KeyError as exc:
                raise InternalError(f"program returned no output {exc.args[0]!r}") from None
        elif isinstance(result, (tuple, list)):
            values = list(result)
        else:
            raise InternalError(f"program returned {type(result).__name__}, not tensors")
        if len(values) != len(self.output_specs):
            raise InternalError(f"program returned {len(values)} outputs, model.json declares {len(self.output_specs)}")
        return [to_numpy(value, spec) for value, spec in zip(values, self.output_specs)]

    def _tensors(self, values: Sequence[np.ndarray]) -> list[Tensor]:
        return [Tensor(spec.name, spec.datatype, tuple(value.shape), value)
                for spec, value in zip(self.output_specs, values)]


__all__ = ["PLATFORMS", "ProgramRuntime", "to_numpy", "to_torch"]
