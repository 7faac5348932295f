"""Generation through the gateway: the cache, shared live generations and the stream dispatcher
composed; what ``GatewayDataplane`` calls for a generative model.

Contract:
- ``stream(request, generate, ...)`` yields the answer's chunks (the protocol's decoupled
  convention: the last flagged ``triton_final_response``), with ``served_by`` / ``route_reason``
  on the first and the final chunk.
- A deterministic request (``temperature`` 0, or a fixed ``seed``) with the cache on is looked up
  first: a hit is replayed chunk by chunk as it was produced, the final chunk saying
  ``served_by: cache``, ``route_reason: cache_hit`` and ``cache_source`` (edge or cloud). A miss
  joins the identical generation in flight in this process, if any (``route_reason: coalesced``:
  the chunks already produced at once, then the rest live), or starts one; a generation that
  ended well is stored (protobuf bytes, like every entry) with its provenance (``edge`` when the
  edge produced any of it), one that failed or was cancelled never is. The tenant, the model
  version, the prompt and every sampling parameter are in the key.
- ``whole(...)`` is the unary form (``ModelInfer``, ``generate``): the same stream gathered into one
  response, the prompt first unless ``exclude_input_in_output``; so unary generation is routed by
  TTFT, hedged and failed over exactly like a stream, and shares the cache.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from edgecloud.codec import bytes_array
from edgecloud.generation import FINAL_PARAMETER, TEXT_OUTPUT, GenerateRequest, text_tensor
from edgecloud.types import InferRequest, InferResponse, Tensor
from gateway.cache import CACHE_HIT, CACHE_SOURCE, COALESCED, CacheRequest
from gateway.cache.cache import GatewayCache
from gateway.cache.keys import cache_key
from gateway.metrics import GatewayMetrics
from gateway.where_served import ROUTE_REASON, SERVED_BY
from gateway.streams.dispatch import StreamDispatcher
from gateway.streams.requests import deterministic, response_text, upstream_request
from gateway.streams.shared import SharedGeneration

__all__ = ["StreamService", "STREAM_ENTRY_PARAMETER"]

STREAM_ENTRY_PARAMETER = "edgecloud_stream_entry"
"""Set on the request a stream's cache key is built from: stream entries (chunks) never collide
with a tensor answer of the same inputs."""
_USAGE_KEYS = ("variant", "finish_reason", "prompt_tokens", "completion_tokens")


class StreamService:
    def __init__(self, dispatcher: StreamDispatcher, cache: GatewayCache, metrics: GatewayMetrics):
        self.dispatcher = dispatcher
        self.cache = cache
        self.metrics = metrics
        self._flights: dict[bytes, SharedGeneration] = {}

    async def stream(self, request: InferRequest, generate: GenerateRequest, *, model_version: str, deadline: float,
                     require_cloud: bool, bypass_cache: bool) -> AsyncIterator[InferResponse]:
        self.metrics.active_streams.inc()
        try:
            if bypass_cache or not deterministic(generate.sampling) or not self.cache.settings.enabled:
                async for response in self.dispatcher.stream(request, generate, deadline,
                                                             require_cloud=require_cloud):
                    yield response
                return
            keyed = CacheRequest(_key_request(request, generate), model_version, (), require_cloud, False)
            located = self.cache.locate(keyed)  # the key, built once for the lookup, the flight and the store
            hit = await self.cache.lookup(keyed, located) if located is not None else None
            if hit is not None:
                self.metrics.stream_cache.labels("hit").inc()
                for response in _replay(request, *hit):
                    yield response
                return
            # The digest covers tenant, model, version, prompt and sampling.
            flight_key = (located[1] if located is not None else cache_key(keyed), require_cloud)
            shared = self._flights.get(flight_key)
            leader = shared is None or shared.ended
            if leader:
                started = time.monotonic()
                source = self.dispatcher.stream(request, generate, deadline, require_cloud=require_cloud)
                shared = SharedGeneration(source,
                                          lambda done: self._ended(flight_key, keyed, located, done, started))
                self._flights[flight_key] = shared
            else:
                self.metrics.stream_cache.labels("joined").inc()
            responses = shared.follow()
            try:
                async for response in responses:
                    response.id = request.id
                    if not leader and ROUTE_REASON in response.parameters:
                        response.parameters[ROUTE_REASON] = COALESCED
                    yield response
            finally:
                await responses.aclose()
        finally:
            self.metrics.active_streams.dec()

    def _ended(self, flight_key, keyed: CacheRequest, located: tuple[str, bytes] | None, shared: SharedGeneration,
               started: float) -> None:
        if self._flights.get(flight_key) is shared:
            del self._flights[flight_key]
        if located is None or not shared.completed or not shared.responses:
            return
        final = shared.responses[-1].parameters
        served_by = str(final.get(SERVED_BY, ""))
        provenance = "edge" if "edge" in served_by.split("+") else "cloud" if served_by else ""
        chunks = bytes_array([response_text(r).encode("utf-8") for r in shared.responses])
        parameters = {key: final[key] for key in _USAGE_KEYS if key in final}
        stored = InferResponse(keyed.request.model_name, [Tensor(TEXT_OUTPUT, "BYTES", chunks.shape, chunks)],
                               model_version=shared.responses[-1].model_version, parameters=parameters)
        self.cache.store(keyed, located, stored, provenance, time.monotonic() - started)
        self.metrics.stream_cache.labels("stored").inc()

    async def whole(self, request: InferRequest, generate: GenerateRequest, **options) -> InferResponse:
        parts = [] if generate.exclude_input_in_output else [generate.prompt]
        first: InferResponse | None = None
        last: InferResponse | None = None
        stream = self.stream(request, generate, **options)
        try:
            async for response in stream:
                first = first or response
                last = response
                parts.append(response_text(response))
        finally:
            await stream.aclose()
        parameters = dict(last.parameters)
        parameters[FINAL_PARAMETER] = True
        return InferResponse(last.model_name, [text_tensor("".join(parts))], model_version=last.model_version,
                             id=request.id, parameters=parameters)


def _key_request(request: InferRequest, generate: GenerateRequest) -> InferRequest:
    keyed = upstream_request(request, prompt=generate.prompt, sampling=generate.sampling)
    keyed.id = ""
    keyed.parameters[STREAM_ENTRY_PARAMETER] = True
    return keyed


def _replay(request: InferRequest, stored: InferResponse, provenance) -> list[InferResponse]:
    """The stored chunks as the stream that produced them (the last one final, with usage)."""
    chunks = stored.output(TEXT_OUTPUT).data.reshape(-1)
    variant = stored.parameters.get("variant")
    out = []
    for index, chunk in enumerate(chunks):
        parameters = {FINAL_PARAMETER: False} if variant is None else {"variant": variant, FINAL_PARAMETER: False}
        if index == 0:
            parameters.update({SERVED_BY: "cache", ROUTE_REASON: CACHE_HIT})
        out.append(InferResponse(request.model_name, [text_tensor(bytes(chunk).decode("utf-8"))],
                                 model_version=stored.model_version, id=request.id, parameters=parameters))
    final = out[-1].parameters
    final.update(stored.parameters)
    final.update({FINAL_PARAMETER: True, SERVED_BY: "cache", ROUTE_REASON: CACHE_HIT,
                  CACHE_SOURCE: provenance.label})
    return out
