"""A scripted streaming ``Backend`` on virtual time.

``FakeStreamBackend`` answers a stream with one chunk per ``tokens_per_chunk`` tokens, the first
after ``first_s`` and the next ones ``gap_s`` apart (virtual seconds; ``math.inf``: never), text
``"e0 e1 ..."`` (edge) or ``"c0 c1 ..."`` (cloud), every chunk carrying ``completion_tokens`` so
far, then an empty final chunk with the usage. ``fail_after=N`` raises ``error`` instead of the
N+1-th chunk; ``stall_after=N`` goes silent after N chunks. It records each request it got
(parsed: ``requests``), counts ``calls``, ``cancelled`` streams (closed or cancelled before their
end) and ``tokens_produced``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from edgecloud.codec import bytes_array
from edgecloud.errors import InferenceError
from edgecloud.generation import FINAL_PARAMETER, text_tensor
from edgecloud.types import InferRequest, InferResponse, ModelMetadata, Tensor
from gateway.backend import CLOUD, EDGE, Backend
from gateway.streams.requests import parse
from tests.support.virtual_clock import VirtualClock


def generate_request(prompt: str, request_id: str = "r", **sampling) -> InferRequest:
    inputs = [Tensor("text_input", "BYTES", (1,), bytes_array([prompt.encode()])),
              Tensor("stream", "BOOL", (1,), np.array([True])),
              Tensor("sampling_parameters", "BYTES", (1,), bytes_array([json.dumps(sampling).encode()]))]
    return InferRequest(model_name="gen", id=request_id, inputs=inputs)


class FakeStreamBackend(Backend):
    def __init__(self, name: str, role: str, clock: VirtualClock, *, first_s: float = 0.02, gap_s: float = 0.01,
                 fail_after: int | None = None, error: InferenceError | None = None, stall_after: int | None = None,
                 tokens_per_chunk: int = 1):
        super().__init__(name, role)
        self.clock = clock
        self.first_s, self.gap_s = first_s, gap_s
        self.fail_after, self.error, self.stall_after = fail_after, error, stall_after
        self.tokens_per_chunk = tokens_per_chunk
        self.requests = []
        self.calls = 0
        self.cancelled = 0
        self.tokens_produced = 0

    @classmethod
    def edge(cls, clock, **kwargs) -> FakeStreamBackend:
        return cls(EDGE, EDGE, clock, **kwargs)

    @classmethod
    def cloud(cls, clock, index: int = 0, **kwargs) -> FakeStreamBackend:
        return cls(f"cloud@w{index}", CLOUD, clock, **kwargs)

    async def _wait(self, seconds: float) -> None:
        await self.clock.sleep(10**9 if math.isinf(seconds) else seconds)

    async def stream(self, request: InferRequest, timeout_s: float | None):
        self.calls += 1
        generate = parse(request)
        self.requests.append(generate)
        letter = "e" if self.role == EDGE else "c"
        budget = generate.sampling.max_tokens
        produced = chunks = 0
        finished = False
        try:
            while produced < budget:
                if self.fail_after is not None and chunks == self.fail_after:
                    await self._wait(self.first_s if chunks == 0 else self.gap_s)
                    raise self.error
                if self.stall_after is not None and chunks == self.stall_after:
                    await self._wait(math.inf)
                await self._wait(self.first_s if chunks == 0 else self.gap_s)
                n = min(self.tokens_per_chunk, budget - produced)
                text = "".join(f"{letter}{produced + i} " for i in range(n))
                produced += n
                chunks += 1
                self.tokens_produced += n
                yield InferResponse(request.model_name, [text_tensor(text)], id=request.id,
                                    parameters={FINAL_PARAMETER: False, "completion_tokens": produced})
            finished = True
            yield InferResponse(request.model_name, [text_tensor("")], id=request.id,
                                parameters={FINAL_PARAMETER: True, "completion_tokens": produced,
                                            "prompt_tokens": len(generate.prompt), "finish_reason": "length"})
        except BaseException as exc:
            if not isinstance(exc, Exception) and not finished:
                self.cancelled += 1
            raise

    async def infer(self, request, timeout_s):
        raise NotImplementedError

    async def probe(self, request, timeout_s):
        return None

    async def model_metadata(self, name: str, version: str, timeout_s: float) -> ModelMetadata:
        raise NotImplementedError
