"""Model metadata as the backends advertise it, kept in memory.

Contract: ``MetadataCache.get(name, version)`` answers from memory; an entry older than ``ttl_s``
is refreshed in the background while the stale one keeps answering, so no request waits on a
(possibly slow) backend for it. A model not yet known is fetched once however many requests ask
at the same time (``gateway.singleflight``). Backends are asked in the order ``sources()`` gives
(whoever traffic goes to first); one that does not know the model or cannot answer is skipped.
NOT_FOUND when every reachable backend says it does not know the model, UNAVAILABLE when none
could answer; other request errors are raised as they come. ``known(name, version)`` answers only from memory (None when the model was never fetched).
``clear()`` forgets every entry (a
config reload).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edgecloud.clock import Clock
from edgecloud.errors import ErrorKind, InferenceError, Unavailable
from edgecloud.types import ModelMetadata
from gateway.backend import Backend
from gateway.singleflight import SingleFlight

__all__ = ["MetadataCache"]

log = logging.getLogger(__name__)

Key = tuple[str, str]


class MetadataCache:
    def __init__(self, sources: Callable[[], list[Backend]], clock: Clock, *, ttl_s: float = 10.0,
                 timeout_s: float = 2.0):
        self._sources = sources
        self._clock = clock
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._entries: dict[Key, tuple[float, ModelMetadata]] = {}
        self._flights: SingleFlight[ModelMetadata] = SingleFlight("model-metadata")

    async def get(self, name: str, version: str = "") -> ModelMetadata:
        key = (name, version)
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] <= self._clock.now():
                self._flights.join(key, lambda: self._fetch(key))  # refreshed in the background
            return entry[1]
        task, _ = self._flights.join(key, lambda: self._fetch(key))
        return await asyncio.shield(task)

    def known(self, name: str, version: str = "") -> ModelMetadata | None:
        """What is in memory for the model (however old), or None; never fetches."""
        entry = self._entries.get((name, version))
        return None if entry is None else entry[1]

    def clear(self) -> None:
        self._entries.clear()

    async def close(self) -> None:
        await self._flights.close()

    async def _fetch(self, key: Key) -> ModelMetadata:
        name, version = key
        unknown: InferenceError | None = None
        try:
            for backend in self._sources():
                try:
                    meta = await backend.model_metadata(name, version, self.timeout_s)
                except InferenceError as exc:
                    if exc.kind is ErrorKind.NOT_FOUND:
                        unknown = exc
                    elif not exc.retryable:
                        raise
                    continue
                self._entries[key] = (self._clock.now() + self.ttl_s, meta)
                return meta
        finally:
            self._flights.forget(key, asyncio.current_task())
        if unknown is not None:
            raise unknown
        raise Unavailable("no backend is reachable to describe the model")
