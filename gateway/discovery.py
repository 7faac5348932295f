"""Cloud workers from DNS: a name (a Kubernetes headless Service) resolved periodically into the pool.

Contract of ``WorkerDiscovery`` (settings: ``cloud.discovery``):
- ``refresh()`` resolves ``dns`` once (bounded by ``timeout_ms``) through its ``Resolver`` and
  hands every worker address (``ip:port``, ``[ip6]:port``; sorted, no duplicates) to ``apply``
  when the set changed. ``run()`` refreshes every ``refresh_ms`` until cancelled.
- A failed resolution (resolver error, timeout) never changes the pool: the last known set stays,
  the failure is counted (``result="error"`` / ``"timeout"``) and logged once per streak.
- An answer with no address (``result="empty"``: the name does not exist or has no ready pod) is
  a Service scaled to zero or a DNS glitch, which one answer cannot tell apart: the last known set
  stays until every answer has been empty for ``empty_grace_ms``, then the pool is emptied (null:
  never). Before anything was ever found there is nothing to keep, and an empty answer applies.
- What a worker is called is ``worker_name(prefix, address)``: stable per address, so the pool
  keeps outlier and latency state per address across refreshes.
Time comes from the injected clock and sleep; the resolver is injected too (``SystemResolver``,
the system's ``getaddrinfo``, by default), so every path is a unit test on a fake resolver.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from edgecloud.clock import Clock, Sleep
from gateway.config import DiscoverySettings

__all__ = ["NameNotFound", "Resolver", "SystemResolver", "WorkerDiscovery", "join_address", "worker_name"]

log = logging.getLogger(__name__)

FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
# getaddrinfo's "this name has no address": an answer (empty), not a failure to get one.
_NO_ADDRESS = {getattr(socket, name) for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
               if hasattr(socket, name)}


class NameNotFound(LookupError):
    """The resolver got an answer: the name has no address (NXDOMAIN, or no record of the family)."""


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """The IP addresses ``host`` has now (empty, or ``NameNotFound``, when it has none); any
        other exception is a failure to find out."""
        ...


class SystemResolver:
    """The system resolver (``getaddrinfo`` on the loop's executor): /etc/hosts, the search
    domains of /etc/resolv.conf and a cluster's DNS all apply, as for any other process."""

    def __init__(self, family: str = "any"):
        self.family = FAMILIES[family]

    async def resolve(self, host: str, port: int) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, family=self.family, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in _NO_ADDRESS:
                raise NameNotFound(host) from exc
            raise
        return [info[4][0] for info in infos]


def join_address(ip: str, port: int) -> str:
    """``ip:port``, the IPv6 address in brackets (what a gRPC target takes)."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def worker_name(prefix: str, address: str) -> str:
    """What a discovered worker is called: ``<prefix>-<address>``. A configured worker's name
    cannot hold ``:``, so the two never collide."""
    return f"{prefix}-{address}"


class WorkerDiscovery:
    def __init__(self, settings: DiscoverySettings, apply: Callable[[list[str]], None], *, clock: Clock,
                 sleep: Sleep = asyncio.sleep, resolver: Resolver | None = None, metrics=None,
                 known: list[str] | None = None):
        """``apply(addresses)`` installs a new set of worker addresses. ``known`` is the set in use
        already (a reload that keeps the name): it is kept until an answer differs. ``metrics``:
        ``GatewayMetrics`` (``discovery_resolutions``, ``discovery_changes``) or None."""
        self.settings = settings
        self._apply = apply
        self._clock = clock
        self._sleep = sleep
        self.resolver: Resolver = resolver or SystemResolver(settings.family)
        self._metrics = metrics
        self.addresses: list[str] | None = list(known) if known is not None else None
        """The set last applied (None until a resolution applied one)."""
        self._empty_since: float | None = None
        self._failing = False

    async def run(self) -> None:
        """Refresh every ``refresh_ms`` until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug applying an answer must not end discovery for good
                log.exception("cloud discovery: applying the answer for %s failed", self.settings.dns)
            await self._sleep(self.settings.refresh_ms / 1000.0)

    async def refresh(self) -> list[str] | None:
        """Resolve once and apply what changed; the addresses in use afterwards."""
        host, port = self.settings.host_port
        try:
            ips = await self._resolve(host, port)
        except NameNotFound:
            ips = []
        except TimeoutError:
            self._failed("timeout", f"no answer in {self.settings.timeout_ms:.0f} ms")
            return self.addresses
        except Exception as exc:  # any resolver failure: keep what works
            self._failed("error", f"{type(exc).__name__}: {exc}")
            return self.addresses
        if self._failing:
            self._failing = False
            log.info("cloud discovery: %s resolves again", self.settings.dns)
        addresses = sorted({join_address(ip, port) for ip in ips})
        if not addresses:
            self._count("empty")
            if not self._empty_long_enough():
                return self.addresses
        else:
            self._count("ok")
            self._empty_since = None
        self._install(addresses)
        return self.addresses

    # helpers ---------------------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> list[str]:
        """The resolver's answer, or ``TimeoutError`` after ``timeout_ms`` on the injected clock
        (a system resolver stuck on an unreachable DNS server is abandoned, not awaited)."""
        lookup = asyncio.ensure_future(self.resolver.resolve(host, port))
        timer = asyncio.ensure_future(self._sleep(self.settings.timeout_ms / 1000.0))
        try:
            await asyncio.wait((lookup, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (lookup, timer):
                task.cancel()
            await asyncio.gather(lookup, timer, return_exceptions=True)
        if lookup.cancelled():
            raise TimeoutError
        return lookup.result()

    def _empty_long_enough(self) -> bool:
        """Whether an empty answer may empty the pool now (see the module's contract)."""
        if not self.addresses:
            return True  # nothing to keep
        grace = self.settings.empty_grace_ms
        now = self._clock.now()
        if self._empty_since is None:
            self._empty_since = now
            log.warning("cloud discovery: %s has no address; keeping its %d workers for %s", self.settings.dns,
                        len(self.addresses), "now" if grace == 0 else
                        "ever" if grace is None else f"{grace / 1000.0:g} s unless it answers again")
        return grace is not None and now - self._empty_since >= grace / 1000.0

    def _install(self, addresses: list[str]) -> None:
        if addresses == self.addresses:
            return
        before = set(self.addresses or ())
        added, removed = [a for a in addresses if a not in before], sorted(before - set(addresses))
        self.addresses = addresses
        if self._metrics is not None:
            self._metrics.discovery_changes.labels("added").inc(len(added))
            self._metrics.discovery_changes.labels("removed").inc(len(removed))
        log.info("cloud discovery: %s -> %d workers (added %s; removed %s)", self.settings.dns, len(addresses),
                 ", ".join(added) or "none", ", ".join(removed) or "none")
        self._apply(list(addresses))

    def _failed(self, result: str, why: str) -> None:
        self._count(result)
        if not self._failing:
            self._failing = True
            log.warning("cloud discovery: resolving %s failed (%s); keeping the %d known workers", self.settings.dns,
                        why, len(self.addresses or ()))

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.discovery_resolutions.labels(result).inc()
