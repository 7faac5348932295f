"""``EdgeAgent``: the edge runtime embedded in a device app's own process.

Contract:
- Sync use (no event loop needed)::

      with EdgeAgent.from_model_dir("models/all-MiniLM-L6-v2") as agent:
          vectors = agent.embed(["hello", "world"])      # np.ndarray [2, 384], L2-normalised
          response = agent.infer_sync(request)            # InferRequest -> InferResponse

- Asyncio use::

      async with EdgeAgent.from_model_dir(path) as agent:
          vectors = await agent.aembed(["hello"])
          response = await agent.infer(request)           # InferRequest -> InferResponse

- Generation (a model directory built with ``edgecloud model build --model smollm2``)::

      with EdgeAgent.from_model_dir("models/smollm2-135m-instruct") as agent:
          for chunk in agent.generate(messages=[{"role": "user", "content": "Hi!"}], max_tokens=64):
              print(chunk.text, end="")          # the last chunk has chunk.usage (tokens, finish reason)
      async for chunk in agent.agenerate("Once upon a time", temperature=0.7, seed=1): ...

  Breaking out of either loop (or cancelling the task iterating the async one) stops generation
  before the next token. ``messages`` are rendered with the model's own chat template; a ``prompt``
  is used as given. Sampling keywords: max_tokens, temperature, top_p, top_k, seed, stop.

Requests are validated exactly as the gRPC server validates them (same ``Dataplane``); bad input
raises the typed ``edgecloud.errors`` exceptions without running the model. Blocking compute in
the async API runs on the model's own threads, never on the caller's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import numpy as np

from edgecloud.codec import bytes_array
from edgecloud.admission import Admission
from edgecloud.dataplane import Dataplane
from edgecloud.errors import InvalidArgument, NotFound
from edgecloud.generation import Chunk, GenerateRequest, parse_sampling
from edgecloud.model import ModelRepository
from edgecloud.image_model import MODEL_NAME as IMAGE_MODEL
from edgecloud.image_model import OUTPUT_NAME as IMAGE_OUTPUT
from edgecloud.image_model import image_tensor
from edgecloud.reference_model import INPUT_NAME, MODEL_NAME, OUTPUT_NAME
from edgecloud.types import InferRequest, InferResponse, ServerMetadata, Tensor
from edge_agent.config import EdgeConfig, ModelSettings
from edge_agent.generation import GenAIModel
from edge_agent.lone import LoneRequests
from edge_agent.model_dir import load_model_dir
from edge_agent.models import OnnxModel, model_from_dir
from edge_agent.onnx_session import SessionSettings
from edge_agent.threads import resolve as resolve_threads
from edge_agent.threads import resolve_lone

SERVER_NAME = "edgecloud-edge"


def build_models(config: EdgeConfig) -> list[OnnxModel | GenAIModel]:
    """The configured models, constructed but not loaded."""
    models = []
    for entry in config.models:
        spec = load_model_dir(entry.path, entry.variant)
        concurrency, intra_op_threads = resolve_threads(spec.task, entry.concurrency, entry.intra_op_threads)
        settings = SessionSettings(intra_op_threads=intra_op_threads, inter_op_threads=entry.inter_op_threads,
                                   allow_spinning=entry.allow_spinning)
        lone_threads, lone_auto = resolve_lone(spec.task, entry.lone_request_threads, intra_op_threads)
        models.append(model_from_dir(spec, entry.variant, settings, concurrency, entry.chunk_size,
                                     entry.max_tokens, LoneRequests(lone_threads, lone_auto, spec.name)))
    return models


class EdgeAgent:
    def __init__(self, config: EdgeConfig | None = None):
        from edgecloud import __version__

        self.config = config or EdgeConfig()
        self.models = build_models(self.config)
        server = self.config.server
        self.dataplane = Dataplane(
            ModelRepository(self.models), ServerMetadata(SERVER_NAME, __version__), self.config.limits.to_limits(),
            Admission(server.max_concurrent_requests, server.overload_retry_after_ms / 1000.0),
        )
        self._loaded = False

    @classmethod
    def from_model_dir(cls, path: str | Path, *, variant: str | None = None, threads: int = 0,
                       concurrency: int = 0, lone_request_threads: int = 0) -> EdgeAgent:
        """An agent serving one model directory; ``threads``, ``concurrency`` and
        ``lone_request_threads`` 0 are derived from the usable cores, as the server's are
        (``edge_agent.threads``; ``ModelSettings``)."""
        entry = ModelSettings(path=Path(path), variant=variant, intra_op_threads=threads, concurrency=concurrency,
                              lone_request_threads=lone_request_threads)
        return cls(EdgeConfig(models=[entry]))

    # lifecycle -------------------------------------------------------------------------------

    def load(self) -> EdgeAgent:
        """Create sessions and warm up (blocking)."""
        if not self._loaded:
            for model in self.models:
                model.load_blocking()
            self._loaded = True
            self.dataplane.set_ready(True)
        return self

    async def aload(self) -> EdgeAgent:
        if not self._loaded:
            for model in self.models:
                await model.load()
            self._loaded = True
            self.dataplane.set_ready(True)
        return self

    def close(self) -> None:
        self.dataplane.set_ready(False)
        for model in self.models:
            model.unload_blocking()
        self._loaded = False

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> EdgeAgent:
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> EdgeAgent:
        return await self.aload()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # inference -------------------------------------------------------------------------------

    def _embedding_request(self, texts, model_name: str) -> InferRequest:
        if isinstance(texts, (str, bytes)):
            raise InvalidArgument("pass a list of texts, not a single string", field="texts")
        data = bytes_array(texts)
        return InferRequest(model_name=model_name, inputs=[Tensor(INPUT_NAME, "BYTES", data.shape, data)])

    def embed(self, texts: list[str], *, model_name: str = MODEL_NAME) -> np.ndarray:
        """Embeddings [N, D] for ``texts`` (blocking, in the caller's thread)."""
        response = self.infer_sync(self._embedding_request(texts, model_name))
        return response.output(OUTPUT_NAME).data

    async def aembed(self, texts: list[str], *, model_name: str = MODEL_NAME) -> np.ndarray:
        response = await self.infer(self._embedding_request(texts, model_name))
        return response.output(OUTPUT_NAME).data

    def classify(self, images, *, model_name: str = IMAGE_MODEL) -> np.ndarray:
        """Probabilities [N, classes] for ``images`` (file paths, encoded JPEG / PNG / WebP bytes, or
        UINT8 [224, 224, 3] arrays; one kind per call), blocking in the caller's thread; a bad image
        raises ``InvalidArgument`` naming it. ``labels(model_name)`` names the classes."""
        response = self.infer_sync(InferRequest(model_name=model_name, inputs=[image_tensor(images)]))
        return response.output(IMAGE_OUTPUT).data

    async def aclassify(self, images, *, model_name: str = IMAGE_MODEL) -> np.ndarray:
        response = await self.infer(InferRequest(model_name=model_name, inputs=[image_tensor(images)]))
        return response.output(IMAGE_OUTPUT).data

    def labels(self, model_name: str = IMAGE_MODEL) -> tuple[str, ...]:
        """A classifier's class names, by index."""
        model = self.dataplane.repository.get(model_name)
        labels = getattr(model, "labels", None)
        if labels is None:
            raise InvalidArgument("is not a classifier with labels", field="model_name")
        return tuple(labels)

    def infer_sync(self, request: InferRequest) -> InferResponse:
        self.load()
        model = self.dataplane.prepare(request)
        if not isinstance(model, OnnxModel):
            raise InvalidArgument("is a generative model: use generate() / agenerate()", field="model_name")
        return self.dataplane.finish(request, model.run_call(request), model)

    async def infer(self, request: InferRequest) -> InferResponse:
        """Run a request (validated as the servers validate it) off the event loop."""
        if not self._loaded:
            await self.aload()
        return await self.dataplane.infer(request)

    # generation ------------------------------------------------------------------------------

    def _generative(self, model_name: str | None) -> GenAIModel:
        models = [m for m in self.models if isinstance(m, GenAIModel)]
        if model_name is not None:
            models = [m for m in models if m.name == model_name]
        if not models:
            which = f"named {model_name!r} " if model_name else ""
            raise NotFound(f"this agent serves no generative model {which}".rstrip(), field="model_name")
        return models[0]

    def _generate_request(self, model: GenAIModel, prompt: str | None, messages: Sequence[dict] | None,
                          sampling: dict) -> GenerateRequest:
        if (prompt is None) == (messages is None):
            raise InvalidArgument("pass either a prompt or messages", field="prompt")
        if prompt is not None and (not isinstance(prompt, str) or not prompt):
            raise InvalidArgument("must be a non-empty string", field="prompt")
        text = prompt if prompt is not None else model.render_chat(messages)
        return GenerateRequest(text, parse_sampling(sampling, model.limits, "sampling"), stream=True,
                               model_name=model.name)

    def generate(self, prompt: str | None = None, *, messages: Sequence[dict] | None = None,
                 model_name: str | None = None, **sampling) -> Iterator[Chunk]:
        """Chunks of generated text, computed in the caller's thread as it iterates."""
        self.load()
        model = self._generative(model_name)
        return model.generate_blocking(self._generate_request(model, prompt, messages, sampling))

    async def agenerate(self, prompt: str | None = None, *, messages: Sequence[dict] | None = None,
                        model_name: str | None = None, **sampling) -> AsyncIterator[Chunk]:
        """Chunks of generated text, computed off the event loop."""
        await self.aload()
        model = self._generative(model_name)
        chunks = model.generate(self._generate_request(model, prompt, messages, sampling))
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()
