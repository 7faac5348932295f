"""Iteration-level (continuous) batching of text generations on one dedicated thread.

Contract of ``ContinuousBatcher`` (one per model):

- ``submit(prompt_tokens, sampling, deadline=...)`` is called on the event loop; it returns a
  ``Generation``, an async iterator of ``Chunk``s: one per token that produced text, and a last,
  final one with the ``Usage``. It raises at once, queueing nothing,
  * ``InvalidArgument`` (field ``inputs[text_input]``) for a prompt of no tokens or of more than
    ``context_length - 1`` tokens;
  * ``Overloaded`` (with ``retry_after_s``) when ``max_queue_size`` requests already wait;
  * ``DeadlineExceeded`` when ``deadline`` (a time on ``clock``) has passed;
  * ``Unavailable`` when the batcher is not running.
- One thread runs the step loop: drop cancelled and expired requests (an expired one gets
  ``DeadlineExceeded``), admit waiting requests (FIFO) into free slots and prefill them together
  (at most ``max_prefill_tokens`` padded prompt tokens per step, one request always), then decode
  one token for every running request. It sleeps on a condition while there is nothing to do.
- Each token goes through the request's ``TextStream`` (stop strings, incomplete UTF-8) and the
  text it releases is delivered with ``loop.call_soon_threadsafe``. A request finishes, and its
  slot is free for the next step, on an end-of-sequence id (``stop``), a stop string (``stop``),
  ``max_tokens`` (``length``) or when prompt plus completion fill the context (``length``).
  Completion tokens count the end-of-sequence token. A slot is released before the request's
  final chunk (or error) is delivered, so ``status`` seen by whoever got the end counts it free.
- ``after_step`` (when given) is called on the step thread after every step, failed ones too (the
  model uses it to tell the heap trimmer that the process computed); it must be cheap and
  thread-safe, and what it raises is logged, not passed on.
- ``Generation.cancel()`` (what closing the consumer does) drops the request at the next step.
- A step that raises fails the requests in it with ``InternalError``; the loop goes on serving.
- ``stop()`` ends the thread after its current step and fails every queued and running request
  with ``Unavailable``. It blocks: call it off the event loop.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from cloud_worker.generation.sampling import request_generator, sample
from edgecloud.errors import DeadlineExceeded, InferenceError, InternalError, InvalidArgument, Overloaded, Unavailable
from edgecloud.generation import Chunk, SamplingParams, TextStream, Usage

__all__ = ["BatcherStatus", "ContinuousBatcher", "Engine", "Generation"]

log = logging.getLogger(__name__)

PROMPT_FIELD = "inputs[text_input]"


class Engine(Protocol):
    """What the batcher drives: a model with ``max_batch_size`` cache slots (``LlamaModel``)."""

    max_batch_size: int
    context_length: int
    device: torch.device

    def prefill(self, slot_ids: Sequence[int], token_lists: Sequence[Sequence[int]]) -> torch.Tensor: ...

    def decode(self, slot_ids: Sequence[int], last_tokens: Sequence[int], positions: Sequence[int]) -> torch.Tensor: ...


@dataclass(frozen=True, slots=True)
class BatcherStatus:
    slots: int
    """Cache slots: the most requests that generate at once."""
    active: int
    """Requests holding a slot."""
    queued: int
    """Requests waiting for one."""

    @property
    def free(self) -> int:
        return self.slots - self.active


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class Generation:
    """The event loop's end of one request: iterate for its ``Chunk``s; ``cancel()`` to drop it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prompt_tokens: int, wake: Callable[[], None]):
        self.prompt_tokens = prompt_tokens
        self._loop = loop
        self._queue: asyncio.Queue[Chunk | InferenceError] = asyncio.Queue()
        self._wake = wake
        self._ended = False
        self.cancelled = False
        """Set on the loop, read by the batcher's thread at its next step."""

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> Chunk:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, InferenceError):
            self._ended = True
            raise item
        self._ended = item.final
        return item

    def cancel(self) -> None:
        """Drop the request (no-op once it ended); its slot is freed at the batcher's next step."""
        if not self._ended:
            self._ended = True
            self.cancelled = True
            self._wake()

    def _deliver(self, item: Chunk | InferenceError) -> bool:
        """From the batcher's thread; False when the loop is gone (the request is then dropped)."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
            return True
        except RuntimeError:  # the event loop was closed
            return False


@dataclass(slots=True, eq=False)
class _Request:
    prompt: list[int]
    sampling: SamplingParams
    deadline: float | None
    stream: TextStream
    generator: torch.Generator | None
    handle: Generation
    slot: int = -1
    generated: int = 0
    last_token: int = -1
    done: bool = field(default=False)

    @property
    def position(self) -> int:
        """Where ``last_token`` goes in the cache."""
        return len(self.prompt) + self.generated - 1


class ContinuousBatcher:
    def __init__(
        self,
        engine: Engine,
        *,
        decode: Callable[[Sequence[int]], str],
        eos_ids: Collection[int],
        max_queue_size: int = 256,
        max_prefill_tokens: int = 2048,
        overload_retry_after_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        name: str = "model",
        after_step: Callable[[], None] | None = None,
    ):
        if max_queue_size < 1 or max_prefill_tokens < 1:
            raise ValueError("max_queue_size and max_prefill_tokens must be >= 1")
        self.engine = engine
        self.max_batch_size = engine.max_batch_size
        self.context_length = engine.context_length
        self.max_queue_size = max_queue_size
        self.max_prefill_tokens = max_prefill_tokens
        self.overload_retry_after_s = overload_retry_after_s
        self.name = name
        self._decode_text = decode
        self._after_step = after_step
        self._eos = frozenset(eos_ids)
        self._clock = clock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        """Wakes the step thread: something was submitted, cancelled, or the batcher stops."""
        self._idle = threading.Condition(self._lock)
        """Wakes ``wait_idle``: nothing runs and nothing waits."""
        self._waiting: deque[_Request] = deque()
        self._active: dict[int, _Request] = {}
        self._free: list[int] = list(range(self.max_batch_size))  # a heap: lowest slot first
        self._state = _State.NEW
        self._thread: threading.Thread | None = None

    # -- the event loop's side ----------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._state is not _State.NEW:
                raise RuntimeError("a ContinuousBatcher starts once")
            self._state = _State.RUNNING
        self._thread = threading.Thread(target=self._run, name=f"generate-{self.name}", daemon=True)
        self._thread.start()

    def submit(self, prompt_tokens: Sequence[int], sampling: SamplingParams, *,
               deadline: float | None = None) -> Generation:
        loop = asyncio.get_running_loop()
        count = len(prompt_tokens)
        if count == 0:
            raise InvalidArgument("has no tokens", field=PROMPT_FIELD)
        if count > self.context_length - 1:
            raise InvalidArgument(f"is {count} tokens; the context holds {self.context_length}, so a prompt "
                                  f"may have at most {self.context_length - 1}", field=PROMPT_FIELD)
        handle = Generation(loop, count, self._wake)
        request = _Request(
            prompt=list(prompt_tokens),
            sampling=sampling,
            deadline=deadline,
            stream=TextStream(self._decode_text, sampling.stop),
            generator=request_generator(sampling, self.engine.device),
            handle=handle,
        )
        with self._lock:
            if self._state is not _State.RUNNING:
                raise Unavailable(f"model {self.name!r} is not serving")
            if deadline is not None and deadline <= self._clock():
                raise DeadlineExceeded("the deadline passed before generation started")
            if len(self._waiting) >= self.max_queue_size:
                raise Overloaded(f"model {self.name!r} has {len(self._waiting)} generations waiting",
                                 retry_after_s=self.overload_retry_after_s)
            self._waiting.append(request)
            self._work.notify()
        return handle

    @property
    def status(self) -> BatcherStatus:
        with self._lock:
            return BatcherStatus(self.max_batch_size, len(self._active), len(self._waiting))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request runs or waits (True), or ``timeout`` passes (False)."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._waiting and not self._active, timeout)

    def stop(self) -> None:
        with self._lock:
            if self._state is _State.STOPPED:
                return
            self._state = _State.STOPPED
            self._work.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        with self._lock:
            left = list(self._waiting) + list(self._active.values())
            self._waiting.clear()
            self._active.clear()
            self._free = list(range(self.max_batch_size))
            self._idle.notify_all()
        for request in left:
            request.handle._deliver(Unavailable(f"model {self.name!r} stopped before the generation finished"))

    def _wake(self) -> None:
        with self._lock:
            self._work.notify()

    # -- the step thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException:  # a bug in the loop itself: fail everyone rather than leave them hanging
            log.exception("the generation thread of model %r died", self.name)
            with self._lock:
                self._state = _State.STOPPED
                left = list(self._waiting) + list(self._active.values())
                self._waiting.clear()
                self._active.clear()
                self._idle.notify_all()
            for request in left:
                request.handle._deliver(InternalError(f"model {self.name!r} stopped generating"))

    def _loop(self) -> None:
        while True:
            with self._lock:
                while self._state is _State.RUNNING and not self._waiting and not self._active:
                    self._work.wait()
                if self._state is not _State.RUNNING:
                    return
                expired = self._reap(self._clock())
                admitted = self._admit()
            for request in expired:
                request.handle._deliver(DeadlineExceeded("the deadline passed during generation"))
            self._step(admitted)
            if self._after_step is not None:
                try:
                    self._after_step()
                except Exception:  # a hook's failure must not stop the generations
                    log.exception("after_step of model %r failed", self.name)
            with self._lock:
                if not self._waiting and not self._active:
                    self._idle.notify_all()

    def _reap(self, now: float) -> list[_Request]:
        """Drop cancelled and expired requests (lock held); returns the expired ones."""
        expired: list[_Request] = []

        def expired_now(request: _Request) -> bool:
            if request.deadline is not None and request.deadline <= now and not request.handle.cancelled:
                expired.append(request)
                return True
            return False

        if self._waiting:
            self._waiting = deque(r for r in self._waiting if not (r.handle.cancelled or expired_now(r)))
        for request in list(self._active.values()):
            if request.handle.cancelled or expired_now(request):
                self._release(request)
        return expired

    def _admit(self) -> list[_Request]:
        """Move waiting requests into free slots, within the prefill budget (lock held)."""
        admitted: list[_Request] = []
        width = 0
        while self._waiting and self._free:
            request = self._waiting[0]
            wider = max(width, len(request.prompt))
            if admitted and (len(admitted) + 1) * wider > self.max_prefill_tokens:
                break
            self._waiting.popleft()
            request.slot = heapq.heappop(self._free)
            self._active[request.slot] = request
            admitted.append(request)
            width = wider
        return admitted

    def _release(self, request: _Request) -> None:
        """Free the request's slot (lock held)."""
        request.done = True
        if self._active.get(request.slot) is request:
            del self._active[request.slot]
            heapq.heappush(self._free, request.slot)

    def _step(self, admitted: list[_Request]) -> None:
        batch: list[_Request] = admitted
        try:
            if admitted:
                logits = self.engine.prefill([r.slot for r in admitted], [r.prompt for r in admitted])
                self._accept(admitted, logits)
            batch = sorted((r for r in list(self._active.values()) if not r.done), key=lambda r: r.slot)
            if batch:
                logits = self.engine.decode([r.slot for r in batch], [r.last_token for r in batch],
                                            [r.position for r in batch])
                self._accept(batch, logits)
        except Exception as exc:  # noqa: BLE001 - one failed step must not end the thread
            log.exception("generation step failed on model %r", self.name)
            error = InternalError(f"model {self.name!r} failed while generating")
            error.__cause__ = exc
            failed = [r for r in batch if not r.done]
            with self._lock:
                for request in failed:
                    self._release(request)
            for request in failed:
                request.handle._deliver(error)

    def _accept(self, batch: list[_Request], logits: torch.Tensor) -> None:
        """Take each request's next token: deliver its text, finish it if it ended."""
        tokens = sample(logits, [r.sampling for r in batch], [r.generator for r in batch])
        finished: list[_Request] = []
        finals: list[tuple[_Request, Chunk]] = []
        for request, token in zip(batch, tokens):
            if request.handle.cancelled:
                finished.append(request)
                continue
            request.generated += 1
            request.last_token = token
            reason = None
            if token in self._eos:
                text, reason = request.stream.finish(), "stop"
            else:
                text = request.stream.push(token)
                if request.stream.stopped:
                    reason = "stop"
                elif (request.generated >= request.sampling.max_tokens
                      or len(request.prompt) + request.generated >= self.context_length):
                    text, reason = text + request.stream.finish(), "length"
            if reason is None:
                if text and not request.handle._deliver(Chunk(text, tokens=request.generated)):
                    finished.append(request)
                continue
            finished.append(request)
            finals.append((request, Chunk(text, Usage(len(request.prompt), request.generated, reason))))
        if finished:
            with self._lock:
                for request in finished:
                    self._release(request)
        for request, chunk in finals:  # after the release: whoever sees the end sees the slot free
            request.handle._deliver(chunk)
