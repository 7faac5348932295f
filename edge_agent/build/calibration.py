"""Activation statistics of the FP32 graph over the calibration sentences, for static INT8.

Contract: ``collect_ranges(model, tensors, feeds)`` runs ``model`` (an ONNX file) in
onnxruntime on every feed in ``feeds`` (one batch each, in order) and returns, for each name in
``tensors`` (any float tensor the graph computes), a ``ChannelRange``: the smallest and largest
value seen in each channel (the last axis), over every row of every feed. The model file is
not modified. The result depends only on the model and the feeds, so a build that calibrates
on the same sentences gets the same ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ChannelRange:
    """Per-channel minimum and maximum of one activation tensor (float64 vectors, same length)."""

    low: np.ndarray
    high: np.ndarray

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.low), np.abs(self.high))

    def merge(self, values: np.ndarray) -> ChannelRange:
        """This range widened to cover ``values`` (any shape whose last axis is the channels)."""
        rows = np.asarray(values, dtype=np.float64).reshape(-1, self.low.shape[0])
        return ChannelRange(np.minimum(self.low, rows.min(axis=0)), np.maximum(self.high, rows.max(axis=0)))

    @classmethod
    def of(cls, values: np.ndarray) -> ChannelRange:
        rows = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
        return cls(rows.min(axis=0), rows.max(axis=0))


def collect_ranges(model: Path, tensors: Sequence[str],
                   feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, ChannelRange]:
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(model))
    present = {o for n in graph.graph.node for o in n.output} | {i.name for i in graph.graph.input}
    missing = [t for t in tensors if t not in present]
    if missing:
        raise ValueError(f"tensors not computed by {model}: {missing}")
    outputs = {o.name for o in graph.graph.output}
    for name in tensors:
        if name not in outputs:
            graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    ranges: dict[str, ChannelRange] = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(list(tensors), {k: feed[k] for k in inputs})):
            ranges[name] = ranges[name].merge(value) if name in ranges else ChannelRange.of(value)
    if len(ranges) != len(tensors):
        raise ValueError("no calibration feeds")
    return ranges
