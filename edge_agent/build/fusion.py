"""FP32 ONNX graph -> the same function with onnxruntime's fused transformer operators.

Contract: ``fuse_for_cpu(src, dst)`` runs ``onnxruntime.transformers.optimizer`` (model_type
"bert") and writes a graph with EmbedLayerNormalization, Attention, SkipLayerNormalization and
BiasGelu (all ``com.microsoft`` operators of the default CPU execution provider), keeping the
input and output names, types and dynamic axes of ``src``. It returns the fused-operator
counts and raises ``FusionError`` if the graph's I/O changed or attention was not fused.
The fused graph has no hardware-specific rewrites (ORT's own level-2+ passes run at load).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.build.toolchain import quiet

if TYPE_CHECKING:
    import onnx

NUM_HEADS = 12
HIDDEN_SIZE = 384


class FusionError(RuntimeError):
    pass


def _io_signature(model: onnx.ModelProto) -> list[tuple]:
    def describe(value):
        tensor = value.type.tensor_type
        dims = tuple(d.dim_param or d.dim_value for d in tensor.shape.dim)
        return value.name, tensor.elem_type, dims

    return [describe(v) for v in (*model.graph.input, *model.graph.output)]


def fuse_for_cpu(src: Path, dst: Path, num_layers: int = 6) -> dict[str, int]:
    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    with quiet():
        optimized = optimizer.optimize_model(
            str(src), model_type="bert", num_heads=NUM_HEADS, hidden_size=HIDDEN_SIZE,
            optimization_options=FusionOptions("bert"), opt_level=0, use_gpu=False,
        )
        counts = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
        optimized.save_model_to_file(str(dst))
    before = _io_signature(onnx.load(str(src), load_external_data=False))
    after = _io_signature(onnx.load(str(dst), load_external_data=False))
    if before != after:
        raise FusionError(f"fusion changed the graph I/O: {before} -> {after}")
    if counts.get("Attention", 0) != num_layers:
        raise FusionError(f"expected {num_layers} fused Attention nodes, got {counts}")
    return counts
