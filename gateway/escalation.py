"""Confidence escalation: when is a classifier's edge answer not sure enough to return.

Contract:
- ``ConfidenceBar`` (per model, from ``routing.escalation``): an answer is *unsure* when any row's
  top-1 probability of ``output`` is under ``min_confidence`` or its top-1 minus top-2 under
  ``min_margin``. ``top_two(response, output)`` reads both per row from the raw probabilities
  (FP16/FP32/FP64 [N, C] or [C]) or from the classification extension's ``"score:index[:label]"``
  strings (top 2 needed; with 1 string the margin is taken as the top score minus what the rest
  could at most hold). An answer without the output cannot be judged: it is not unsure.
- ``widen(request, bar)`` returns the request to send upstream and a ``restore`` for its answer:
  when the client asked for outputs that do not let the bar be judged (the output left out, or
  classified to one class), the upstream request names the output too (or classifies to two), and
  ``restore`` gives the client exactly what it asked for. The cache key is built from the client's
  request, never the widened one.
- Pure logic: no I/O, no clock; the dispatcher decides what to do with an unsure answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from edgecloud.classification import CLASSIFICATION_PARAMETER
from edgecloud.types import InferRequest, InferResponse, RequestedOutput

__all__ = ["ConfidenceBar", "Escalation", "top_two", "widen"]

Restore = Callable[[InferResponse], InferResponse]


@dataclass(frozen=True, slots=True)
class ConfidenceBar:
    output: str = "probabilities"
    min_confidence: float = 0.0
    min_margin: float = 0.0
    reserve_s: float = 0.01
    """Time kept before the deadline to return the edge's answer when the cloud is late."""

    def unsure(self, response: InferResponse) -> bool:
        tops = top_two(response, self.output)
        if tops is None or not len(tops):
            return False
        top1, top2 = tops[:, 0], tops[:, 1]
        return bool(np.any(top1 < self.min_confidence) or np.any(top1 - top2 < self.min_margin))


def top_two(response: InferResponse, output: str) -> np.ndarray | None:
    """[N, 2] of (top-1, top-2) per row of ``output``, or None when the answer does not hold it."""
    tensor = next((t for t in response.outputs if t.name == output), None)
    if tensor is None:
        return None
    data = np.asarray(tensor.data)
    if tensor.datatype in ("FP16", "FP32", "FP64"):
        rows = data.reshape(1, -1) if data.ndim == 1 else data.reshape(data.shape[0], -1)
        if rows.shape[1] < 2:
            return None
        top = np.partition(rows.astype(np.float64, copy=False), -2, axis=1)[:, -2:]  # no full sort per request
        return top[:, ::-1]
    if tensor.datatype == "BYTES":
        rows = data.reshape(1, -1) if data.ndim == 1 else data.reshape(data.shape[0], -1)
        out = np.empty((rows.shape[0], 2), dtype=np.float64)
        for index, row in enumerate(rows):
            scores = [_score(item) for item in row[:2]]
            if any(score is None for score in scores) or not scores:
                return None
            out[index, 0] = scores[0]
            out[index, 1] = scores[1] if len(scores) > 1 else max(0.0, 1.0 - scores[0])
        return out
    return None


def _score(item) -> float | None:
    text = item.decode("utf-8", "replace") if isinstance(item, (bytes, bytearray)) else str(item)
    try:
        return float(text.split(":", 1)[0])
    except ValueError:
        return None


def widen(request: InferRequest, bar: ConfidenceBar) -> tuple[InferRequest, Restore | None]:
    """The upstream request that lets ``bar`` be judged, and how to give the client its answer
    (None: the request is sent as it is)."""
    if not request.outputs:
        return request, None
    outputs = list(request.outputs)
    wanted = next((o for o in outputs if o.name == bar.output), None)
    if wanted is not None:
        count = wanted.parameters.get(CLASSIFICATION_PARAMETER)
        if not isinstance(count, int) or isinstance(count, bool) or count >= 2:
            return request, None
        index = outputs.index(wanted)
        outputs[index] = RequestedOutput(wanted.name, {**wanted.parameters, CLASSIFICATION_PARAMETER: 2})

        def restore(response: InferResponse) -> InferResponse:
            for position, tensor in enumerate(response.outputs):
                if tensor.name == bar.output and tensor.datatype == "BYTES":
                    data = np.asarray(tensor.data)
                    kept = data[..., :count]
                    response.outputs[position] = dataclasses.replace(tensor, shape=tuple(kept.shape), data=kept)
            response.wire = None
            return response
    else:
        outputs.append(RequestedOutput(bar.output, {}))

        def restore(response: InferResponse) -> InferResponse:
            response.outputs = [tensor for tensor in response.outputs if tensor.name != bar.output]
            response.wire = None
            return response
    return dataclasses.replace(request, outputs=outputs, wire=None), restore


class Escalation:
    """The bars by model name (``routing.escalation``)."""

    def __init__(self, bars: Mapping[str, ConfidenceBar] | None = None):
        self.bars = dict(bars or {})

    def bar_for(self, model_name: str) -> ConfidenceBar | None:
        return self.bars.get(model_name)
