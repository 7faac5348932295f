"""Cloud workers from DNS (``gateway.discovery``) on a resolver the test controls and virtual time:
addresses become workers, vanished ones are drained, a failed resolution never changes the pool,
an empty answer empties it only after its grace; and the dataplane keeps the same ``Backend``
(outlier state included) for an address that stays, with the config validated at load."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from edgecloud.config import ConfigError, load_config
from edgecloud.errors import Unavailable
from gateway.backend import CLOUD
from gateway.config import ENV_PREFIX, DiscoverySettings, GatewayConfig, RoutingSettings
from gateway.dataplane import GatewayDataplane
from gateway.discovery import NameNotFound, SystemResolver, WorkerDiscovery, join_address, worker_name
from gateway.latency import LatencyMonitor
from gateway.metrics import GatewayMetrics
from gateway.probes import Prober
from gateway.routing import RoutingPolicy
from tests.gateway.fakes import FakeBackend, edge, request
from tests.support.virtual_clock import VirtualClock

DNS = "workers.test.svc:8201"


class FakeResolver:
    """Answers what the test set: a list of IPs, an exception to raise, or ``HANG`` (never answers)."""

    HANG = object()

    def __init__(self, answer=()):
        self.answer = answer
        self.calls: list[tuple[str, int]] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answer = self.answer
        if answer is self.HANG:
            await asyncio.Event().wait()
        if isinstance(answer, BaseException):
            raise answer
        return list(answer)


class ClosingBackend(FakeBackend):
    """A fake cloud worker at ``address`` that records ``close``."""

    def __init__(self, *args, address: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.address = address
        self.closed = False

    async def infer(self, request, timeout_s):
        if self.closed:
            raise AssertionError(f"{self.name} was used after close")
        return await super().infer(request, timeout_s)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def discovery(clock, resolver, applied: list, metrics=None, **settings) -> WorkerDiscovery:
    return WorkerDiscovery(DiscoverySettings(dns=DNS, **settings), applied.append, clock=clock, sleep=clock.sleep,
                           resolver=resolver, metrics=metrics)


def counted(metrics: GatewayMetrics, result: str) -> float:
    return metrics.discovery_resolutions.labels(result)._value.get()


# --- WorkerDiscovery ------------------------------------------------------------------------------

async def test_addresses_become_sorted_worker_addresses_and_only_changes_are_applied(clock):
    resolver, applied = FakeResolver(["10.0.0.2", "10.0.0.1", "10.0.0.2", "fd00::7"]), []
    found = discovery(clock, resolver, applied)
    assert await found.refresh() == ["10.0.0.1:8201", "10.0.0.2:8201", "[fd00::7]:8201"]
    assert resolver.calls == [("workers.test.svc", 8201)]
    await found.refresh()
    assert len(applied) == 1, "an unchanged answer applies nothing"
    resolver.answer = ["10.0.0.3", "10.0.0.1"]
    await found.refresh()
    assert applied[-1] == ["10.0.0.1:8201", "10.0.0.3:8201"]


async def test_a_failed_resolution_keeps_the_known_workers_and_is_logged_once(clock, caplog):
    metrics = GatewayMetrics()
    resolver, applied = FakeResolver(["10.0.0.1"]), []
    found = discovery(clock, resolver, applied, metrics)
    await found.refresh()
    resolver.answer = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    with caplog.at_level(logging.INFO, logger="gateway.discovery"):
        for _ in range(3):
            assert await found.refresh() == ["10.0.0.1:8201"]
        resolver.answer = ["10.0.0.1"]
        await found.refresh()
    assert applied == [["10.0.0.1:8201"]]
    assert counted(metrics, "error") == 3 and counted(metrics, "ok") == 2
    assert caplog.text.count("failed") == 1 and "resolves again" in caplog.text


async def test_a_resolver_that_never_answers_times_out_and_changes_nothing(clock):
    metrics = GatewayMetrics()
    resolver, applied = FakeResolver(["10.0.0.1"]), []
    found = discovery(clock, resolver, applied, metrics, timeout_ms=500)
    await clock.run(found.refresh())
    resolver.answer = FakeResolver.HANG
    started = clock.now()
    assert await clock.run(found.refresh()) == ["10.0.0.1:8201"]
    assert clock.now() - started == pytest.approx(0.5)
    assert counted(metrics, "timeout") == 1 and applied == [["10.0.0.1:8201"]]


@pytest.mark.parametrize("empty", [[], NameNotFound("workers.test.svc")], ids=["no-address", "nxdomain"])
async def test_an_empty_answer_empties_the_pool_only_after_its_grace(clock, empty):
    metrics = GatewayMetrics()
    resolver, applied = FakeResolver(["10.0.0.1"]), []
    found = discovery(clock, resolver, applied, metrics, empty_grace_ms=10_000)
    await found.refresh()
    resolver.answer = empty
    assert await found.refresh() == ["10.0.0.1:8201"]
    await clock.advance(6)
    assert await found.refresh() == ["10.0.0.1:8201"]
    # The name answers again: the grace starts over at the next empty answer.
    resolver.answer = ["10.0.0.1"]
    await found.refresh()
    resolver.answer = empty
    await found.refresh()
    await clock.advance(9.9)
    assert await found.refresh() == ["10.0.0.1:8201"]
    await clock.advance(0.1)
    assert await found.refresh() == []
    assert applied == [["10.0.0.1:8201"], []]
    assert counted(metrics, "empty") == 5 and counted(metrics, "error") == 0


async def test_with_no_grace_an_empty_answer_never_empties_the_pool(clock):
    resolver, applied = FakeResolver(["10.0.0.1"]), []
    found = discovery(clock, resolver, applied, empty_grace_ms=None)
    await found.refresh()
    resolver.answer = []
    await clock.advance(86_400)
    assert await found.refresh() == ["10.0.0.1:8201"] and len(applied) == 1


async def test_an_empty_answer_before_any_worker_was_found_applies_at_once(clock):
    applied = []
    found = discovery(clock, FakeResolver([]), applied)
    assert await found.refresh() == [] and applied == [[]]


async def test_run_resolves_every_refresh_ms(clock):
    resolver = FakeResolver(["10.0.0.1"])
    found = discovery(clock, resolver, [], refresh_ms=2000)
    task = asyncio.ensure_future(found.run())
    await clock.advance(5.0)
    assert len(resolver.calls) == 3  # at 0, 2 and 4 s
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_addresses_and_names():
    assert join_address("10.1.2.3", 8201) == "10.1.2.3:8201"
    assert join_address("fd00::1", 8201) == "[fd00::1]:8201"
    assert worker_name("cloud", "10.1.2.3:8201") == "cloud-10.1.2.3:8201"


async def test_the_system_resolver_reads_the_hosts_file_and_reports_unknown_names():
    assert "127.0.0.1" in await SystemResolver("ipv4").resolve("localhost", 8201)
    with pytest.raises(NameNotFound):
        await SystemResolver().resolve("no-such-worker.invalid", 8201)


# --- config ----------------------------------------------------------------------------------------

def test_discovery_replaces_the_default_worker_and_is_enough_for_a_cloud_only_gateway():
    config = GatewayConfig.model_validate({"edge": {"address": None}, "cloud": {"discovery": {"dns": DNS}}})
    assert config.cloud.workers == [] and config.cloud.discovery.host_port == ("workers.test.svc", 8201)
    both = GatewayConfig.model_validate({"cloud": {"workers": ["10.9.9.9:1"], "discovery": {"dns": DNS}}})
    assert both.cloud.workers == ["10.9.9.9:1"]
    assert GatewayConfig().cloud.workers == ["127.0.0.1:8201"], "no discovery: the default worker stays"


@pytest.mark.parametrize("dns", ["workers.test.svc", "workers:http", "workers:0", "workers:70000", "a b:1"])
def test_a_bad_discovery_name_is_refused_at_load_with_its_path(tmp_path, dns):
    path = tmp_path / "gateway.yaml"
    path.write_text(f"cloud:\n  discovery:\n    dns: '{dns}'\n")
    with pytest.raises(ConfigError, match=r"cloud\.discovery"):
        load_config(GatewayConfig, path, ENV_PREFIX, environ={})


def test_discovery_can_be_set_from_the_environment():
    config = load_config(GatewayConfig, None, ENV_PREFIX,
                         environ={f"{ENV_PREFIX}CLOUD__DISCOVERY__DNS": DNS,
                                  f"{ENV_PREFIX}CLOUD__DISCOVERY__REFRESH_MS": "1000"})
    assert config.cloud.discovery.refresh_ms == 1000 and config.cloud.workers == []


# --- the dataplane (and its prober) ---------------------------------------------------------------------------------

class FakeWorkersDataplane(GatewayDataplane):
    """The real dataplane whose cloud workers are ``ClosingBackend`` fakes on its virtual clock."""

    def _make_worker(self, config, name, address):
        return ClosingBackend(name, CLOUD, self.clock, address=address)


async def make_dataplane(clock, resolver, *, workers=(), cloud=None, **discovery_settings) -> GatewayDataplane:
    config = GatewayConfig.model_validate({
        "edge": {"address": "127.0.0.1:9"},
        "cloud": {"workers": list(workers), "discovery": {"dns": DNS, **discovery_settings}, "drain_timeout_ms": 5000,
                  **(cloud or {})},
        "routing": {"warmup_samples": 0, "hedge_after_ms": 200}})
    dataplane = FakeWorkersDataplane(config, clock=clock, sleep=clock.sleep, resolver=resolver)
    dataplane.dispatcher.edge = edge(clock)
    await dataplane.cache.start()
    dataplane.set_ready(True)
    return dataplane


def cloud_request(request_id: str = "r"):
    asking = request(request_id)
    asking.parameters["quality"] = "cloud"
    return asking


def names(dataplane) -> list[str]:
    return [w.name for w in dataplane.pool.workers]


async def test_discovered_addresses_join_the_configured_workers(clock):
    resolver = FakeResolver(["10.0.0.1", "10.0.0.2"])
    dataplane = await make_dataplane(clock, resolver, workers=["10.0.0.2:8201", "static:1"])
    await dataplane.discovery.refresh()
    # 10.0.0.2:8201 is configured already (as cloud-0): not added twice.
    assert names(dataplane) == ["cloud-0", "cloud-1", "cloud-10.0.0.1:8201"]
    assert dataplane.metrics.cloud_workers.labels("discovered")._value.get() == 1
    assert dataplane.metrics.cloud_workers.labels("configured")._value.get() == 2
    response = await clock.run(dataplane.infer(cloud_request()))
    assert response.parameters["served_by"] == "cloud"
    await dataplane.stop()


async def test_a_worker_that_stays_keeps_its_backend_and_outlier_state(clock):
    resolver = FakeResolver(["10.0.0.1", "10.0.0.2"])
    dataplane = await make_dataplane(clock, resolver)
    await dataplane.discovery.refresh()
    first = {w.name: w for w in dataplane.pool.workers}
    flaky = first["cloud-10.0.0.1:8201"]
    for _ in range(dataplane.config.cloud.outlier_detection.consecutive_5xx):
        dataplane.pool.on_failure(flaky)
    assert dataplane.pool.detector.is_ejected(flaky.name)
    resolver.answer = ["10.0.0.3", "10.0.0.2", "10.0.0.1"]
    await dataplane.discovery.refresh()
    assert names(dataplane) == ["cloud-10.0.0.1:8201", "cloud-10.0.0.2:8201", "cloud-10.0.0.3:8201"]
    now = {w.name: w for w in dataplane.pool.workers}
    assert all(now[name] is backend for name, backend in first.items())
    assert dataplane.pool.detector.is_ejected(flaky.name), "ejection follows the address across refreshes"
    assert [w.name for w in dataplane.pool.candidates()] == ["cloud-10.0.0.2:8201", "cloud-10.0.0.3:8201"]
    await dataplane.stop()


async def test_a_vanished_worker_is_drained_then_closed_and_its_calls_finish(clock):
    resolver = FakeResolver(["10.0.0.1", "10.0.0.2"])
    dataplane = await make_dataplane(clock, resolver)
    await dataplane.discovery.refresh()
    leaving, staying = dataplane.pool.workers
    leaving.latency_s = staying.latency_s = 1.0
    # Two calls in flight, one on each worker (least-request spreads them).
    calls = [asyncio.ensure_future(dataplane.infer(cloud_request(f"r{i}"))) for i in range(2)]
    await clock.advance(0.1)
    assert leaving.outstanding == 1 and staying.outstanding == 1
    resolver.answer = ["10.0.0.2"]
    await dataplane.discovery.refresh()
    assert dataplane.pool.workers == [staying]
    assert dataplane.metrics.cloud_workers.labels("draining")._value.get() == 1
    later = asyncio.ensure_future(dataplane.infer(cloud_request("later")))
    await clock.advance(0.5)
    assert not leaving.closed, "closed only once its call in flight ended"
    await clock.advance(1.0)
    answers = await asyncio.gather(*calls, later)
    assert {a.parameters["answered_by"] for a in answers[:2]} == {leaving.name, staying.name}
    assert answers[2].parameters["answered_by"] == staying.name, "no new call goes to a draining worker"
    assert leaving.closed and not staying.closed and leaving.calls == 1
    assert dataplane.metrics.cloud_workers.labels("draining")._value.get() == 0
    assert dataplane._retired == []
    await dataplane.stop()
    assert staying.closed


async def test_a_drain_ends_at_the_drain_timeout(clock):
    resolver = FakeResolver(["10.0.0.1"])
    dataplane = await make_dataplane(clock, resolver, cloud={"attempt_timeout_ms": 60_000})
    await dataplane.discovery.refresh()
    (stuck,) = dataplane.pool.workers
    stuck.latency_s = 60.0
    call = asyncio.ensure_future(dataplane.infer(cloud_request()))
    await clock.advance(0.1)
    resolver.answer = ["10.0.0.2"]
    await dataplane.discovery.refresh()
    await clock.advance(4.8)
    assert not stuck.closed
    await clock.advance(0.3)  # drain_timeout_ms = 5000
    assert stuck.closed
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    await dataplane.stop()


async def test_a_dns_failure_never_empties_the_pool_and_zero_addresses_do_after_the_grace(clock):
    resolver = FakeResolver(["10.0.0.1"])
    dataplane = await make_dataplane(clock, resolver, empty_grace_ms=3000)
    await dataplane.discovery.refresh()
    (worker,) = dataplane.pool.workers
    resolver.answer = OSError("resolver unreachable")
    await clock.advance(3600)
    await dataplane.discovery.refresh()
    assert dataplane.pool.workers == [worker]
    resolver.answer = []
    await dataplane.discovery.refresh()
    await clock.advance(2.9)
    await dataplane.discovery.refresh()
    assert dataplane.pool.workers == [worker]
    await clock.advance(0.1)
    await dataplane.discovery.refresh()
    assert dataplane.pool.workers == []
    with pytest.raises(Unavailable):
        await clock.run(dataplane.infer(cloud_request()))
    await clock.advance(0.1)
    assert worker.closed
    await dataplane.stop()


async def test_metrics_of_a_worker_that_left_are_dropped(clock):
    resolver = FakeResolver(["10.0.0.1", "10.0.0.2"])
    dataplane = await make_dataplane(clock, resolver)
    await dataplane.discovery.refresh()
    dataplane._update_gauges()
    dataplane.monitor.record("cloud-10.0.0.1:8201", 0.01)
    sample = dataplane.metrics.registry.get_sample_value
    assert sample("edgecloud_gateway_backend_up", {"backend": "cloud-10.0.0.1:8201"}) == 1
    assert sample("edgecloud_gateway_backend_outstanding", {"backend": "cloud-10.0.0.1:8201"}) == 0
    for _ in range(dataplane.config.routing.warmup_samples + 1):
        dataplane.monitor.record("cloud-10.0.0.1:8201", 0.01)
    rtt = {"backend": "cloud-10.0.0.1:8201", "statistic": "p95"}
    assert sample("edgecloud_gateway_backend_rtt_seconds", rtt) == 0.01
    resolver.answer = ["10.0.0.2"]
    await dataplane.discovery.refresh()
    assert sample("edgecloud_gateway_backend_up", {"backend": "cloud-10.0.0.1:8201"}) is None
    assert sample("edgecloud_gateway_backend_rtt_seconds", rtt) is None
    assert sample("edgecloud_gateway_backend_up", {"backend": "cloud-10.0.0.2:8201"}) == 1
    assert sample("edgecloud_gateway_discovery_changes_total", {"change": "removed"}) == 1
    assert sample("edgecloud_gateway_discovery_changes_total", {"change": "added"}) == 2
    assert set(dataplane.monitor.snapshot()) <= {"cloud-10.0.0.2:8201", "edge"}  # latency state dropped too
    await dataplane.stop()


async def test_start_resolves_before_serving_and_stop_ends_discovery(clock):
    resolver = FakeResolver(["10.0.0.1"])
    dataplane = await make_dataplane(clock, resolver, refresh_ms=1000)
    await dataplane.start()
    try:
        assert names(dataplane) == ["cloud-10.0.0.1:8201"] and len(resolver.calls) == 1
        resolver.answer = ["10.0.0.1", "10.0.0.2"]
        await clock.advance(1.0)
        assert len(resolver.calls) == 2 and len(dataplane.pool.workers) == 2
    finally:
        await dataplane.stop()
    assert dataplane._discovery_task is None
    assert all(w.closed for w in dataplane.pool.workers)
    await clock.advance(5.0)
    assert len(resolver.calls) == 2


async def test_reload_adds_changes_and_removes_discovery(clock):
    resolver = FakeResolver(["10.0.0.1"])
    base = {"edge": {"address": "127.0.0.1:9"}, "routing": {"warmup_samples": 0}}
    dataplane = FakeWorkersDataplane(GatewayConfig.model_validate({**base, "cloud": {"workers": ["static:1"]}}),
                                     clock=clock, sleep=clock.sleep, resolver=resolver)
    dataplane.dispatcher.edge = edge(clock)
    await dataplane.start()
    try:
        static = dataplane.pool.workers[0]
        # Discovery added by a reload starts at once, beside the configured worker.
        with_discovery = GatewayConfig.model_validate(
            {**base, "cloud": {"workers": ["static:1"], "discovery": {"dns": DNS, "refresh_ms": 1000}}})
        await dataplane.apply_config(with_discovery)
        await clock.advance(0)
        assert names(dataplane) == ["cloud-0", "cloud-10.0.0.1:8201"]
        discovered = dataplane.pool.workers[1]
        # Another setting of the same name: the workers stay while the next answer agrees.
        slower = GatewayConfig.model_validate(
            {**base, "cloud": {"workers": ["static:1"], "discovery": {"dns": DNS, "refresh_ms": 2000}}})
        await dataplane.apply_config(slower)
        assert dataplane.pool.workers == [static, discovered]
        await clock.advance(0)
        assert dataplane.pool.workers == [static, discovered]
        # A reload without discovery drains the discovered worker and keeps the configured one.
        await dataplane.apply_config(GatewayConfig.model_validate({**base, "cloud": {"workers": ["static:1"]}}))
        assert dataplane.pool.workers == [static] and dataplane.discovery is None
        await clock.advance(0.1)
        assert discovered.closed and not static.closed
        calls = len(resolver.calls)
        await clock.advance(10)
        assert len(resolver.calls) == calls, "discovery stopped"
    finally:
        await dataplane.stop()


async def test_the_gateway_in_flight_gauge_reads_admission_without_per_request_work(clock):
    dataplane = await make_dataplane(clock, FakeResolver(["10.0.0.1"]))
    await dataplane.discovery.refresh()
    dataplane.pool.workers[0].latency_s = 1.0
    calls = [asyncio.ensure_future(dataplane.infer(cloud_request(f"r{i}"))) for i in range(3)]
    await clock.advance(0.1)
    sample = dataplane.metrics.registry.get_sample_value
    assert sample("edgecloud_gateway_inflight_requests") == 3
    await clock.advance(1.0)
    await asyncio.gather(*calls)
    assert sample("edgecloud_gateway_inflight_requests") == 0
    await dataplane.stop()


async def test_the_prober_says_which_backend_it_probes_and_forgets_those_gone(clock):
    settings = RoutingSettings(probe_interval_ms=100, probe_timeout_ms=5000, warmup_samples=0)
    monitor = LatencyMonitor(clock, window_s=2.0, warmup=0)
    slow = ClosingBackend("cloud-10.0.0.1:8201", CLOUD, clock, latency_s=0.35)
    backends = [slow]
    prober = Prober(lambda: backends, monitor, RoutingPolicy(settings, monitor.stats("edge"), clock), settings,
                    clock=clock, sleep=clock.sleep)
    task = asyncio.ensure_future(prober.run())
    await clock.advance(0.05)
    assert prober.probing(slow)
    same_name = ClosingBackend(slow.name, CLOUD, clock)
    assert not prober.probing(same_name), "another backend of the same name is not the one probed"
    backends.clear()
    await clock.advance(0.4)
    assert not prober.probing(slow) and slow.name not in prober._running
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_closed_worker_never_opens_a_channel_again():
    """A late call on a retired worker (a metadata fetch racing its drain) fails over instead of
    opening a channel that nobody would close."""
    from edgecloud.errors import Unavailable
    from edgecloud.limits import RequestLimits
    from gateway.grpc_backend import GrpcBackend

    backend = GrpcBackend("cloud-10.0.0.9:8201", "cloud", "127.0.0.1:9", limits=RequestLimits())
    await backend.close()
    with pytest.raises(Unavailable, match="left the pool"):
        await backend.model_metadata("m", "", 1.0)
    assert backend._channel is None
