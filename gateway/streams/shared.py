"""One generation, many listeners: concurrent identical streams share it.

Contract: ``SharedGeneration(source, on_end)`` runs ``source`` (a dispatched stream) in a task of
its own, keeping every response it produced. ``follow()`` yields them from the first (a late
joiner gets what was already produced at once, then the rest live), each a copy the listener may
change. When the source fails, every listener gets the error (a fresh copy of it). When the last
listener leaves before the end, the source is closed (its upstream stops). ``on_end(self)`` runs
once, when the source has ended, failed or been cancelled; ``completed`` says whether it ended
well (only such an answer may be cached).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

from edgecloud.errors import InferenceError, InternalError, error_for_kind
from edgecloud.types import InferResponse

__all__ = ["SharedGeneration"]


class SharedGeneration:
    def __init__(self, source: AsyncIterator[InferResponse], on_end: Callable[[SharedGeneration], None]):
        self.responses: list[InferResponse] = []
        self.completed = False
        self.error: BaseException | None = None
        self.listeners = 0
        self._source = source
        self._on_end = on_end
        self._changed = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._run())

    @property
    def ended(self) -> bool:
        return self.task.done()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        if not changed.done():
            changed.set_result(None)

    async def _run(self) -> None:
        try:
            async for response in self._source:
                self.responses.append(response)
                self._notify()
            self.completed = True
        except asyncio.CancelledError:
            self.error = InternalError("the shared generation was cancelled")
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to every listener
            self.error = exc
        finally:
            try:
                await self._source.aclose()
            finally:
                self._notify()
                self._on_end(self)

    def _raise(self) -> None:
        error = self.error
        if isinstance(error, InferenceError):
            raise error_for_kind(error.kind, error.message, retry_after_s=error.retry_after_s)
        raise InternalError("the shared generation failed")

    async def follow(self) -> AsyncIterator[InferResponse]:
        self.listeners += 1
        index = 0
        try:
            while True:
                while index < len(self.responses):
                    response = self.responses[index]
                    index += 1
                    yield dataclasses.replace(response, parameters=dict(response.parameters))
                if self.task.done():
                    if not self.completed:
                        self._raise()
                    return
                await asyncio.shield(self._changed)
        finally:
            self.listeners -= 1
            if self.listeners == 0 and not self.task.done():
                self.task.cancel()
