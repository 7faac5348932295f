"""``gateway.metrics``: the per-backend RTT gauge is computed at scrape time from its source."""

from __future__ import annotations

from gateway.metrics import GatewayMetrics


def test_backend_rtt_is_read_from_its_source_when_scraped():
    metrics = GatewayMetrics()
    sample = metrics.registry.get_sample_value
    reads = []
    stats = {"edge": {"ewma_ms": 4.0, "p95_ms": 9.0}, "cloud-0": {"ewma_ms": 20.0, "p95_ms": None}}

    def source():
        reads.append(1)
        return stats

    metrics.backend_rtt.source = source
    assert reads == []  # nothing computed until a scrape
    assert sample("edgecloud_gateway_backend_rtt_seconds", {"backend": "edge", "statistic": "ewma"}) == 0.004
    assert sample("edgecloud_gateway_backend_rtt_seconds", {"backend": "edge", "statistic": "p95"}) == 0.009
    assert sample("edgecloud_gateway_backend_rtt_seconds", {"backend": "cloud-0", "statistic": "ewma"}) == 0.02
    assert sample("edgecloud_gateway_backend_rtt_seconds", {"backend": "cloud-0", "statistic": "p95"}) is None
    del stats["cloud-0"]  # a backend that left: no series
    assert sample("edgecloud_gateway_backend_rtt_seconds", {"backend": "cloud-0", "statistic": "ewma"}) is None
    body, _ = metrics.exposition()
    assert b'edgecloud_gateway_backend_rtt_seconds{backend="edge",statistic="p95"} 0.009' in body


def test_without_a_source_there_are_no_rtt_series():
    metrics = GatewayMetrics()
    body, _ = metrics.exposition()
    assert b"edgecloud_gateway_backend_rtt_seconds{" not in body
