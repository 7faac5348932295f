"""Text generation on the edge with onnxruntime-genai, token by token.

Contract: ``GenAIModel`` serves one onnxruntime-genai directory (an INT4/INT8 CPU model from
``edgecloud model build --model smollm2``) under the ``edgecloud.generation`` contract.

- ``generate_blocking(request)`` is a plain iterator of ``Chunk``s computed in the caller's thread
  (the in-process sync API); closing it (``break``) stops generation before the next token.
- ``generate(request)`` is the async iterator the servers and the async API use: the token loop
  runs on the model's own threads (``concurrency`` generations at once), chunks cross to the event
  loop as they come, and closing the iterator or cancelling its task stops the loop at the next
  token and frees its thread.
- The prompt is tokenized as given (no special tokens added); one whose tokens leave no room for
  a completion in ``context_length`` is refused (``InvalidArgument`` on ``inputs[text_input]``)
  before anything is generated. A request whose deadline passes stops with ``DeadlineExceeded``.
- ``render_chat(messages)`` renders chat messages with the model's own chat template.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecloud.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from edgecloud.generation import (
    TEXT_INPUT,
    Chunk,
    GenerateRequest,
    GenerationLimits,
    GenerativeModel,
    SamplingParams,
    TextStream,
    Usage,
    chat_template_of,
)
from edgecloud.model import BlockingRunner

__all__ = ["GenAIModel", "GenAISettings"]


@dataclass(frozen=True, slots=True)
class GenAISettings:
    concurrency: int = 1
    """Generations computed at once (each on its own thread, sharing the weights)."""
    max_tokens: int = 512
    """Most completion tokens one request may ask for."""
    default_max_tokens: int = 16
    """Completion tokens when a request names none (Triton's vLLM default)."""
    context_length: int | None = None
    """Prompt plus completion tokens; default: the model's own context (genai_config.json)."""
    intra_op_threads: int = 0
    """onnxruntime threads per generation; 0 = onnxruntime's default (one per core)."""


def _context_length(model_dir: Path) -> int:
    config = json.loads((model_dir / "genai_config.json").read_text(encoding="utf-8"))
    return int(config["model"]["context_length"])


class GenAIModel(GenerativeModel):
    def __init__(self, model_dir: str | Path, *, name: str, version: str = "1", variant: str = "int4",
                 settings: GenAISettings = GenAISettings()):
        self.model_dir = Path(model_dir)
        self.variant = variant
        self.settings = settings
        context = settings.context_length or _context_length(self.model_dir)
        self.limits = GenerationLimits(context_length=context, max_tokens=min(settings.max_tokens, context - 1),
                                       default_max_tokens=min(settings.default_max_tokens, settings.max_tokens))
        self.metadata = GenerativeModel.describe(name, version, chat_template_of(self.model_dir))
        self._model = None
        self._tokenizer = None
        self._runner: BlockingRunner | None = BlockingRunner(settings.concurrency, name=f"genai-{name}")
        self._running = 0
        self._running_lock = threading.Lock()

    @property
    def running(self) -> int:
        """Token loops on the model's threads right now (for metrics and tests)."""
        return self._running

    # lifecycle -------------------------------------------------------------------------------

    def ready(self) -> bool:
        return self._model is not None

    def load_blocking(self) -> None:
        import onnxruntime_genai as og

        config = og.Config(str(self.model_dir))
        if self.settings.intra_op_threads:
            threads = {"intra_op_num_threads": self.settings.intra_op_threads}
            config.overlay(json.dumps({"model": {"decoder": {"session_options": threads}}}))
        self._model = og.Model(config)
        self._tokenizer = og.Tokenizer(self._model)
        self._eos = set(int(t) for t in self._tokenizer.eos_token_ids)
        for _ in self.generate_blocking(GenerateRequest("Hello", SamplingParams(max_tokens=2, temperature=0.0))):
            pass

    async def load(self) -> None:
        if self._runner is None:
            raise FailedPrecondition(f"model {self.name!r} was unloaded")
        await self._runner.run(self.load_blocking)

    def unload_blocking(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self._model = self._tokenizer = None

    async def unload(self) -> None:
        await asyncio.to_thread(self.unload_blocking)

    # chat ------------------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[dict]) -> str:
        """The prompt for ``messages`` ([{"role": ..., "content": ...}]) in the model's chat
        template, ending where the assistant's answer starts."""
        tokenizer = self._loaded()[1]
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str) \
                    or message.get("role") not in ("system", "user", "assistant"):
                raise InvalidArgument("each message needs a role (system, user, assistant) and a content string",
                                      field=f"messages[{index}]")
        if not messages:
            raise InvalidArgument("is empty", field="messages")
        return tokenizer.apply_chat_template(json.dumps(list(messages)), add_generation_prompt=True)

    # generation ------------------------------------------------------------------------------

    def _loaded(self):
        if self._model is None:
            raise FailedPrecondition(f"model {self.name!r} is not loaded")
        return self._model, self._tokenizer

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._loaded()[1].encode(text), dtype=np.int32)

    def generate_blocking(self, request: GenerateRequest) -> Iterator[Chunk]:
        """Chunks for ``request``, computed in the calling thread as it iterates."""
        import onnxruntime_genai as og

        model, tokenizer = self._loaded()
        prompt = self.encode(request.prompt)
        room = self.limits.context_length - len(prompt)
        if room < 1:
            raise InvalidArgument(f"the prompt has {len(prompt)} tokens; the context holds "
                                  f"{self.limits.context_length} (prompt and completion)",
                                  field=f"inputs[{TEXT_INPUT}]")
        sampling = request.sampling
        budget = min(sampling.max_tokens, room)
        params = og.GeneratorParams(model)
        options = {"max_length": len(prompt) + budget, "do_sample": not sampling.greedy}
        if not sampling.greedy:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or 0)
            if sampling.seed is not None:
                options["random_seed"] = sampling.seed % 2**31
        params.set_search_options(**options)
        generator = og.Generator(model, params)
        text = TextStream(lambda ids: tokenizer.decode(np.asarray(ids, dtype=np.int32)), sampling.stop)
        produced, reason = 0, "length"
        try:
            generator.append_tokens(prompt)
            while produced < budget:
                if request.deadline is not None and time.monotonic() >= request.deadline:
                    raise DeadlineExceeded("the request's deadline passed during generation")
                if generator.is_done():
                    reason = "stop"
                    break
                generator.generate_next_token()
                token = int(generator.get_next_tokens()[0])
                produced += 1
                if token in self._eos:
                    reason = "stop"
                    break
                delta = text.push(token)
                if text.stopped:
                    reason = "stop"
                    if delta:
                        yield Chunk(delta, tokens=produced)
                    break
                if delta:
                    yield Chunk(delta, tokens=produced)
            yield Chunk(text.finish(), Usage(len(prompt), produced, reason))
        finally:
            del generator

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        runner = self._runner
        if runner is None or self._model is None:
            raise FailedPrecondition(f"model {self.name!r} is not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            with self._running_lock:
                self._running += 1
            try:
                for chunk in self.generate_blocking(request):
                    if stop.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # delivered to the consumer, raised there
                if not stop.is_set():
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                with self._running_lock:
                    self._running -= 1

        work = asyncio.ensure_future(runner.run(produce))
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.final:
                    return
        finally:
            stop.set()  # the token loop ends before its next token; its thread is free again
            if not work.done():
                work.cancel()
