"""The blocking client: a plain ``grpc`` channel, thread-safe, no event loop.

Contract: every method makes one logical call through ``Client._run``: attempts share the call's
deadline, UNAVAILABLE is retried per the ``RetryPolicy``, and any gRPC failure surfaces as a typed
``edgecloud.errors.InferenceError`` raised from the ``grpc.RpcError``. One ``Client`` may be shared
by threads (gRPC channels are thread-safe; the client holds no per-call state).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from edgecloud.errors import InferenceError
from edgecloud.types import ModelMetadata, ParameterValue, ServerMetadata
from gateway.client.calls import IMAGE_MODEL, REFERENCE_MODEL, Call, Calls
from gateway.client.generation import GenerationChunk, chat_prompt
from gateway.client.inputs import InputValue
from gateway.client.results import ClassifyResult, EmbedResult, InferResult
from gateway.client.retry import DEFAULT_RETRY, Attempts, RetryPolicy
from edgecloud.rpc_errors import translate_rpc_errors
from gateway.client.settings import DEFAULT_MAX_MESSAGE_BYTES, ClientSettings, MetadataArg
from gateway.client.tls import TlsOptions
from protos import inference_pb2_grpc as pb_grpc

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """Blocking Open Inference Protocol client for the edgecloud gateway (or any OIP server).

    ``address`` is ``host:port``. ``timeout_s`` is the default deadline of each call, retries
    included (None: no deadline). ``api_key`` is sent as ``authorization: Bearer <key>``;
    ``metadata`` is sent with every call. ``sleep`` and ``clock`` are injected by tests.
    Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        address: str,
        *,
        tls: TlsOptions | None = None,
        timeout_s: float | None = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        api_key: str | None = None,
        metadata: MetadataArg = (),
        keepalive_time_s: float | None = 30.0,
        keepalive_timeout_s: float = 10.0,
        channel_options: Sequence[tuple[str, Any]] = (),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = ClientSettings.build(
            address, tls=tls, timeout_s=timeout_s, retry=retry, max_message_bytes=max_message_bytes,
            api_key=api_key, metadata=metadata, keepalive_time_s=keepalive_time_s,
            keepalive_timeout_s=keepalive_timeout_s, extra_channel_options=channel_options,
        )
        self._calls = Calls(self.settings.timeout_s, self.settings.max_message_bytes)
        self._sleep = sleep
        self._clock = clock
        if self.settings.credentials is None:
            self._channel = grpc.insecure_channel(address, options=self.settings.options)
        else:
            self._channel = grpc.secure_channel(address, self.settings.credentials, options=self.settings.options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._closed = False

    # lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled. Idempotent."""
        self._closed = True
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the call loop -----------------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        if self._closed:
            raise RuntimeError("this Client is closed")
        rpc = getattr(self._stub, call.method)
        attempts = Attempts(self.settings.retry, call.timeout_s, self._clock)
        while True:
            timeout = attempts.next_timeout()
            try:
                with translate_rpc_errors():
                    response = rpc(call.request, timeout=timeout, metadata=self.settings.metadata)
            except InferenceError as exc:
                delay = attempts.retry_delay(exc)
                if delay is None:
                    raise
                self._sleep(delay)
                continue
            return call.parse(response)

    # the protocol ------------------------------------------------------------------------------

    def server_live(self, *, timeout_s: float | None = None) -> bool:
        """Whether the server says it is live; ``Unavailable`` when it cannot be reached."""
        return self._run(self._calls.server_live(timeout_s))

    def server_ready(self, *, timeout_s: float | None = None) -> bool:
        """Whether the server says it is ready to infer."""
        return self._run(self._calls.server_ready(timeout_s))

    def model_ready(self, model: str, version: str = "", *, timeout_s: float | None = None) -> bool:
        """Whether ``model`` (at ``version``, "" for the default) is ready; ``NotFound`` when unknown."""
        return self._run(self._calls.model_ready(model, version, timeout_s))

    def server_metadata(self, *, timeout_s: float | None = None) -> ServerMetadata:
        """The server's name, version and protocol extensions."""
        return self._run(self._calls.server_metadata(timeout_s))

    def model_metadata(self, model: str, version: str = "", *, timeout_s: float | None = None) -> ModelMetadata:
        """The model's inputs and outputs (-1 marks a variable dimension); ``NotFound`` when unknown."""
        return self._run(self._calls.model_metadata(model, version, timeout_s))

    def infer(
        self,
        model: str,
        inputs: Mapping[str, InputValue],
        *,
        outputs: list[str] | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
        version: str = "",
        request_id: str = "",
        timeout_s: float | None = None,
    ) -> InferResult:
        """Run ``model`` on ``inputs`` (numpy arrays, or lists of str/bytes for BYTES inputs).

        ``outputs`` names the outputs wanted (all when None); ``parameters`` are request
        parameters, passed through to the server. Raises ``TypeError`` for an
        input it cannot encode and a typed ``InferenceError`` for what the server rejects.
        """
        return self._run(self._calls.infer(model, inputs, outputs=outputs, parameters=parameters, version=version,
                                           request_id=request_id, timeout_s=timeout_s))

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
        version: str = "",
        timeout_s: float | None = None,
    ) -> Iterator[GenerationChunk]:
        """Stream a generation from ``prompt`` (``ModelStreamInfer``): one ``GenerationChunk`` per
        chunk the server sends, the last ``final`` with the usage and where it was served. Not
        retried (the gateway fails over mid-stream itself); leaving the loop early cancels the
        call, which stops the generation upstream."""
        sampling = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k,
                    "seed": seed, "stop": stop}
        stream = self._calls.generate(model, prompt, sampling, parameters=parameters, version=version,
                                      timeout_s=timeout_s)
        call = self._stub.ModelStreamInfer(iter([stream.request]), timeout=stream.timeout_s,
                                           metadata=self.settings.metadata)
        try:
            with translate_rpc_errors():
                for message in call:
                    chunk = stream.parse(message)
                    yield chunk
                    if chunk.final:
                        return
        finally:
            call.cancel()

    def chat(self, model: str, messages: Sequence[Mapping[str, str]], **options) -> Iterator[GenerationChunk]:
        """``generate`` on ``messages`` ([{"role", "content"}]) rendered with the model's chat
        template (from its metadata); the same options."""
        prompt = chat_prompt(self.model_metadata(model, options.get("version", "")), messages)
        return self.generate(model, prompt, **options)

    def classify(
        self,
        images,
        *,
        top_k: int = 5,
        model: str = IMAGE_MODEL,
        timeout_s: float | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
    ) -> ClassifyResult:
        """Classify ``images`` (file paths, encoded JPEG / PNG / WebP bytes, or UINT8 [224, 224, 3]
        arrays; one kind per call): ``result.classes[i]`` are image i's ``top_k`` classes, best first,
        and ``result.served_by`` / ``route_reason`` say where and why it was answered."""
        return self._run(self._calls.classify(images, top_k=top_k, model=model, parameters=parameters,
                                            timeout_s=timeout_s))

    def embed(
        self,
        texts: Sequence[str],
        *,
        model: str = REFERENCE_MODEL,
        timeout_s: float | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
    ) -> EmbedResult:
        """Embed ``texts`` with the reference model: ``result.embeddings`` is [len(texts), 384] FP32."""
        return self._run(self._calls.embed(texts, model=model, parameters=parameters, timeout_s=timeout_s))
