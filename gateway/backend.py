"""What the dispatcher talks to: one edge or cloud backend, behind one small protocol.

Contract: a ``Backend`` does I/O only — ``start`` (before serving), ``infer`` (a decoded request within ``timeout_s``),
``stream`` (a generation's responses as the backend sends them, the last flagged final),
``probe`` (one small real inference, not counted as load), ``model_metadata``, ``set_limits`` (the
gateway's request limits, as a reload changes them, for what it decodes or validates) and ``close`` — and
fails only with ``InferenceError``s (``DeadlineExceeded`` when ``timeout_s`` passed), whose kind
says whether another backend may be tried and whether the failure counts against this one
(``ErrorKind.retryable`` / ``backend_fault``). Messages never name addresses. Cancelling a call
(a hedge's loser, a client that left) stops the work upstream.

The bookkeeping the dispatcher and prober keep on each backend lives here too, the same for every
kind: ``outstanding`` (calls in flight, for least-request balancing), ``answered_at`` (when a
real request last succeeded there: the prober skips a backend that traffic already measures) and
``up``, which turns False after ``failures_to_down`` consecutive reachability failures and True
again on any success.
Implementations: ``gateway.grpc_backend.GrpcBackend``, ``gateway.embedded_edge.EmbeddedEdge``,
and the fakes of the dispatcher's unit tests.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from edgecloud.errors import Unavailable
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, InferResponse, ModelMetadata

__all__ = ["Backend", "CLOUD", "EDGE"]

EDGE = "edge"
CLOUD = "cloud"


class Backend(abc.ABC):
    def __init__(self, name: str, role: str, *, failures_to_down: int = 2):
        self.name = name
        """Unique among the gateway's backends; labels metrics and latency samples."""
        self.role = role
        """``edge`` or ``cloud``."""
        self.failures_to_down = failures_to_down
        self.outstanding = 0
        self.up = True
        self.answered_at = float("-inf")
        """Clock time of its last answer to a real request (set by the dispatcher)."""
        self._failures = 0

    # bookkeeping -----------------------------------------------------------------------------

    def mark_success(self) -> bool:
        """It answered. True when that brought it back up."""
        came_back = not self.up
        self._failures = 0
        self.up = True
        return came_back

    def mark_failure(self) -> bool:
        """It could not be reached or failed a probe. True when that took it down."""
        self._failures += 1
        if self.up and self._failures >= self.failures_to_down:
            self.up = False
            return True
        return False

    # I/O -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Prepare before the gateway serves (an embedded edge loads its models); default: nothing."""

    @abc.abstractmethod
    async def infer(self, request: InferRequest, timeout_s: float | None) -> InferResponse: ...

    async def stream(self, request: InferRequest, timeout_s: float | None) -> AsyncIterator[InferResponse]:
        """The responses of one streamed request (``ModelStreamInfer``), ending with the one flagged
        ``triton_final_response``; a failure reported on the stream raises its typed error. Closing
        the iterator early cancels the call upstream (the generation stops)."""
        raise Unavailable(f"{self.role} backend {self.name!r} does not serve streams")
        yield  # pragma: no cover - makes this an async generator

    @abc.abstractmethod
    async def probe(self, request: InferRequest, timeout_s: float) -> None: ...

    @abc.abstractmethod
    async def model_metadata(self, name: str, version: str, timeout_s: float) -> ModelMetadata: ...

    def set_limits(self, limits: RequestLimits) -> None:
        """The gateway's request limits changed (a reload); default: nothing here uses them."""

    async def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
