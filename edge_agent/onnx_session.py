"""onnxruntime sessions with explicit thread settings, and the graph's I/O as protocol specs.

Contract: ``create_session(file, settings)`` returns a CPU ``InferenceSession`` with intra/inter
op threads from ``settings`` (0 = onnxruntime's default) and full graph optimisation;
``graph_specs`` reads inputs/outputs with symbolic or unknown dimensions as -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecloud.datatypes import ONNX_TYPE_TO_DATATYPE
from edgecloud.types import TensorSpec


@dataclass(frozen=True)
class SessionSettings:
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    allow_spinning: bool = False
    """onnxruntime's pool threads spin between tasks (faster under load; busy CPU when idle)."""
    force_spinning_stop: bool = False
    """Spinning threads stop the moment the session's last running ``Run`` returns (no CPU burnt
    between requests; ``session.force_spinning_stop``)."""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


def create_session(file: Path, settings: SessionSettings):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    spin = "1" if settings.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if settings.force_spinning_stop:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    available = set(ort.get_available_providers())
    providers = [p for p in settings.providers if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(str(file), sess_options=options, providers=providers)


def _dims(shape) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def graph_specs(session) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    def spec(node) -> TensorSpec:
        datatype = ONNX_TYPE_TO_DATATYPE.get(node.type)
        if datatype is None:
            raise ValueError(f"graph tensor {node.name!r} has unsupported type {node.type}")
        return TensorSpec(node.name, datatype, _dims(node.shape))

    return tuple(spec(n) for n in session.get_inputs()), tuple(spec(n) for n in session.get_outputs())
