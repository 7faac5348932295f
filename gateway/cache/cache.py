"""The gateway's result cache: keys, envelope, backend, breaker, single-flight and background
writes composed behind ``ResultCache.serve``.

Contract (``GatewayCache.serve(request, compute)``):
- Fail-open: no cache problem ever fails a request or waits long. A backend error, timeout, open
  breaker, corrupt or foreign value, or even a bug in key building, degrades to ``compute()``;
  errors a request gets are only ever ``compute()``'s own (or UNAVAILABLE while the gateway stops
  with the request's shared compute still running).
- Hit: one GET, the envelope checked, the response decoded; the answer is returned with
  ``served_by="cache"``, reason ``cache_hit``, the caller's request ``id``, and the
  ``cache_source`` parameter (``edge`` or ``cloud``). Outputs are bit-identical to the stored answer.
- Quality: a request asking for ``quality="cloud"`` treats an entry the edge produced as a miss;
  its cloud answer then overwrites the entry, so later default requests get the better answer.
- Freshness: entries live ``ttl_ms`` (per model, with a default). A hit near expiry may start one
  background refresh (XFetch, ``freshness.py``) and is still answered from the cache at once. An
  entry the cloud produced is refreshed early only by a request that itself asks for the cloud, so
  a refresh never downgrades an entry to an edge answer. A new model version reads no old entry:
  the resolved version is part of the key.
- Single-flight: concurrent identical misses (same key and quality) in this process cause one
  ``compute()``; the others wait for it and are answered with the leader's ``served_by`` and
  ``route_reason="coalesced"`` (a request that joins a flight already finished, whose answer is
  being stored, is answered as a hit). The compute runs as its own task, so the leader's client
  leaving does not cancel it and the followers still get the answer. Followers share the leader's
  outcome, error included — except ``DeadlineExceeded``, which is the leader's deadline, not
  theirs: followers then run one more flight with their own ``compute`` (and their own deadline).
  Nobody waits beyond their own deadline (the front cancels the wait; the shared compute is
  bounded by the leader's deadline). A finished flight stays joinable until its entry is written.
- Across replicas (``lease.py``): when the backend is Redis, the flight's leader first takes a short
  lease on the entry; a replica that finds the lease taken waits (polling Redis) for the holder's
  entry and answers from it (``served_by="cache"``, ``cache_hit``), and computes itself if the
  holder dies, gives up without an answer or takes longer than ``lease.max_wait_ms``. The holder
  writes the entry and drops its lease atomically. Streams (``lookup``/``store``) take no lease.
- Writes happen in the background (at most ``max_pending_writes`` at once, beyond that dropped),
  never while the breaker is open, never for ``no_cache`` requests or for answers larger than
  ``max_entry_bytes``.
- Backend: Redis (standalone or cluster) when configured and reachable at start; otherwise the
  in-process LRU, said in one log line, and Redis is tried again every ``reconnect_interval_ms``
  (the cache moves to Redis once it answers). A Redis that fails later is not swapped for the
  LRU: the breaker opens, requests are computed, a background PING probes it back.
- ``reconfigure(settings)`` applies a reloaded ``cache`` section: policy (TTL, per-model switches,
  beta, ignored parameters, breaker thresholds) at once; a changed backend is opened anew.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from edgecloud.codec import for_another_request, response_from_wire, response_to_wire

from edgecloud.clock import Clock, MonotonicClock
from edgecloud.errors import DeadlineExceeded, Unavailable
from edgecloud.types import InferResponse
from gateway.cache.backend import BackendError, CacheBackend
from gateway.cache.breaker import BreakerState, CircuitBreaker, NodeBreakers
from gateway.cache.envelope import HEADER, CorruptEntry, Entry, Provenance, decode, encode
from gateway.cache.freshness import Freshness
from gateway.cache.keys import EXCLUDED_PARAMETERS, cache_key, entry_key, lease_key, uncacheable
from gateway.cache.lease import Claim, Leases
from gateway.cache.lru import LruBackend
from gateway.cache.redis_backend import RedisBackend
from gateway.cache.settings import CacheSettings
from gateway.singleflight import SingleFlight
from gateway.cache.writer import BackgroundWriter
from gateway.cache.api import CACHE_SOURCE, CacheRequest, Served
from gateway.metrics import CacheMetrics

__all__ = ["CACHE_HIT", "COALESCED", "GatewayCache"]

log = logging.getLogger(__name__)

CACHE_HIT = "cache_hit"
"""``route_reason`` of an answer served from the cache."""
COALESCED = "coalesced"
"""``route_reason`` of an answer shared from another request's computation, still in flight."""
SERVED_BY_CACHE = "cache"

Compute = Callable[[], Awaitable[Served]]


@dataclass(frozen=True, slots=True)
class _Computed:
    """One flight's outcome: the leader's ``Served`` and its serialized response (without an id)."""

    served: Served
    body: bytes
    provenance: Provenance | None

    def for_follower(self, request_id: str, finished: bool) -> Served:
        """A private copy for another request; one that joined after the compute ended is a hit."""
        response = response_from_wire(self.body)
        response.id = request_id
        if finished and self.provenance is not None:
            response.parameters[CACHE_SOURCE] = self.provenance.label
            return Served(response, SERVED_BY_CACHE, CACHE_HIT)
        return Served(response, self.served.served_by, COALESCED)


class GatewayCache:
    def __init__(self, settings: CacheSettings, metrics: CacheMetrics, *, clock: Clock | None = None,
                 wall: Callable[[], float] = time.time, rand: Callable[[], float] = random.random,
                 lru_clock: Clock | None = None, sleep=asyncio.sleep):
        self.settings = settings
        self._metrics = metrics
        self._clock = clock or MonotonicClock()
        self._lru_clock = lru_clock or self._clock
        self._wall = wall
        self._freshness = Freshness(settings.early_refresh_beta, rand)
        self._ignored = EXCLUDED_PARAMETERS | frozenset(settings.ignore_parameters)
        self._flights: SingleFlight[_Computed] = SingleFlight("cache-fill")
        self._writer = BackgroundWriter(settings.max_pending_writes)
        self._backend: CacheBackend | None = None
        self._near: LruBackend | None = None
        self._decoded: dict[str, tuple[bytes, Entry]] = {}
        """In-process values (the near copy's, or the LRU backend's) decoded, by key, with the
        value they were decoded from."""
        self._decoded_bytes = 0
        self._breakers = self._new_breakers(settings)
        self._leases = Leases(settings.lease, self._clock, sleep, on_error=self._lease_failed)
        self._remote_answering = True
        """False after a failed Redis command, until one succeeds: a miss whose GET just failed
        takes no lease (it would wait out a second timeout on a sick Redis)."""
        self._background: set[asyncio.Task] = set()
        self._reconnect_task: asyncio.Task | None = None
        self._started = False
        lookups, errors, writes = metrics.lookups, metrics.errors, metrics.writes
        self._m_hit = lookups.labels("hit")
        self._m_miss = lookups.labels("miss")
        self._m_quality_miss = lookups.labels("quality_miss")
        self._m_expired = lookups.labels("expired")
        self._m_corrupt = lookups.labels("corrupt")
        self._m_error = lookups.labels("error")
        self._m_breaker_open = lookups.labels("breaker_open")
        self._m_bypass = lookups.labels("bypass")
        self._m_near_hit = metrics.near_hits
        self._m_leader = metrics.flights.labels("leader")
        self._m_follower = metrics.flights.labels("follower")
        self._m_lease_holder = metrics.flights.labels("lease_holder")
        self._m_lease_waiter = metrics.flights.labels("lease_waiter")
        self._m_lease_fallback = metrics.flights.labels("lease_fallback")
        self._m_stored = writes.labels("stored")
        self._m_errors = errors
        self._m_writes = writes

    # lifecycle -------------------------------------------------------------------------------

    @property
    def backend(self) -> CacheBackend | None:
        """The backend in use (None while the cache is disabled)."""
        return self._backend

    @property
    def breaker(self) -> CircuitBreaker:
        """The breaker of a single Redis (node ``""``); a cluster has one per master (``breakers``)."""
        return self._breakers.get("")

    @property
    def breakers(self) -> NodeBreakers:
        return self._breakers

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self._open_backend(self.settings)

    async def stop(self) -> None:
        self._started = False
        await self._flights.close()  # before the background tasks: a cancelled fill may spawn a release
        await self._stop_background()
        await self._writer.close()
        await self._close_backend()

    async def reconfigure(self, settings: CacheSettings) -> None:
        old = self.settings
        self.settings = settings
        self._freshness.beta = settings.early_refresh_beta
        self._leases.settings = settings.lease
        self._ignored = EXCLUDED_PARAMETERS | frozenset(settings.ignore_parameters)
        self._writer.max_pending = settings.max_pending_writes
        self._breakers.reconfigure(settings.breaker.consecutive_failures, settings.breaker.open_ms / 1000.0)
        if self._started and settings.backend_settings() != old.backend_settings():
            await self._stop_background()
            await self._close_backend()
            await self._open_backend(settings)

    def _new_breakers(self, settings: CacheSettings) -> NodeBreakers:
        for state in BreakerState:
            self._metrics.breaker_state.labels(state.value).set(1 if state is BreakerState.CLOSED else 0)
        return NodeBreakers(settings.breaker.consecutive_failures, settings.breaker.open_ms / 1000.0,
                            self._clock, on_change=self._breaker_changed)

    async def _open_backend(self, settings: CacheSettings) -> None:
        self._breakers = self._new_breakers(settings)
        if not settings.enabled:
            self._set_backend(None)
            return
        if not settings.redis.configured:
            lru = self._new_lru(settings)
            log.info("cache: no Redis configured; using %s", lru.describe())
            self._set_backend(lru)
            return
        redis, error = await self._connect_redis(settings)
        if redis is not None:
            log.info("cache: using %s (timeouts: connect %.0f ms, reply %.0f ms; no retries)",
                     redis.describe(), settings.redis.connect_timeout_ms, settings.redis.socket_timeout_ms)
            self._set_backend(redis)
            return
        lru = self._new_lru(settings)
        log.warning("cache: %s unreachable at start (%s); using %s; retrying Redis every %.0f ms",
                    settings.redis.describe(), error, lru.describe(), settings.redis.reconnect_interval_ms)
        self._set_backend(lru)
        self._reconnect_task = asyncio.create_task(self._reconnect(settings), name="cache-reconnect")

    def _new_lru(self, settings: CacheSettings) -> LruBackend:
        return LruBackend(settings.lru.max_entries, settings.lru.max_bytes, self._lru_clock)

    async def _connect_redis(self, settings: CacheSettings) -> tuple[RedisBackend | None, str]:
        try:
            redis = RedisBackend(settings.redis)
        except Exception as exc:  # a client that cannot even be built (bad TLS files, ...)
            return None, f"{type(exc).__name__}: {exc}"
        try:
            await redis.start()
        except BackendError as exc:
            await redis.close()
            return None, f"{exc.kind}: {exc}"
        return redis, ""

    async def _reconnect(self, settings: CacheSettings) -> None:
        interval = settings.redis.reconnect_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            redis, _ = await self._connect_redis(settings)
            if redis is not None:
                old = self._backend
                self._breakers = self._new_breakers(settings)
                self._set_backend(redis)
                log.warning("cache: %s is reachable now; moving from the in-process LRU to Redis", redis.describe())
                if old is not None:
                    await old.close()
                self._reconnect_task = None
                return

    def _set_backend(self, backend: CacheBackend | None) -> None:
        self._backend = backend
        near = self.settings.near
        self._decoded, self._decoded_bytes = {}, 0
        self._near = LruBackend(near.max_entries, near.max_bytes, self._lru_clock) \
            if backend is not None and backend.remote and near.enabled else None
        for name in ("redis", "redis-cluster", "lru"):
            self._metrics.backend.labels(name).set(1 if backend is not None and backend.name == name else 0)

    async def _stop_background(self) -> None:
        tasks = list(self._background)
        if self._reconnect_task is not None:
            tasks.append(self._reconnect_task)
            self._reconnect_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._background.clear()

    async def _close_backend(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.close()

    def _breaker_changed(self, node: str, old: BreakerState, new: BreakerState) -> None:
        backend = self._backend.describe() if self._backend is not None else "Redis"
        if node:
            backend += f" (node {node}: its slots only)"
        why = {
            BreakerState.OPEN: "requests skip the cache; probing again in %.0f ms" % (self._breakers.open_s * 1000)
            if old is BreakerState.CLOSED else "the probe failed; requests keep skipping the cache",
            BreakerState.HALF_OPEN: "probing with PING",
            BreakerState.CLOSED: "the probe succeeded; requests use the cache again",
        }[new]
        # One line per change: opening and closing are warnings; the probes in between are info.
        level = logging.WARNING if old is BreakerState.CLOSED or new is BreakerState.CLOSED else logging.INFO
        log.log(level, "cache: breaker for %s %s -> %s: %s", backend, old.value, new.value, why)
        worst = self._breakers.worst()  # the gauge shows the most severe of the nodes' breakers
        for state in BreakerState:
            self._metrics.breaker_state.labels(state.value).set(1 if state is worst else 0)
        self._metrics.breaker_transitions.labels(new.value).inc()

    # serving ---------------------------------------------------------------------------------

    def serves(self, model_name: str) -> bool:
        """Whether ``serve`` may answer a request for the model from the cache (or store its
        answer); when not, ``serve`` only computes and the caller may call ``compute`` itself."""
        return self._backend is not None and self.settings.model_enabled(model_name)

    async def serve(self, request: CacheRequest, compute: Compute) -> Served:
        backend = self._backend
        decoded = request.request
        settings = self.settings
        if not self.serves(decoded.model_name):
            return await compute()
        if request.bypass or uncacheable(request):
            self._m_bypass.inc()
            return await compute()
        try:
            digest = cache_key(request, self._ignored)
        except Exception:  # fail open, loudly: a request the key cannot encode is computed
            log.exception("cache: could not build a key; computing without the cache")
            self._m_errors.labels("key", "error").inc()
            return await compute()
        key = entry_key(settings.key_prefix, digest)
        entry = await self._read(backend, key, digest)
        if entry is not None:
            if request.require_cloud and entry.provenance is Provenance.EDGE:
                self._m_quality_miss.inc()
            else:
                now = self._wall()
                if now >= entry.expires_at:
                    self._m_expired.inc()
                else:
                    self._m_hit.inc()
                    if self._freshness.refresh_early(entry, now) and (
                            entry.provenance is Provenance.EDGE or request.require_cloud):
                        self._refresh(key, digest, request, compute)
                    response = entry.response
                    response.id = decoded.id
                    response.parameters[CACHE_SOURCE] = entry.provenance.label
                    return Served(response, SERVED_BY_CACHE, CACHE_HIT)
        return await self._compute_shared(key, digest, request, compute)

    # whole answers stored by their producer (streams) -------------------------------------------

    def locate(self, request: CacheRequest) -> tuple[str, bytes] | None:
        """The backend key and digest for ``request`` (computed once, for ``lookup`` and ``store``),
        or None when it is not cached (cache off for the model, bypass, stateful, or a key that
        cannot be built)."""
        if not self.serves(request.request.model_name):
            return None
        if request.bypass or uncacheable(request):
            self._m_bypass.inc()
            return None
        try:
            digest = cache_key(request, self._ignored)
        except Exception:  # fail open, loudly
            log.exception("cache: could not build a key; computing without the cache")
            self._m_errors.labels("key", "error").inc()
            return None
        return entry_key(self.settings.key_prefix, digest), digest

    async def lookup(self, request: CacheRequest, located: tuple[str, bytes]) -> tuple[InferResponse, Provenance] | None:
        """The stored answer for ``request`` (at ``located``, from ``locate``) and who produced it,
        or None (a miss, an expired or edge entry when the cloud is required, any cache failure).
        No single-flight: a caller that produces answers itself (a stream) shares live work on its
        own and ``store``s the result."""
        backend = self._backend
        entry = await self._read(backend, *located) if backend is not None else None
        if entry is None:
            return None
        if request.require_cloud and entry.provenance is Provenance.EDGE:
            self._m_quality_miss.inc()
            return None
        if self._wall() >= entry.expires_at:
            self._m_expired.inc()
            return None
        self._m_hit.inc()
        return entry.response, entry.provenance

    def store(self, request: CacheRequest, located: tuple[str, bytes], response: InferResponse, served_by: str,
              compute_s: float) -> None:
        """Write ``response`` (produced by ``served_by``: edge or cloud) for ``request`` at ``located``
        in the background, under the same rules as computed answers (size, breaker, bounded writes)."""
        provenance = Provenance.of(served_by)
        if provenance is None:
            return
        key, digest = located
        body = response_to_wire(dataclasses.replace(response, id="", wire=None))
        if len(body) + HEADER.size > self.settings.max_entry_bytes:
            self._m_writes.labels("too_big").inc()
            return
        now = self._wall()
        ttl_s = self.settings.ttl_s(request.request.model_name)
        value = encode(body, provenance, created_at=now, expires_at=now + ttl_s, compute_s=compute_s, digest=digest)
        self._store(key, value, ttl_s, lambda: None)

    async def _read(self, backend: CacheBackend, key: str, digest: bytes) -> Entry | None:
        """The entry under ``key``, or None (miss, error, open breaker, corrupt: each counted).
        The near copy, when there is one, answers first (even while the breaker is open)."""
        near = self._near
        value = near.get_now(key) if near is not None else None
        if value is not None:
            self._m_near_hit.inc()
            return self._decoded_once(key, value, digest)
        node = backend.node_of(key) if backend.remote else ""
        breaker = self._breakers.get(node)
        if backend.remote and not breaker.allows_requests():
            self._m_breaker_open.inc()
            self._maybe_probe(backend, node, breaker)
            return None
        started = self._clock.now()
        try:
            value = await backend.get(key)
        except BackendError as exc:
            self._backend_failed("get", exc, started, breaker)
            self._m_error.inc()
            return None
        if backend.remote:
            breaker.record_success()
            self._remote_answering = True
        if value is None:
            self._m_miss.inc()
            return None
        if not backend.remote:  # the in-process LRU hands back the very bytes it holds
            return self._decoded_once(key, value, digest)
        if near is not None and backend is self._backend:
            near.put(key, value, self.settings.near.ttl_ms / 1000.0)
        return self._decode(key, value, digest)

    def _decoded_once(self, key: str, value: bytes, digest: bytes) -> Entry | None:
        """An in-process copy's entry (the near cache's, or the LRU backend's), decoded once per
        stored value: a hot key's later hits get a fresh response (its own ``id`` and parameters)
        over the same decoded outputs, which nothing downstream of the cache changes. The decoded
        entries are bounded by the near cache's ``max_entries`` and ``max_bytes``."""
        known = self._decoded.get(key)
        if known is not None and known[0] is value:
            return _fresh(known[1])
        entry = self._decode(key, value, digest)
        if entry is None:
            return None
        near = self.settings.near
        if len(value) > near.max_bytes:
            return entry  # too big to keep decoded: decoded per hit, as a far value is
        if len(self._decoded) >= near.max_entries or self._decoded_bytes + len(value) > near.max_bytes:
            self._decoded.clear()  # bounded like the near cache; rebuilt by the next hits
            self._decoded_bytes = 0
        self._decoded[key] = (value, entry)
        self._decoded_bytes += len(value)
        return _fresh(entry)

    def _decode(self, key: str, value: bytes, digest: bytes) -> Entry | None:
        try:
            return decode(value, digest)
        except CorruptEntry as exc:
            log.debug("cache: corrupt entry under %s: %s", key, exc)
            self._m_errors.labels("get", "corrupt").inc()
            self._m_corrupt.inc()
            return None

    def _backend_failed(self, op: str, exc: BackendError, started: float, breaker: CircuitBreaker) -> None:
        self._m_errors.labels(op, exc.kind).inc()
        if exc.counts_against_backend:
            self._remote_answering = False
            breaker.record_failure(started)

    def _lease_failed(self, op: str, exc: BackendError, started: float, key: str) -> None:
        backend = self._backend
        node = backend.node_of(key) if backend is not None and backend.remote else ""
        self._backend_failed(op, exc, started, self._breakers.get(node))

    def _maybe_probe(self, backend: CacheBackend, node: str, breaker: CircuitBreaker) -> None:
        if breaker.try_probe():
            self._spawn(self._probe(backend, node, breaker), "cache-probe")

    async def _probe(self, backend: CacheBackend, node: str, breaker: CircuitBreaker) -> None:
        """PING the node (a failed one also makes a cluster client refresh its slot map, so a
        promoted replica's keys move to a breaker of their own)."""
        try:
            await backend.ping(node)
        except BackendError as exc:
            self._m_errors.labels("probe", exc.kind).inc()
            breaker.record_failure()  # HALF_OPEN: any failed probe reopens
        else:
            breaker.record_success()

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # misses ----------------------------------------------------------------------------------

    async def _compute_shared(self, key: str, digest: bytes, request: CacheRequest, compute: Compute) -> Served:
        flight_key = (digest, request.require_cloud)
        ttl_s = self.settings.ttl_s(request.request.model_name)
        fill = lambda: self._fill(flight_key, key, digest, ttl_s, compute, request.require_cloud,
                                  request.request.id)  # noqa: E731
        for attempt in (1, 2):
            task, leader = self._flights.join(flight_key, fill)
            finished = task.done()
            (self._m_leader if leader else self._m_follower).inc()
            try:
                computed = await asyncio.shield(task)
            except DeadlineExceeded:
                if leader or attempt == 2:
                    raise
                continue  # the leader's deadline passed, maybe not ours: one more flight, our compute
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if task.cancelled() and current is not None and not current.cancelling():
                    raise Unavailable("the gateway is shutting down") from None
                raise
            return computed.served if leader else computed.for_follower(request.request.id, finished)
        raise AssertionError("unreachable")

    def _refresh(self, key: str, digest: bytes, request: CacheRequest, compute: Compute) -> None:
        """Start one background recompute of a hot entry near expiry (XFetch)."""
        flight_key = (digest, request.require_cloud)
        ttl_s = self.settings.ttl_s(request.request.model_name)
        _, leader = self._flights.join(flight_key, lambda: self._fill(flight_key, key, digest, ttl_s, compute,
                                                                       request.require_cloud, ""))
        if leader:
            self._metrics.early_refreshes.inc()

    async def _fill(self, flight_key: Hashable, key: str, digest: bytes, ttl_s: float, compute: Compute,
                    require_cloud: bool, request_id: str) -> _Computed:
        task = asyncio.current_task()

        def done() -> None:
            self._flights.forget(flight_key, task)

        claim = await self._claim(key, digest, require_cloud, request_id)
        if claim is not None and claim.answer is not None:
            done()  # another replica computed it; it is stored already
            return claim.answer
        lease = (lease_key(key, require_cloud), claim.token) if claim is not None and claim.held else None
        started = self._clock.now()
        try:
            if claim is not None:
                async with claim.renewing():
                    served = await compute()
            else:
                served = await compute()
        except BaseException:
            self._release(lease)
            raise
        compute_s = self._clock.now() - started
        body = response_to_wire(dataclasses.replace(served.response, id=""))
        provenance = Provenance.of(served.served_by)
        computed = _Computed(served, body, provenance)
        if provenance is None or not served.cacheable:
            self._m_writes.labels("not_cacheable").inc()
            self._release(lease)
            done()
        elif len(body) + HEADER.size > self.settings.max_entry_bytes:
            self._m_writes.labels("too_big").inc()
            self._release(lease)
            done()
        else:
            now = self._wall()
            value = encode(body, provenance, created_at=now, expires_at=now + ttl_s, compute_s=compute_s,
                           digest=digest)
            self._store(key, value, ttl_s, done, lease)
        return computed

    async def _claim(self, key: str, digest: bytes, require_cloud: bool, request_id: str) -> Claim[_Computed] | None:
        """The cross-replica lease for a miss (None when the backend takes no leases)."""
        backend = self._backend
        if backend is None or not getattr(backend, "leases", False) or not self.settings.lease.enabled \
                or not self._remote_answering or not self._breakers.get(backend.node_of(key)).allows_requests():
            return None

        def accept(value: bytes) -> _Computed | None:
            entry = self._decode(key, value, digest)
            if entry is None or (require_cloud and entry.provenance is Provenance.EDGE) \
                    or self._wall() >= entry.expires_at:
                return None
            near = self._near
            if near is not None and backend is self._backend:
                near.put(key, value, self.settings.near.ttl_ms / 1000.0)
            response = entry.response
            body = response.wire or response_to_wire(dataclasses.replace(response, id=""))
            response.id = request_id
            response.parameters[CACHE_SOURCE] = entry.provenance.label
            return _Computed(Served(response, SERVED_BY_CACHE, CACHE_HIT), body, entry.provenance)

        claim = await self._leases.claim(backend, key, lease_key(key, require_cloud), accept)
        (self._m_lease_holder if claim.held else self._m_lease_waiter if claim.answer is not None
         else self._m_lease_fallback).inc()
        return claim

    def _release(self, lease: tuple[str, str] | None) -> None:
        """Drop a lease this gateway holds, in the background (it lapses by itself anyway)."""
        backend = self._backend
        if lease is not None and backend is not None and getattr(backend, "leases", False):
            self._spawn(self._leases.release(backend, *lease), "cache-lease-release")

    def _store(self, key: str, value: bytes, ttl_s: float, done: Callable[[], None],
               lease: tuple[str, str] | None = None) -> None:
        """Write in the background; with ``lease`` (key, token), the write also drops that lease."""
        backend = self._backend
        if backend is None:
            done()
            return
        breaker = self._breakers.get(backend.node_of(key) if backend.remote else "")
        if backend.remote and not breaker.allows_requests():
            self._m_writes.labels("dropped_breaker_open").inc()
            self._release(lease)
            done()
            return
        if self._writer.submit(lambda: self._write(backend, breaker, key, value, ttl_s, done, lease)) is None:
            self._m_writes.labels("dropped_busy").inc()
            self._release(lease)
            done()

    async def _write(self, backend: CacheBackend, breaker: CircuitBreaker, key: str, value: bytes, ttl_s: float,
                     done: Callable[[], None], lease: tuple[str, str] | None = None) -> None:
        started = self._clock.now()
        try:
            if lease is not None:
                await backend.store_and_release(key, value, ttl_s, *lease)
            else:
                await backend.set(key, value, ttl_s)
        except BackendError as exc:
            self._backend_failed("set", exc, started, breaker)
            self._m_writes.labels("failed").inc()
        else:
            if backend.remote:
                breaker.record_success()
            near = self._near
            if near is not None and backend is self._backend:
                near.put(key, value, min(self.settings.near.ttl_ms / 1000.0, ttl_s))
            self._m_stored.inc()
        finally:
            done()


def _fresh(entry: Entry) -> Entry:
    """``entry`` with a response of its own (``id`` and parameters are set per request) sharing
    the outputs (decoded or not) and wire bytes."""
    return dataclasses.replace(entry, response=for_another_request(entry.response))
