"""Static INT8 activations for the ``static`` level: calibrated scales, outlier channels smoothed.

A dynamic INT8 node scales its input by the largest value in the whole batch at run time, so
one outlier (MiniLM's [CLS] row carries values 5-10x the rest in a few fixed channels) costs
every other value its resolution, and padding rows or batch-mates move everyone's result. The
``static`` level instead quantizes each node's input with a fixed scale from calibration, and
first divides the few outlier channels down to the rest (multiplying the same weight rows up,
which leaves the FP32 function unchanged). Where the input is an Attention output the division
is folded into that Attention's V weights and bias, at no run-time cost; elsewhere (the input
also feeds a residual, or comes from GELU) it is one small ``Mul``. (A per-channel
``QuantizeLinear`` would fold it too, but onnxruntime's per-axis kernel is ~30x slower.)

Contract:
- ``smoothing_scales(absmax, quantile)`` returns s >= 1 per input channel: channel k's
  calibrated |x| maximum over the ``quantile`` of all channel maxima where it is above it, 1
  elsewhere (all ones for ``quantile=None``). It does not cap s by the weights: the smoothed
  row may set its columns' INT8 weight scales, and its full-scale activation may then meet a
  full-scale weight, which onnxruntime's AVX2 u8s8 kernel (no VNNI; it adds pairs of products
  in int16) can saturate on the outlier row. Capping s to avoid that (at 0.5 or 1.0 of the
  column maxima) measured no better than no smoothing on MiniLM, so the search judges the
  level as it is.
- ``plan(channel_range, scales)`` returns the ``StaticInput`` for one node input: the scale and
  zero point of asymmetric UINT8 covering the calibrated range of x / s (zero included).
- ``smooth(model, node, scales)`` makes ``node`` (MatMul or Attention, weight [K, N] in input 1)
  compute the same function of an input divided by s: row k of its weight is multiplied by s[k]
  and the division is folded or inserted as above. It edits ``model`` in place and returns the
  name of the tensor the node now reads (which the static quantizer must cover).
- ``make_static(model, plans)`` rewrites, in place, a graph from ``quantize_dynamic``: every
  ``DynamicQuantizeLinear`` whose input is named in ``plans`` becomes a ``QuantizeLinear`` with
  that plan's scale and zero point, which also become the constants the integer op reads. It
  returns the number of rewritten nodes and raises ``ValueError`` for a plan whose input has no
  dynamic quantizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_agent.build.calibration import ChannelRange

if TYPE_CHECKING:
    import onnx

QMAX = 255


@dataclass(frozen=True)
class StaticInput:
    scale: float
    """The integer op's input scale: one UINT8 step of x / s."""
    zero_point: int


def smoothing_scales(absmax: np.ndarray, quantile: float | None) -> np.ndarray:
    absmax = np.asarray(absmax, dtype=np.float64)
    if quantile is None:
        return np.ones_like(absmax)
    ceiling = float(np.quantile(absmax, quantile))
    if ceiling <= 0:
        return np.ones_like(absmax)
    return np.maximum(1.0, absmax / ceiling)


def plan(channel_range: ChannelRange, scales: np.ndarray) -> StaticInput:
    low = min(0.0, float((channel_range.low / scales).min()))
    high = max(0.0, float((channel_range.high / scales).max()))
    scale = (high - low) / QMAX if high > low else 1.0
    zero_point = int(np.clip(round(-low / scale), 0, QMAX))
    return StaticInput(float(np.float32(scale)), zero_point)


def _initializer(model: onnx.ModelProto, name: str, owner: onnx.NodeProto):
    from onnx import numpy_helper

    (tensor,) = [i for i in model.graph.initializer if i.name == name]
    users = [n.name for n in model.graph.node if name in n.input]
    if users != [owner.name]:
        raise ValueError(f"initializer {name!r} of {owner.name!r} is shared with {users}")
    return tensor, numpy_helper.to_array(tensor).astype(np.float32)


def _scale(model: onnx.ModelProto, name: str, owner: onnx.NodeProto, factor: np.ndarray) -> None:
    from onnx import numpy_helper

    tensor, values = _initializer(model, name, owner)
    tensor.CopyFrom(numpy_helper.from_array((values * factor).astype(np.float32), name))


def smooth(model: onnx.ModelProto, node: onnx.NodeProto, scales: np.ndarray) -> str:
    from onnx import helper, numpy_helper

    scales = np.asarray(scales, dtype=np.float32)
    _, weight = _initializer(model, node.input[1], node)
    if weight.ndim != 2 or weight.shape[0] != len(scales):
        raise ValueError(f"weight of {node.name!r} has shape {weight.shape}, expected [{len(scales)}, N]")
    x = node.input[0]
    if np.all(scales == 1):
        return x
    _scale(model, node.input[1], node, scales[:, None])
    producer = next((n for n in model.graph.node if x in n.output), None)
    readers = [n for n in model.graph.node if x in n.input]
    if (producer is not None and producer.op_type == "Attention" and readers == [node]
            and len(producer.input) > 2 and producer.input[2]):
        hidden = len(scales)  # Attention's output channel k is V's channel k: V is the last third
        _scale(model, producer.input[1], producer, np.r_[np.ones(2 * hidden), 1 / scales][None, :])
        _scale(model, producer.input[2], producer, np.r_[np.ones(2 * hidden), 1 / scales])
        return x
    divisor, smoothed = f"{node.name}_smooth_divisor", f"{x}_smoothed_for_{node.name}"
    model.graph.initializer.append(numpy_helper.from_array((1 / scales).astype(np.float32), divisor))
    position = list(model.graph.node).index(node)
    model.graph.node.insert(position, helper.make_node("Mul", [x, divisor], [smoothed], name=f"{node.name}_smooth"))
    node.input[0] = smoothed
    return smoothed


def make_static(model: onnx.ModelProto, plans: dict[str, StaticInput]) -> int:
    from onnx import helper, numpy_helper

    graph = model.graph
    found = set()
    nodes = []
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear" or node.input[0] not in plans:
            nodes.append(node)
            continue
        x = node.input[0]
        quantized, scale_out, zero_point_out = node.output
        p = plans[x]
        graph.initializer.extend([
            numpy_helper.from_array(np.array(p.scale, dtype=np.float32), scale_out),
            numpy_helper.from_array(np.array(p.zero_point, dtype=np.uint8), zero_point_out),
        ])
        nodes.append(helper.make_node("QuantizeLinear", [x, scale_out, zero_point_out], [quantized],
                                      name=f"{node.name}_static"))
        found.add(x)
    missing = sorted(set(plans) - found)
    if missing:
        raise ValueError(f"no dynamic quantizer to make static for inputs {missing}")
    del graph.node[:]
    graph.node.extend(nodes)
    return len(found)
