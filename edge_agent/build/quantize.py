"""A quantization recipe (a precision level per node group) and the tool that applies it.

Levels:
- ``dynamic``: onnxruntime dynamic INT8 (``quantize_dynamic``): INT8 weights (per output
  channel when ``per_channel``), activations quantized per tensor at run time. MatMul becomes
  DynamicQuantizeMatMul, Attention QAttention, EmbedLayerNormalization QEmbedLayerNormalization.
  Fastest; the per-tensor activation scale is where nearly all of the error comes from.
- ``blockwise``: 8-bit MatMulNBits with ``accuracy_level=4``: symmetric INT8 weights in blocks
  of ``block_size`` along K, activations quantized to INT8 per row and block at run time (INT8
  VNNI compute). Far more accurate on outlier-heavy inputs; as fast as ``dynamic`` only where
  the CPU has VNNI (without it, about FP32 speed). MatMul only.
- ``static``: the same integer ops as ``dynamic``, but the input is quantized with a fixed scale
  from calibration, after the few outlier channels are divided down to the ``smooth_quantile``
  of the channel maxima (weight rows multiplied up to match; see ``static``). As fast as
  ``dynamic``; the result of one sentence no longer depends on its batch-mates or padding.
  MatMul and Attention; the embeddings group has no activation quantizer, so there it is the
  same graph as ``dynamic``.
- ``float``: left in FP32.

Contract: ``apply_recipe(fused, groups, recipe, out, ranges)`` writes ``out`` (a model with the
same I/O as ``fused``) and never modifies ``fused``. ``ranges`` (from ``calibration``, keyed by
tensor name) must cover the input of every group at ``static`` level. ``Recipe.describe()`` is
what model.json records.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.build.groups import Group
from edge_agent.build.static import StaticInput, make_static, plan, smooth, smoothing_scales
from edge_agent.build.toolchain import quiet

if TYPE_CHECKING:
    import onnx

    from edge_agent.build.calibration import ChannelRange


class Level(str, Enum):
    FLOAT = "float"
    DYNAMIC = "dynamic"
    BLOCKWISE = "blockwise"
    STATIC = "static"

    @property
    def integer(self) -> bool:
        """Whether this level runs the node on onnxruntime's INT8 integer ops (QAttention etc.)."""
        return self in (Level.DYNAMIC, Level.STATIC)


@dataclass(frozen=True)
class Recipe:
    """Per-group levels (groups not named are ``default``) plus the global quantizer options."""

    default: Level = Level.DYNAMIC
    levels: dict[str, Level] = field(default_factory=dict)
    per_channel: bool = True
    reduce_range: bool = False
    block_size: int = 128
    smooth_quantile: float | None = 0.99
    """``static`` level: channels whose calibrated |x| max is above this quantile of all channel
    maxima are divided down to it (None: no smoothing)."""

    def level(self, group: Group) -> Level:
        return self.levels.get(group.name, self.default)

    def with_level(self, group: str, level: Level) -> Recipe:
        return replace(self, levels={**self.levels, group: level})

    def describe(self, groups: Sequence[Group]) -> dict[str, Any]:
        by_level: dict[str, list[str]] = {level.value: [] for level in Level}
        for group in groups:
            by_level[self.level(group).value].append(group.name)
        return {
            "method": "onnxruntime INT8 on the fused graph (static calibrated or dynamic activations), "
                      "sensitive MatMuls blockwise INT8, or FP32 where that ran faster on the building machine",
            "weight_type": "int8",
            "activation_type": "uint8 (static: calibrated, per tensor after outlier smoothing; dynamic: per tensor at "
                               "run time) / int8 (blockwise, per row and block)",
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "static": {"calibration": "min/max of the calibration sentences at batch 1, asymmetric",
                       "smooth_quantile": self.smooth_quantile},
            "blockwise": {"op": "MatMulNBits", "bits": 8, "block_size": self.block_size,
                          "symmetric": True, "accuracy_level": 4},
            "groups": by_level,
            "excluded_nodes": len(by_level[Level.FLOAT.value]),
            "blockwise_nodes": len(by_level[Level.BLOCKWISE.value]),
            "dynamic_nodes": len(by_level[Level.DYNAMIC.value]),
            "static_nodes": len(by_level[Level.STATIC.value]),
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


def _smooth_static(model: onnx.ModelProto, nodes: list[str], recipe: Recipe,
                   ranges: dict[str, ChannelRange]) -> dict[str, StaticInput]:
    """Smooth the ``static`` nodes' inputs in place; the static quantizer plan per (new) input."""
    by_name = {n.name: n for n in model.graph.node}
    plans: dict[str, StaticInput] = {}
    for name in nodes:
        node = by_name[name]
        x = node.input[0]
        if x not in ranges:
            raise ValueError(f"no calibration range for {x!r}, the input of static node {name!r}")
        if x in plans:
            raise ValueError(f"static nodes share the input {x!r}")
        scales = smoothing_scales(ranges[x].absmax, recipe.smooth_quantile)
        plans[smooth(model, node, scales)] = plan(ranges[x], scales)
    return plans


def apply_recipe(fused: Path, groups: Sequence[Group], recipe: Recipe, out: Path,
                 ranges: dict[str, ChannelRange] | None = None) -> Path:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    blockwise = {g.node for g in groups if recipe.level(g) is Level.BLOCKWISE}
    integer = [g.node for g in groups if recipe.level(g).integer]
    static = [g.node for g in groups if recipe.level(g) is Level.STATIC and g.static_capable]
    invalid = [g.name for g in groups if g.node in blockwise and not g.blockwise_capable]
    if invalid:
        raise ValueError(f"blockwise applies to MatMul groups only, not {invalid}")
    if static and ranges is None:
        raise ValueError("the static level needs calibration ranges")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp, quiet():
        stage = Path(fused)
        plans: dict[str, StaticInput] = {}
        if blockwise or static:
            model = onnx.load(str(fused))
            if static:
                plans = _smooth_static(model, static, recipe, ranges)
            if blockwise:
                model = _blockwise(model, blockwise, recipe.block_size)
            stage = Path(tmp) / "stage.onnx"
            onnx.save(model, str(stage))
        if not integer:
            shutil.copyfile(stage, out)
            return out
        quantize_dynamic(
            str(stage), str(out),
            op_types_to_quantize=["MatMul", "Attention", "EmbedLayerNormalization"],
            nodes_to_quantize=integer,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        if plans:
            model = onnx.load(str(out))
            make_static(model, plans)
            onnx.save(model, str(out))
    return out
