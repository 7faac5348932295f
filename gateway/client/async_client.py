"""The asyncio client: a ``grpc.aio`` channel, with the same API as ``Client``.

Contract: every method makes one logical call through ``AsyncClient._run``: attempts share the
call's deadline, UNAVAILABLE is retried per the ``RetryPolicy`` (waiting with ``asyncio.sleep``),
and any gRPC failure surfaces as a typed ``edgecloud.errors.InferenceError`` raised from the
``grpc.aio.AioRpcError``. The channel opens on first use and belongs to that event loop: use and
close the client there (any number of tasks on it may call at once); another loop gets a
``RuntimeError``. Cancelling a call's task cancels its RPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from edgecloud.errors import InferenceError
from edgecloud.grpc_calls import unary
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

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """asyncio Open Inference Protocol client for the edgecloud gateway (or any OIP server).

    ``address`` is ``host:port``. ``timeout_s`` is the default deadline of each call, retries
    included (None: no deadline). ``api_key`` is sent as ``authorization: Bearer <key>``;
    ``metadata`` is sent with every call. ``sleep`` and ``clock`` are injected by tests.
    Use as an async context manager, or ``await close()``.
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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
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
        # The channel belongs to the event loop that first uses it, so the client can be built
        # in synchronous setup code; it is opened on first use (or ``async with``).
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GRPCInferenceServiceStub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # lifecycle ---------------------------------------------------------------------------------

    def _stub_on_this_loop(self) -> pb_grpc.GRPCInferenceServiceStub:
        if self._closed:
            raise RuntimeError("this AsyncClient is closed")
        loop = asyncio.get_running_loop()
        if self._stub is None:
            if self.settings.credentials is None:
                self._channel = grpc.aio.insecure_channel(self.settings.address, options=self.settings.options)
            else:
                self._channel = grpc.aio.secure_channel(self.settings.address, self.settings.credentials,
                                                        options=self.settings.options)
            self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError("this AsyncClient is bound to another event loop; use one client per loop")
        return self._stub

    async def close(self, grace: float | None = None) -> None:
        """Close the channel; calls in flight get ``grace`` seconds, then are cancelled. Idempotent."""
        self._closed = True
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close(grace)

    async def __aenter__(self) -> AsyncClient:
        self._stub_on_this_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # the call loop -----------------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        rpc = getattr(self._stub_on_this_loop(), call.method)
        attempts = Attempts(self.settings.retry, call.timeout_s, self._clock)
        while True:
            timeout = attempts.next_timeout()
            try:
                with translate_rpc_errors():
                    response = await unary(rpc(call.request, timeout=timeout, metadata=self.settings.metadata))
            except InferenceError as exc:
                delay = attempts.retry_delay(exc)
                if delay is None:
                    raise
                await self._sleep(delay)
                continue
            return call.parse(response)

    # the protocol ------------------------------------------------------------------------------

    async def server_live(self, *, timeout_s: float | None = None) -> bool:
        """Whether the server says it is live; ``Unavailable`` when it cannot be reached."""
        return await self._run(self._calls.server_live(timeout_s))

    async def server_ready(self, *, timeout_s: float | None = None) -> bool:
        """Whether the server says it is ready to infer."""
        return await self._run(self._calls.server_ready(timeout_s))

    async def model_ready(self, model: str, version: str = "", *, timeout_s: float | None = None) -> bool:
        """Whether ``model`` (at ``version``, "" for the default) is ready; ``NotFound`` when unknown."""
        return await self._run(self._calls.model_ready(model, version, timeout_s))

    async def server_metadata(self, *, timeout_s: float | None = None) -> ServerMetadata:
        """The server's name, version and protocol extensions."""
        return await self._run(self._calls.server_metadata(timeout_s))

    async def model_metadata(self, model: str, version: str = "", *, timeout_s: float | None = None) -> ModelMetadata:
        """The model's inputs and outputs (-1 marks a variable dimension); ``NotFound`` when unknown."""
        return await self._run(self._calls.model_metadata(model, version, timeout_s))

    async def infer(
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
        return await self._run(self._calls.infer(model, inputs, outputs=outputs, parameters=parameters, version=version,
                                           request_id=request_id, timeout_s=timeout_s))

    async def generate(
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
    ) -> AsyncIterator[GenerationChunk]:
        """Stream a generation from ``prompt`` (see ``Client.generate``); leaving the loop early
        (or cancelling the task) cancels the call and stops the generation upstream."""
        sampling = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k,
                    "seed": seed, "stop": stop}
        stream = self._calls.generate(model, prompt, sampling, parameters=parameters, version=version,
                                      timeout_s=timeout_s)
        call = self._stub_on_this_loop().ModelStreamInfer(iter([stream.request]), timeout=stream.timeout_s,
                                                          metadata=self.settings.metadata)
        try:
            with translate_rpc_errors():
                async for message in call:
                    chunk = stream.parse(message)
                    yield chunk
                    if chunk.final:
                        return
        finally:
            call.cancel()

    async def chat(self, model: str, messages: Sequence[Mapping[str, str]], **options) -> AsyncIterator[GenerationChunk]:
        """``generate`` on ``messages`` rendered with the model's chat template (from its metadata)."""
        prompt = chat_prompt(await self.model_metadata(model, options.get("version", "")), messages)
        async for chunk in self.generate(model, prompt, **options):
            yield chunk

    async def classify(
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
        return await self._run(self._calls.classify(images, top_k=top_k, model=model, parameters=parameters,
                                            timeout_s=timeout_s))

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str = REFERENCE_MODEL,
        timeout_s: float | None = None,
        parameters: Mapping[str, ParameterValue] | None = None,
    ) -> EmbedResult:
        """Embed ``texts`` with the reference model: ``result.embeddings`` is [len(texts), 384] FP32."""
        return await self._run(self._calls.embed(texts, model=model, parameters=parameters, timeout_s=timeout_s))
