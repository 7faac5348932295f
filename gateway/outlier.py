"""Outlier ejection for the cloud pool, with Envoy's semantics and names.

Contract: ``on_failure(host)`` counts consecutive server-side failures; at ``consecutive_5xx`` the
host is ejected for ``base_ejection_time * ejections`` (capped at ``max_ejection_time``), unless
that would eject more than ``max_ejection_percent`` of the hosts (as in Envoy, one host may always
be ejected when the percentage is above 0). ``on_success`` resets the count. An ejected host
returns by itself when its time is up; a host healthy for ``interval`` has its ejection multiplier
reduced by one. ``set_hosts(hosts)`` names the pool's hosts: a host that stays keeps its state,
a new one starts healthy, one that left is forgotten, and a failure or success of a host not in
the pool (a call that was in flight when its worker left) changes nothing. Time comes from the
injected clock.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from edgecloud.clock import Clock
from gateway.config import OutlierDetectionSettings

log = logging.getLogger(__name__)


@dataclass
class HostHealth:
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float | None = None
    healthy_since: float = 0.0


class OutlierDetector:
    def __init__(self, settings: OutlierDetectionSettings, clock: Clock):
        self.settings = settings
        self.clock = clock
        self._hosts: dict[str, HostHealth] = {}
        self.total_ejections = 0

    def set_hosts(self, hosts: list[str]) -> None:
        now = self.clock.now()
        self._hosts = {host: self._hosts.get(host) or HostHealth(healthy_since=now) for host in hosts}

    def is_ejected(self, host: str) -> bool:
        health = self._hosts.get(host)
        if health is None:
            return False
        now = self.clock.now()
        if health.ejected_until is not None:
            if now < health.ejected_until:
                return True
            health.ejected_until = None
            health.healthy_since = now
            log.info("cloud worker %s returns from ejection", host)
        interval = self.settings.interval_ms / 1000.0
        if health.ejections and now - health.healthy_since >= interval:
            steps = int((now - health.healthy_since) // interval)
            health.ejections = max(0, health.ejections - steps)
            health.healthy_since += steps * interval
        return False

    def ejected_count(self) -> int:
        return sum(1 for host in self._hosts if self.is_ejected(host))

    def on_success(self, host: str) -> None:
        health = self._hosts.get(host)
        if health is not None:
            health.consecutive_failures = 0

    def on_failure(self, host: str) -> bool:
        """Count a server-side failure; True when it ejected the host."""
        health = self._hosts.get(host)
        if health is None:
            return False
        health.consecutive_failures += 1
        if health.consecutive_failures < self.settings.consecutive_5xx or self.is_ejected(host):
            return False
        if self.settings.max_ejection_percent <= 0:
            return False
        allowed = max(1, math.floor(len(self._hosts) * self.settings.max_ejection_percent / 100.0))
        if self.ejected_count() >= allowed:
            return False
        health.ejections += 1
        duration = min(self.settings.base_ejection_time_ms * health.ejections, self.settings.max_ejection_time_ms)
        health.ejected_until = self.clock.now() + duration / 1000.0
        health.consecutive_failures = 0
        self.total_ejections += 1
        log.warning("cloud worker %s ejected for %.1fs (ejection %d)", host, duration / 1000.0, health.ejections)
        return True
