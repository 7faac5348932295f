"""The quantizable node groups of the fused BERT graph, named the way the report talks.

Contract: ``find_groups(model)`` returns one ``Group`` per quantizable weight-bearing node of a
graph produced by ``fusion.fuse_for_cpu``: ``embeddings`` (EmbedLayerNormalization: word,
position and segment tables), and per layer ``L{i}.qkv`` (fused Attention), ``L{i}.attn_out``,
``L{i}.ffn_up`` and ``L{i}.ffn_down`` (MatMul). Order: embeddings, then layer by layer.
It raises ``ValueError`` for a node it cannot place, so a changed exporter fails loudly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

FAMILIES = ("embeddings", "qkv", "attn_out", "ffn_up", "ffn_down")
_MATMUL_FAMILY = (("attention/output", "attn_out"), ("intermediate", "ffn_up"), ("output/dense", "ffn_down"))


@dataclass(frozen=True)
class Group:
    name: str
    family: str
    layer: int | None
    node: str
    op_type: str
    weight_params: int

    @property
    def blockwise_capable(self) -> bool:
        """Whether the MatMulNBits (blockwise 8-bit) path applies: plain MatMul nodes only."""
        return self.op_type == "MatMul"

    @property
    def static_capable(self) -> bool:
        """Whether the node quantizes a float input at run time (so the static level changes it):
        MatMul and Attention; EmbedLayerNormalization quantizes weights only."""
        return self.op_type in ("MatMul", "Attention")


def _params(model: onnx.ModelProto, names) -> int:
    sizes = {i.name: math.prod(i.dims) for i in model.graph.initializer}
    return sum(sizes.get(n, 0) for n in names)


def find_groups(model: onnx.ModelProto) -> list[Group]:
    initializers = {i.name for i in model.graph.initializer}
    groups: list[Group] = []
    attention_seen = 0
    for node in model.graph.node:
        if node.op_type == "EmbedLayerNormalization":
            groups.append(Group("embeddings", "embeddings", None, node.name, node.op_type,
                                _params(model, node.input[2:5])))
        elif node.op_type == "Attention":
            layer = attention_seen
            attention_seen += 1
            groups.append(Group(f"L{layer}.qkv", "qkv", layer, node.name, node.op_type,
                                _params(model, node.input[1:2])))
        elif node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in initializers:
            match = re.search(r"layer\.(\d+)/", node.name)
            family = next((f for key, f in _MATMUL_FAMILY if key in node.name), None)
            if match is None or family is None:
                raise ValueError(f"cannot place MatMul node {node.name!r} in a layer/family")
            layer = int(match.group(1))
            groups.append(Group(f"L{layer}.{family}", family, layer, node.name, node.op_type,
                                _params(model, node.input[1:2])))
    order = {f: i for i, f in enumerate(FAMILIES)}
    groups.sort(key=lambda g: (-1 if g.layer is None else g.layer, order[g.family]))
    return groups
