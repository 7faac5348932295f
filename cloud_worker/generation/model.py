"""``TorchGenerativeModel``: a Llama checkpoint served by continuous batching.

Contract: ``load()`` reads the checkpoint (weights, ``tokenizer.json``, end-of-sequence ids) off the
event loop, allocates the KV cache for ``settings.max_batch_size`` slots of
``settings.context_length`` tokens, starts the batcher's thread and warms up with one short
generation; only then is the model ready. After every step the heap trimmer hears that the process
computed (``HeapTrimmer.after_compute``), so an idle worker's heap goes back to the OS.
``generate(request)`` tokenizes the prompt exactly as given (no special tokens added: chat
templates are the caller's), submits it, and yields a ``Chunk`` per non-empty text delta, then a
final ``Chunk`` with the ``Usage`` (``stop`` or ``length``). Closing the iterator (or cancelling the
task consuming it) drops the request at the batcher's next step and frees its slot. ``unload()`` stops the batcher (waiting and running
generations fail with ``Unavailable``) and frees the weights and cache. ``status`` reports slots in
use and the queue length.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer

from cloud_worker.generation.llama import LlamaModel
from cloud_worker.generation.scheduler import BatcherStatus, ContinuousBatcher
from cloud_worker.generation.settings import GenerationSettings
from cloud_worker.metrics import GenerationMetrics, Outcome, WorkerMetrics
from edgecloud.allocator import heap_trimmer
from edgecloud.errors import ErrorKind, FailedPrecondition, InferenceError
from edgecloud.generation import Chunk, GenerateRequest, GenerativeModel, SamplingParams, chat_template_of

__all__ = ["TorchGenerativeModel", "eos_token_ids"]

log = logging.getLogger(__name__)

INLINE_TOKENIZE_CHARS = 8192
"""Prompts up to this long are tokenized on the event loop (well under a millisecond); longer
ones on a worker thread."""

WARM_UP_PROMPT = "Hello"


def eos_token_ids(checkpoint_dir: Path, tokenizer: Tokenizer) -> frozenset[int]:
    """Every end-of-sequence id the checkpoint names: ``eos_token_id`` of ``config.json`` and
    ``generation_config.json`` (an id or a list), and ``tokenizer_config.json``'s ``eos_token``."""
    ids: set[int] = set()
    for name in ("config.json", "generation_config.json"):
        path = checkpoint_dir / name
        if path.exists():
            value = json.loads(path.read_text()).get("eos_token_id")
            ids.update([value] if isinstance(value, int) else value or [])
    path = checkpoint_dir / "tokenizer_config.json"
    if path.exists():
        token = json.loads(path.read_text()).get("eos_token")
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            ids.add(tokenizer.token_to_id(token))
    return frozenset(ids)


def _computed_on(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """The batcher's ``after_step``: tell the heap trimmer, on ``loop``, that a step ran (a worker
    idle for a second after its last generation hands the heap its steps grew back to the OS, as
    ``BatchedModel`` does after its batches)."""

    def after_step() -> None:
        try:
            loop.call_soon_threadsafe(heap_trimmer.after_compute)
        except RuntimeError:  # the loop has closed: nobody is left to trim for
            pass

    return after_step


class TorchGenerativeModel(GenerativeModel):
    def __init__(self, checkpoint_dir: Path, *, name: str, version: str = "1", settings: GenerationSettings,
                 device: torch.device, dtype: torch.dtype, variant: str,
                 clock: Callable[[], float] = time.monotonic):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.metadata = GenerativeModel.describe(name, version, chat_template_of(self.checkpoint_dir))
        self.settings = settings
        self.limits = settings.limits
        self.variant = variant
        self.device = device
        self.dtype = dtype
        self._clock = clock
        self._tokenizer: Tokenizer | None = None
        self._batcher: ContinuousBatcher | None = None
        self.eos_ids: frozenset[int] = frozenset()

    def ready(self) -> bool:
        return self._batcher is not None

    @property
    def status(self) -> BatcherStatus:
        batcher = self._batcher
        return batcher.status if batcher is not None else BatcherStatus(self.settings.max_batch_size, 0, 0)

    async def load(self) -> None:
        if self._batcher is not None:
            return
        engine, tokenizer, eos_ids = await asyncio.to_thread(self._read_checkpoint)
        if not eos_ids:
            log.warning("model %r names no end-of-sequence token: generations end on length or stop strings",
                        self.name)
        batcher = ContinuousBatcher(
            engine,
            decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
            eos_ids=eos_ids,
            max_queue_size=self.settings.max_queue_size,
            max_prefill_tokens=self.settings.max_prefill_tokens,
            overload_retry_after_s=self.settings.overload_retry_after_s,
            clock=self._clock,
            name=self.name,
            after_step=_computed_on(asyncio.get_running_loop()),
        )
        batcher.start()
        try:
            warm_up = tokenizer.encode(WARM_UP_PROMPT, add_special_tokens=False).ids
            async for _ in batcher.submit(warm_up, SamplingParams(max_tokens=2, temperature=0.0)):
                pass
        except BaseException:
            await asyncio.to_thread(batcher.stop)
            raise
        self._tokenizer, self.eos_ids, self._batcher = tokenizer, eos_ids, batcher

    async def unload(self) -> None:
        batcher, self._batcher = self._batcher, None
        self._tokenizer = None
        if batcher is not None:
            await asyncio.to_thread(batcher.stop)

    def attach_metrics(self, metrics: WorkerMetrics) -> None:
        """Record time to first token, tokens, outcomes, and (at scrape time) slots and queue."""
        self._metrics = metrics.for_generation(self.name, lambda: (self.status.active, self.status.queued))

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Chunk]:
        batcher, tokenizer = self._batcher, self._tokenizer
        if batcher is None or tokenizer is None:
            raise FailedPrecondition(f"model {self.name!r} is not loaded")
        metrics, started = self._metrics, self._clock()
        if len(request.prompt) <= INLINE_TOKENIZE_CHARS:
            ids = tokenizer.encode(request.prompt, add_special_tokens=False).ids
        else:
            ids = (await asyncio.to_thread(tokenizer.encode, request.prompt, add_special_tokens=False)).ids
        outcome = Outcome.CANCELLED  # unless it ends otherwise: the consumer left
        try:
            generation = batcher.submit(ids, request.sampling, deadline=request.deadline)
            try:
                first = True
                async for chunk in generation:
                    if first and metrics is not None:
                        metrics.time_to_first_token.observe(self._clock() - started)
                    first = False
                    if chunk.final:
                        outcome = Outcome.OK
                        if metrics is not None:
                            metrics.generated_tokens.inc(chunk.usage.completion_tokens)
                    if chunk.text or chunk.final:
                        yield chunk
            finally:
                generation.cancel()
        except InferenceError as exc:
            outcome = _OUTCOMES.get(exc.kind, Outcome.ERROR)
            raise
        finally:
            if metrics is not None:
                metrics.outcome(outcome)

    _metrics: GenerationMetrics | None = None

    def _read_checkpoint(self) -> tuple[LlamaModel, Tokenizer, frozenset[int]]:
        tokenizer = Tokenizer.from_file(str(self.checkpoint_dir / "tokenizer.json"))
        engine = LlamaModel.load(self.checkpoint_dir, max_batch_size=self.settings.max_batch_size,
                                 context_length=self.settings.context_length, device=self.device, dtype=self.dtype)
        return engine, tokenizer, eos_token_ids(self.checkpoint_dir, tokenizer)


_OUTCOMES = {
    ErrorKind.OVERLOADED: Outcome.QUEUE_FULL,
    ErrorKind.DEADLINE_EXCEEDED: Outcome.DEADLINE_EXCEEDED,
    ErrorKind.UNAVAILABLE: Outcome.UNAVAILABLE,
    ErrorKind.CANCELLED: Outcome.CANCELLED,
}
