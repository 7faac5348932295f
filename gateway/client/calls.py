"""Each client method as a transport-free ``Call``: which RPC, the request message, how to parse
the answer. The one module of the SDK that touches ``inference_pb2`` messages.

Contract: ``Calls`` builds a ``Call`` per public client method; ``Client`` and ``AsyncClient``
only run them (with retries and error translation). Requests carry inputs as
``raw_input_contents`` (``edgecloud.codec.request_to_proto``). A response the codec rejects is the
server's fault and raises ``InternalError``. Responses are decoded under limits derived from the
largest message the channel accepts, so a lying shape cannot make the client allocate more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from edgecloud import codec
from edgecloud.errors import InferenceError, InternalError
from edgecloud.limits import RequestLimits
from edgecloud.types import InferRequest, ModelMetadata, ParameterValue, RequestedOutput, ServerMetadata
from gateway.client.generation import GenerationChunk, chunk_from_message, generation_request
from edgecloud.image_model import image_tensor
from gateway.client.inputs import InputValue, tensors_from_inputs
from gateway.client.results import ClassifyResult, EmbedResult, InferResult
from protos import inference_pb2 as pb

__all__ = ["Call", "Calls", "EMBED_INPUT", "EMBED_OUTPUT", "IMAGE_MODEL", "REFERENCE_MODEL"]

T = TypeVar("T")

REFERENCE_MODEL = "all-MiniLM-L6-v2"
EMBED_INPUT = "text"
EMBED_OUTPUT = "embedding"
IMAGE_MODEL = "efficientnet-lite0"
IMAGE_INPUT = "image"
IMAGE_OUTPUT = "probabilities"


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One RPC to make: ``method`` names the stub attribute (``"ModelInfer"``; ``"ModelStreamInfer"``
    for a stream, whose every message ``parse`` reads)."""

    method: str
    request: Any
    parse: Callable[[Any], T]
    timeout_s: float | None
    """The whole call's deadline budget, retries included (None: no deadline)."""


class Calls:
    """Builds the ``Call`` for each client method; holds no connection and does no I/O."""

    def __init__(self, default_timeout_s: float | None, max_message_bytes: int):
        self._default_timeout_s = default_timeout_s
        self._limits = RequestLimits(max_rank=64, max_elements=max_message_bytes,
                                     max_bytes_element=max_message_bytes)

    def _timeout(self, timeout_s: float | None) -> float | None:
        if timeout_s is None:
            return self._default_timeout_s
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        return timeout_s

    # health and metadata ---------------------------------------------------------------------

    def server_live(self, timeout_s: float | None = None) -> Call[bool]:
        return Call("ServerLive", pb.ServerLiveRequest(), lambda r: bool(r.live), self._timeout(timeout_s))

    def server_ready(self, timeout_s: float | None = None) -> Call[bool]:
        return Call("ServerReady", pb.ServerReadyRequest(), lambda r: bool(r.ready), self._timeout(timeout_s))

    def model_ready(self, model: str, version: str = "", timeout_s: float | None = None) -> Call[bool]:
        return Call("ModelReady", pb.ModelReadyRequest(name=model, version=version), lambda r: bool(r.ready),
                    self._timeout(timeout_s))

    def server_metadata(self, timeout_s: float | None = None) -> Call[ServerMetadata]:
        return Call("ServerMetadata", pb.ServerMetadataRequest(),
                    lambda r: ServerMetadata(r.name, r.version, tuple(r.extensions)), self._timeout(timeout_s))

    def model_metadata(self, model: str, version: str = "", timeout_s: float | None = None) -> Call[ModelMetadata]:
        return Call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version),
                    codec.model_metadata_from_proto, self._timeout(timeout_s))

    # inference -------------------------------------------------------------------------------

    def _parse_infer(self, response: pb.ModelInferResponse) -> InferResult:
        try:
            decoded = codec.response_from_proto(response, self._limits)
        except InferenceError as exc:
            raise InternalError(f"the server sent a malformed response: {exc.message}") from exc
        return InferResult.from_response(decoded)

    def infer(
        self,
        model: str,
        inputs: Mapping[str, InputValue],
        *,
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
        version: str = "",
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> Call[InferResult]:
        if isinstance(outputs, str):
            raise TypeError("outputs is a list of output names, not a single string")
        request = InferRequest(
            model_name=model,
            inputs=tensors_from_inputs(inputs),
            model_version=version,
            id=request_id,
            parameters=dict(parameters or {}),
            outputs=[RequestedOutput(name) for name in outputs or ()],
        )
        return Call("ModelInfer", codec.request_to_proto(request), self._parse_infer, self._timeout(timeout_s))

    def generate(
        self,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        *,
        parameters: Mapping[str, ParameterValue] | None = None,
        version: str = "",
        timeout_s: float | None = None,
    ) -> Call[GenerationChunk]:
        """A token stream (``ModelStreamInfer``, one request): ``parse`` turns each stream message
        into a ``GenerationChunk`` (or raises the error it reports)."""
        return Call("ModelStreamInfer", generation_request(model, prompt, sampling, parameters, version),
                    chunk_from_message, self._timeout(timeout_s))

    def classify(
        self,
        images,
        *,
        top_k: int = 5,
        model: str = IMAGE_MODEL,
        parameters: Mapping[str, ParameterValue] | None = None,
        timeout_s: float | None = None,
    ) -> Call[ClassifyResult]:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise TypeError(f"top_k must be a whole number >= 1, got {top_k!r}")
        tensor = image_tensor(images, IMAGE_INPUT)
        request = InferRequest(model_name=model, inputs=[tensor], parameters=dict(parameters or {}),
                               outputs=[RequestedOutput(IMAGE_OUTPUT, {"classification": top_k})])
        count = tensor.shape[0]
        return Call("ModelInfer", codec.request_to_proto(request),
                    lambda response: ClassifyResult.from_infer(self._parse_infer(response), count, IMAGE_OUTPUT),
                    self._timeout(timeout_s))

    def embed(
        self,
        texts: Sequence[str],
        *,
        model: str = REFERENCE_MODEL,
        parameters: Mapping[str, ParameterValue] | None = None,
        timeout_s: float | None = None,
    ) -> Call[EmbedResult]:
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts is a sequence of strings; wrap a single text in a list")
        texts = list(texts)
        call = self.infer(model, {EMBED_INPUT: texts}, outputs=[EMBED_OUTPUT], parameters=parameters,
                          timeout_s=timeout_s)
        count = len(texts)
        return Call(call.method, call.request,
                    lambda response: EmbedResult.from_infer(self._parse_infer(response), count, EMBED_OUTPUT),
                    call.timeout_s)
