"""The gateway's Prometheus metrics, on a registry of its own (several gateways per process in
tests never collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

INTER_TOKEN_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class CacheMetrics:
    """The result cache's metrics (``gateway.cache``), on the gateway's registry."""

    def __init__(self, registry: CollectorRegistry):
        r = registry
        self.lookups = Counter("edgecloud_gateway_cache_lookups", "Cache lookups by result (hit, miss, "
                               "quality_miss, expired, corrupt, error, breaker_open, bypass)", ["result"], registry=r)
        self.errors = Counter("edgecloud_gateway_cache_errors", "Cache backend failures by operation and kind",
                              ["op", "kind"], registry=r)
        self.writes = Counter("edgecloud_gateway_cache_writes", "Cache writes by result", ["result"], registry=r)
        self.flights = Counter("edgecloud_gateway_cache_flights", "Cache misses by single-flight role (a leader "
                               "computes, a follower shares its answer)", ["role"], registry=r)
        self.early_refreshes = Counter("edgecloud_gateway_cache_early_refreshes",
                                       "Background refreshes started by XFetch before expiry", registry=r)
        self.breaker_state = Gauge("edgecloud_gateway_cache_breaker_state", "1 for the Redis breaker's state",
                                   ["state"], registry=r)
        self.breaker_transitions = Counter("edgecloud_gateway_cache_breaker_transitions",
                                           "Redis breaker state changes by new state", ["state"], registry=r)
        self.backend = Gauge("edgecloud_gateway_cache_backend", "1 for the cache backend in use",
                             ["backend"], registry=r)
        self.near_hits = Counter("edgecloud_gateway_cache_near_hits", "Lookups answered by the in-process "
                                 "near cache in front of Redis (no round trip)", registry=r)


class BackendRtt:
    """``edgecloud_gateway_backend_rtt_seconds{backend, statistic}``: each backend's RTT EWMA and
    windowed p95, computed when Prometheus scrapes (``source``: by backend name, ``ewma_ms`` and
    ``p95_ms``, None while unknown), never on the serving path. Set on every probe round before,
    the p95's pass and sort over a window that grows with the request rate took ~1% of a busy
    gateway's event loop (py-spy, 2,200 req/s). A backend the source no longer names has no series."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, Mapping[str, float | None]]] = dict

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("edgecloud_gateway_backend_rtt_seconds", "Backend RTT statistics",
                                   labels=["backend", "statistic"])
        for name, stats in self.source().items():
            for key, statistic in (("ewma_ms", "ewma"), ("p95_ms", "p95")):
                if stats[key] is not None:
                    family.add_metric([name, statistic], stats[key] / 1000.0)
        yield family


class GatewayMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter("edgecloud_gateway_route_decisions", "Routing decisions by route and reason",
                                 ["route", "reason"], registry=r)
        self.served = Counter("edgecloud_gateway_served", "Answered requests by who served them and why",
                              ["served_by", "reason"], registry=r)
        self.errors = Counter("edgecloud_gateway_errors", "Requests answered with an error, by status",
                              ["code"], registry=r)
        self.latency = Histogram("edgecloud_gateway_request_seconds", "Gateway request latency by who served it",
                                 ["served_by"], buckets=LATENCY_BUCKETS, registry=r)
        self.backend_rtt = BackendRtt()
        r.register(self.backend_rtt)
        self.route_state = Gauge("edgecloud_gateway_route_state", "1 for the current routing state",
                                 ["state"], registry=r)
        self.hedges = Counter("edgecloud_gateway_hedges", "Requests hedged to the cloud, by winner",
                              ["winner"], registry=r)
        self.escalations = Counter("edgecloud_gateway_escalations", "Unsure edge answers of classifiers, by outcome: "
                                   "escalated (the cloud answered), hedge (a running hedge answered), kept (the "
                                   "cloud could not answer in time: the edge's answer returned)", ["outcome"],
                                   registry=r)
        self.retries = Counter("edgecloud_gateway_retries", "Retries by outcome of the budget check",
                               ["outcome"], registry=r)
        self.ejections = Counter("edgecloud_gateway_ejections", "Cloud workers ejected as outliers", registry=r)
        self.reloads = Counter("edgecloud_gateway_config_reloads", "Config reloads by result", ["result"], registry=r)
        self.discarded_samples = Counter("edgecloud_gateway_discarded_latency_samples",
                                         "Backend latency samples left out because the gateway's own event loop "
                                         "stalled while they were taken", registry=r)
        self.backend_up = Gauge("edgecloud_gateway_backend_up", "1 when a backend is up and not ejected",
                                ["backend"], registry=r)
        self.ttft = Histogram("edgecloud_gateway_time_to_first_token_seconds",
                              "Time from a stream's start on a backend to its first token, by side",
                              ["backend"], buckets=LATENCY_BUCKETS, registry=r)
        self.inter_token = Histogram("edgecloud_gateway_inter_token_seconds",
                                     "Time between a stream's chunks, by side", ["backend"],
                                     buckets=INTER_TOKEN_BUCKETS, registry=r)
        self.active_streams = Gauge("edgecloud_gateway_active_streams", "Streams being answered now", registry=r)
        self.stream_hedges = Counter("edgecloud_gateway_stream_hedges", "First-token hedges: started, and won by "
                                     "which side", ["event"], registry=r)
        self.midstream_failovers = Counter("edgecloud_gateway_midstream_failovers",
                                           "Streams continued on another side mid-answer, from and to",
                                           ["from_side", "to_side"], registry=r)
        self.stream_cache = Counter("edgecloud_gateway_stream_cache", "Streams answered by the cache: hit "
                                    "(replayed), joined (shared a live generation), stored", ["result"],
                                    registry=r)
        # What an autoscaler and an operator need: load now, and the pool's membership.
        self.inflight = Gauge("edgecloud_gateway_inflight_requests", "Requests being answered now (admitted, "
                              "not yet answered), streams included", registry=r)
        self.backend_outstanding = Gauge("edgecloud_gateway_backend_outstanding", "Calls in flight to each "
                                         "backend (sampled every probe round)", ["backend"], registry=r)
        self.cloud_workers = Gauge("edgecloud_gateway_cloud_workers", "Cloud workers in the pool by where they "
                                   "come from (configured, discovered), and those draining after removal",
                                   ["source"], registry=r)
        self.discovery_resolutions = Counter("edgecloud_gateway_discovery_resolutions", "Resolutions of "
                                             "cloud.discovery.dns by result (ok, empty, error, timeout)",
                                             ["result"], registry=r)
        self.discovery_changes = Counter("edgecloud_gateway_discovery_changes", "Cloud worker addresses "
                                         "discovery added and removed", ["change"], registry=r)
        self.cache = CacheMetrics(r)
        # Children of the per-request families by label values: ``labels()`` costs microseconds
        # (it validates and joins the values every time); these sets are small and fixed.
        self._answered: dict[tuple[str, str], tuple] = {}
        self._decided: dict[tuple[str, str], object] = {}

    def count_answer(self, served_by: str, reason: str, seconds: float) -> None:
        """One answered request: ``served`` by who and why, and its latency by who."""
        children = self._answered.get((served_by, reason))
        if children is None:
            children = (self.served.labels(served_by, reason), self.latency.labels(served_by))
            self._answered[(served_by, reason)] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_decision(self, route: str, reason: str) -> None:
        """One routing decision."""
        child = self._decided.get((route, reason))
        if child is None:
            child = self._decided[(route, reason)] = self.decisions.labels(route, reason)
        child.inc()

    def forget_backend(self, name: str) -> None:
        """Drop the per-backend series of a worker that left the pool (discovery churns names)."""
        for family, labels in ((self.backend_up, (name,)), (self.backend_outstanding, (name,))):
            try:
                family.remove(*labels)
            except KeyError:
                pass

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
