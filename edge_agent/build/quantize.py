"""A quantization recipe (a precision level per node group) and the tool that applies it.

Levels:
- ``dynamic``: onnxruntime dynamic INT8 (``quantize_dynamic``): INT8 weights (per output
  channel when ``per_channel``), activations quantized per tensor at run time. MatMul becomes
  DynamicQuantizeMatMul, Attention QAttention, EmbedLayerNormalization QEmbedLayerNormalization.
  Fastest; the per-tensor activation scale is where nearly all of the error comes from.
- ``blockwise``: 8-bit MatMulNBits with ``accuracy_level=4``: symmetric INT8 weights in blocks
  of ``block_size`` along K, activations quantized to INT8 per row and block at run time (INT8
  VNNI compute). Far more accurate on outlier-heavy inputs, somewhat slower. MatMul only.
- ``float``: left in FP32.

Contract: ``apply_recipe(fused, groups, recipe, out)`` writes ``out`` (a model with the same
I/O as ``fused``) and never modifies ``fused``. ``Recipe.describe()`` is what model.json records.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.build.toolchain import quiet
from edge_agent.build.groups import Group

if TYPE_CHECKING:
    import onnx


class Level(str, Enum):
    FLOAT = "float"
    DYNAMIC = "dynamic"
    BLOCKWISE = "blockwise"


@dataclass(frozen=True)
class Recipe:
    """Per-group levels (groups not named are ``default``) plus the global quantizer options."""

    default: Level = Level.DYNAMIC
    levels: dict[str, Level] = field(default_factory=dict)
    per_channel: bool = True
    reduce_range: bool = False
    block_size: int = 128

    def level(self, group: Group) -> Level:
        return self.levels.get(group.name, self.default)

    def with_level(self, group: str, level: Level) -> Recipe:
        return replace(self, levels={**self.levels, group: level})

    def describe(self, groups: Sequence[Group]) -> dict[str, Any]:
        by_level: dict[str, list[str]] = {level.value: [] for level in Level}
        for group in groups:
            by_level[self.level(group).value].append(group.name)
        return {
            "method": "onnxruntime dynamic INT8 on the fused graph, sensitive MatMuls blockwise INT8",
            "weight_type": "int8",
            "activation_type": "uint8 (dynamic, per tensor) / int8 (blockwise, per row and block)",
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "blockwise": {"op": "MatMulNBits", "bits": 8, "block_size": self.block_size,
                          "symmetric": True, "accuracy_level": 4},
            "groups": by_level,
            "excluded_nodes": len(by_level[Level.FLOAT.value]),
            "blockwise_nodes": len(by_level[Level.BLOCKWISE.value]),
            "dynamic_nodes": len(by_level[Level.DYNAMIC.value]),
        }


def _blockwise(model: onnx.ModelProto, nodes: set[str], block_size: int) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in nodes]
    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True,
                                          accuracy_level=4, bits=8, op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=block_size, is_symmetric=True,
                                     accuracy_level=4, nodes_to_exclude=others,
                                     op_types_to_quantize=("MatMul",), algo_config=config)
    quantizer.process()
    return quantizer.model.model


def apply_recipe(fused: Path, groups: Sequence[Group], recipe: Recipe, out: Path) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    blockwise = {g.node for g in groups if recipe.level(g) is Level.BLOCKWISE}
    dynamic = [g.node for g in groups if recipe.level(g) is Level.DYNAMIC]
    invalid = [g.name for g in groups if g.node in blockwise and not g.blockwise_capable]
    if invalid:
        raise ValueError(f"blockwise applies to MatMul groups only, not {invalid}")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, quiet():
        stage = Path(fused)
        if blockwise:
            stage = Path(tmp) / "blockwise.onnx"
            onnx.save(_blockwise(onnx.load(str(fused)), blockwise, recipe.block_size), str(stage))
        if not dynamic:
            shutil.copyfile(stage, out)
            return out
        quantize_dynamic(
            str(stage), str(out),
            op_types_to_quantize=["MatMul", "Attention", "EmbedLayerNormalization"],
            nodes_to_quantize=dynamic,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return out
