"""The transport-independent core every server's gRPC and HTTP fronts call.

Contract of an ``InferenceDataplane`` (the edge agent's and the cloud worker's ``Dataplane``, the
gateway's ``GatewayDataplane``): it takes and returns edgecloud's own types, never protobuf or
JSON. ``infer`` resolves the model (NOT_FOUND), validates the request against its metadata
(INVALID_ARGUMENT) before anything runs, and returns only the requested outputs (all when none
are named). Failures are ``InferenceError``s, which the fronts map with ``edgecloud.status``.
``set_ready`` is how the server's lifecycle says it accepts requests (after start, until stop).

``Dataplane`` is the implementation over a ``ModelRepository`` (edge agent, cloud worker).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from edgecloud.admission import Admission
from edgecloud.classification import CLASSIFICATION_PARAMETER, classify
from edgecloud.limits import RequestLimits
from edgecloud.model import Model, ModelRepository
from edgecloud.types import InferRequest, InferResponse, ModelMetadata, ServerMetadata
from edgecloud.validation import validate_request

__all__ = ["Dataplane", "InferenceDataplane", "PROTOCOL_EXTENSIONS"]

PROTOCOL_EXTENSIONS: tuple[str, ...] = ("classification",)
"""Protocol extensions every edgecloud server implements: ``classification`` (a requested output's
``classification: k`` parameter answers its top k as ``"value:index[:label]"``,
``edgecloud.classification``). Not ``model_repository`` (nor its read-only form): that would
promise Triton's repository index and model config RPCs, which these servers do not answer
(tritonclient's ``get_model_config`` / ``get_model_repository_index``)."""


class InferenceDataplane(Protocol):
    """What the shared fronts (``edgecloud.grpc_server``, ``edgecloud.http_front``) serve."""

    limits: RequestLimits
    """Bounds the fronts apply while decoding, before the dataplane sees a request."""

    def set_ready(self, ready: bool) -> None: ...

    def live(self) -> bool: ...

    def ready(self) -> bool: ...

    def server_metadata(self) -> ServerMetadata: ...

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata: ...

    async def model_ready(self, name: str, version: str = "") -> bool: ...

    def precheck(self, request: InferRequest, /) -> None:
        """Refuse, from its header alone (``edgecloud.codec.Precheck``: tensor data not yet
        decoded), a request its model cannot serve; the fronts call it while decoding. Uses only
        what is known in memory (no I/O); ``infer`` / ``stream`` still validate in full."""
        ...

    async def infer(self, request: InferRequest, /) -> InferResponse: ...

    def stream(self, request: InferRequest, /) -> AsyncIterator[InferResponse]:
        """Responses over a stream; the last carries ``triton_final_response: true``. Closing the
        iterator early stops the work behind it."""
        ...


class Dataplane:
    """``InferenceDataplane`` over the models of one process."""

    def __init__(self, repository: ModelRepository, server: ServerMetadata, limits: RequestLimits,
                 admission: Admission | None = None):
        self.repository = repository
        self.server = server
        self.limits = limits
        self.admission = admission
        self._ready = False

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self._ready and all(model.ready() for model in self.repository.all())

    def server_metadata(self) -> ServerMetadata:
        return self.server

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        return self.repository.get(name, version).metadata

    async def model_ready(self, name: str, version: str = "") -> bool:
        return self._ready and self.repository.get(name, version).ready()

    def precheck(self, request: InferRequest) -> None:
        self.prepare(request)

    def prepare(self, request: InferRequest) -> Model:
        """Resolve and validate: the model that will run ``request`` (nothing runs yet)."""
        model = self.repository.get(request.model_name, request.model_version)
        validate_request(request, model.metadata, self.limits)
        return model

    @staticmethod
    def finish(request: InferRequest, response: InferResponse, model: Model | None = None) -> InferResponse:
        """Keep only the requested outputs (all when none are named), answer those asking for
        ``classification`` as their top classes (with the model's ``labels``, when it has them),
        and echo the request id."""
        if request.outputs:
            wanted = {output.name: output for output in request.outputs}
            kept = []
            for tensor in response.outputs:
                requested = wanted.get(tensor.name)
                if requested is None:
                    continue
                count = requested.parameters.get(CLASSIFICATION_PARAMETER)
                if count is not None:
                    tensor = classify(tensor, count, getattr(model, "labels", None))
                kept.append(tensor)
            response.outputs = kept
            response.wire = None
        response.id = request.id
        return response

    async def infer(self, request: InferRequest) -> InferResponse:
        """Shed at once (``Overloaded``) past ``admission``'s limit; otherwise validate and run."""
        if self.admission is None:
            model = self.prepare(request)
            return self.finish(request, await model.infer(request), model)
        with self.admission.admit():
            model = self.prepare(request)
            return self.finish(request, await model.infer(request), model)

    async def stream(self, request: InferRequest) -> AsyncIterator[InferResponse]:
        """Validate, then the model's responses one by one (admission holds for the whole stream)."""
        if self.admission is None:
            model = self.prepare(request)
            async for response in self._finished(request, model):
                yield response
            return
        with self.admission.admit():
            model = self.prepare(request)
            async for response in self._finished(request, model):
                yield response

    async def _finished(self, request: InferRequest, model: Model) -> AsyncIterator[InferResponse]:
        responses = model.stream(request)
        try:
            async for response in responses:
                yield self.finish(request, response, model)
        finally:
            await responses.aclose()
