"""Cross-replica single-flight: gateway replicas that share Redis compute a missing entry once.

Contract (``Leases.claim(backend, key, lease, accept)``), called by a gateway's local flight
leader on a miss:
- ``Claim.held``: this gateway took the lease (``SET NX PX``) and computes. While it computes it
  renews the lease every third of ``ttl_ms`` (``Claim.renewing()``); it then writes the entry and
  drops the lease in one atomic step (``LeaseBackend.store_and_release``), or drops the lease
  alone when there is nothing to store. A holder that dies stops renewing, so its lease lapses
  within ``ttl_ms``.
- ``Claim.answer``: another replica held the lease and its entry appeared while this one waited
  (polled with ``peek``, every ``poll_initial_ms`` doubling to ``poll_max_ms``). ``accept(bytes)``
  decides whether stored bytes answer this request (valid, fresh, of the quality asked for); its
  result is returned.
- When the lease vanishes without an acceptable entry (the holder died, failed, or produced an
  answer that is not stored), a waiter tries to take the lease itself, so a dead holder's
  followers still compute once between them; whoever loses that race waits again.
- Neither (``Claim.why``): compute without a lease, because the wait passed ``max_wait_ms``
  (``timeout``) or Redis failed (``error``; each failure goes to ``on_error``). ``busy`` (no free
  connection in this gateway's pool: local congestion, not a sick Redis) is retried instead.
Nothing here ever fails a request: every Redis problem turns into computing. Time comes from an
injected clock and sleep (tests use virtual time).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from edgecloud.clock import Clock, Sleep
from gateway.cache.backend import BackendError, LeaseBackend
from gateway.cache.settings import LeaseSettings

__all__ = ["Claim", "Leases"]

T = TypeVar("T")
OnError = Callable[[str, BackendError, float, str], None]
"""``on_error(op, error, started, key)``: a failed command on ``key`` (to count against its node)."""


@dataclass(slots=True)
class Claim(Generic[T]):
    """What ``Leases.claim`` decided: exactly one of ``held`` (a token), ``answer`` or neither
    (compute without a lease; ``why`` says why: ``timeout`` or ``error``)."""

    token: str | None = None
    answer: T | None = None
    why: str = ""
    _leases: Leases | None = None
    _backend: LeaseBackend | None = None
    _lease: str = ""

    @property
    def held(self) -> bool:
        return self.token is not None

    @contextlib.asynccontextmanager
    async def renewing(self) -> AsyncIterator[None]:
        """Keep the lease alive while the body runs (no-op unless ``held``)."""
        if self.token is None or self._leases is None:
            yield
            return
        renewer = asyncio.get_running_loop().create_task(
            self._leases.renew_forever(self._backend, self._lease, self.token), name="cache-lease-renew")
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)


class Leases:
    def __init__(self, settings: LeaseSettings, clock: Clock, sleep: Sleep = asyncio.sleep,
                 on_error: OnError | None = None, new_token: Callable[[], str] = lambda: secrets.token_hex(8)):
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._on_error = on_error or (lambda op, exc, started, key: None)
        self._new_token = new_token

    async def claim(self, backend: LeaseBackend, key: str, lease: str,
                    accept: Callable[[bytes], T | None]) -> Claim[T]:
        settings = self.settings
        deadline = self._clock.now() + settings.max_wait_ms / 1000.0
        token = self._new_token()
        while True:
            started = self._clock.now()
            try:
                if await backend.acquire_lease(lease, token, settings.ttl_ms / 1000.0):
                    return Claim(token=token, _leases=self, _backend=backend, _lease=lease)
            except BackendError as exc:
                self._on_error("lease", exc, started, lease)
                if exc.kind != "busy" or self._clock.now() >= deadline:
                    return Claim(why="error")
                await self._sleep(settings.poll_initial_ms / 1000.0)  # no free connection: try again
                continue
            waited = await self._wait(backend, key, lease, accept, deadline)
            if waited is not None:
                return waited
            # The holder went without leaving an answer: take the lease ourselves, or wait on
            # whoever did.

    async def _wait(self, backend: LeaseBackend, key: str, lease: str, accept: Callable[[bytes], T | None],
                    deadline: float) -> Claim[T] | None:
        """Poll until an acceptable entry appears (an answer), the lease is gone (None: try to take
        it), the wait is over or Redis fails (compute)."""
        delay = self.settings.poll_initial_ms / 1000.0
        longest = self.settings.poll_max_ms / 1000.0
        while True:
            left = deadline - self._clock.now()
            if left <= 0:
                return Claim(why="timeout")
            await self._sleep(min(delay, left))
            delay = min(delay * 2, longest)
            started = self._clock.now()
            try:
                value, held = await backend.peek(key, lease)
            except BackendError as exc:
                self._on_error("lease", exc, started, lease)
                if exc.kind == "busy":  # no free connection (local congestion): poll again
                    continue
                return Claim(why="error")
            if value is not None:
                answer = accept(value)
                if answer is not None:
                    return Claim(answer=answer)
            if not held:
                if self._clock.now() >= deadline:
                    return Claim(why="timeout")
                return None

    async def renew_forever(self, backend: LeaseBackend, lease: str, token: str) -> None:
        ttl_s = self.settings.ttl_ms / 1000.0
        while True:
            await self._sleep(ttl_s / 3)
            started = self._clock.now()
            try:
                if not await backend.renew_lease(lease, token, ttl_s):
                    return  # lost it (it lapsed while Redis was away): others may compute too
            except BackendError as exc:
                self._on_error("lease", exc, started, lease)

    async def release(self, backend: LeaseBackend, lease: str, token: str) -> None:
        started = self._clock.now()
        try:
            await backend.release_lease(lease, token)
        except BackendError as exc:
            self._on_error("lease", exc, started, lease)  # it lapses by itself within ttl_ms
