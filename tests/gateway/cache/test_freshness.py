"""TTL expiry and XFetch early refresh with an injected random source."""

from __future__ import annotations

import math

from gateway.cache.envelope import Entry, Provenance
from gateway.cache.freshness import Freshness
from protos import inference_pb2 as pb


def entry(expires_at=100.0, compute_s=1.0) -> Entry:
    return Entry(pb.ModelInferResponse(), Provenance.EDGE, 0.0, expires_at, compute_s)


def test_expired_from_expires_at_on():
    assert not Freshness.expired(entry(100.0), 99.999)
    assert Freshness.expired(entry(100.0), 100.0)


def test_refresh_probability_grows_as_expiry_nears():
    # refresh iff now - delta*beta*ln(U) >= expiry  <=>  U <= exp(-(expiry - now) / (delta*beta))
    def refresh_share(now):
        freshness = Freshness(1.0)
        hits = 0
        for i in range(1, 1001):
            freshness._rand = lambda u=i / 1001: 1.0 - u  # U = u, evenly spread over (0, 1)
            hits += freshness.refresh_early(entry(100.0, 1.0), now)
        return hits / 1000

    far, near, nearer = refresh_share(90.0), refresh_share(99.0), refresh_share(99.9)
    assert far < 0.001 and abs(near - math.exp(-1)) < 0.01 and abs(nearer - math.exp(-0.1)) < 0.01


def test_longer_compute_refreshes_earlier_and_beta_zero_never_does():
    assert Freshness(1.0, rand=lambda: 0.5).refresh_early(entry(100.0, 10.0), 95.0)  # 95 + 10*ln2 > 100
    assert not Freshness(1.0, rand=lambda: 0.5).refresh_early(entry(100.0, 1.0), 95.0)
    assert not Freshness(0.0, rand=lambda: 0.999999).refresh_early(entry(100.0, 10.0), 99.99)
