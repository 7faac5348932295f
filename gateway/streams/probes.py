"""TTFT probes: how streams come back to the edge.

Contract: ``StreamProber.run()`` loops until cancelled. While the stream policy is in
``CLOUD_FALLBACK`` and the edge is up, every ``probe_interval_ms`` it asks the edge for one token
(greedy, ``max_tokens`` 1) of the generative model streams last used, and feeds the time to that
token to ``policy.observe_probe`` (None when it failed; the time is recorded as a probe sample in
``monitor``, which ``edgecloud tune --kind ttft`` reads), which brings streams back after
``recover_probes`` fast probes in a row. Nothing is probed before any stream was served (there is
no model to ask) or while streams prefer the edge (real streams are the samples then). Time comes
from the injected clock and sleep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edgecloud.clock import Clock, Sleep
from edgecloud.errors import InferenceError
from edgecloud.generation import FINAL_PARAMETER, SamplingParams
from edgecloud.types import InferRequest
from gateway.backend import Backend
from gateway.config import RoutingSettings
from gateway.latency import LatencyMonitor
from gateway.routing import RouteState, RoutingPolicy
from gateway.streams.requests import upstream_request

__all__ = ["StreamProber", "PROBE_PROMPT"]

log = logging.getLogger(__name__)

PROBE_PROMPT = "Hi"


class StreamProber:
    def __init__(self, edge: Callable[[], Backend | None], policy: RoutingPolicy, settings: RoutingSettings, *,
                 clock: Clock, sleep: Sleep = asyncio.sleep, monitor: LatencyMonitor | None = None):
        self._edge = edge
        self.policy = policy
        self.monitor = monitor
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self.model: tuple[str, str] | None = None
        """(name, version) of the generative model streams last used."""

    def reconfigure(self, settings: RoutingSettings) -> None:
        self.settings = settings

    def saw(self, name: str, version: str) -> None:
        self.model = (name, version)

    def _request(self) -> InferRequest:
        name, version = self.model
        base = InferRequest(model_name=name, model_version=version, inputs=[], id="probe")
        return upstream_request(base, prompt=PROBE_PROMPT, sampling=SamplingParams(max_tokens=1, temperature=0.0))

    async def run(self) -> None:
        while True:
            await self._sleep(self.settings.probe_interval_ms / 1000.0)
            edge = self._edge()
            if self.policy.state is RouteState.CLOUD_FALLBACK and edge is not None and edge.up and \
                    self.model is not None:
                ttft = await self.probe(edge)
                if ttft is not None and self.monitor is not None:
                    self.monitor.record(edge.name, ttft, probe=True)
                self.policy.observe_probe(ttft)

    async def probe(self, edge: Backend) -> float | None:
        """Time to the edge's first token, in seconds; None when it failed or took too long."""
        start = self._clock.now()
        responses = edge.stream(self._request(), self.settings.probe_timeout_ms / 1000.0)
        try:
            async with asyncio.timeout(self.settings.probe_timeout_ms / 1000.0):
                async for response in responses:
                    if response.outputs or response.parameters.get(FINAL_PARAMETER) is True:
                        return self._clock.now() - start
        except (InferenceError, TimeoutError):
            return None
        except Exception:
            log.exception("stream probe of the edge failed unexpectedly")
            return None
        finally:
            await responses.aclose()
        return None
