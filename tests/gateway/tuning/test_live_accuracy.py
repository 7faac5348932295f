"""Acceptance: ``edgecloud tune`` on a recorded trace recommends settings whose simulated p99 and
edge share match what the live gateway then measures, within 10%.

A real edge agent process sits behind a fault proxy that plays the same delay pattern twice: once
under the gateway's default routing while ``tune record`` records, once under the recommended
settings while the clients measure. The cloud is, by default, the same edge agent behind a second
proxy adding a constant WAN delay: any Open Inference Protocol server can be a cloud worker, and
on a small shared CPU box the torch cloud worker saturates as traffic moves to it, so its RTT
depends on the routing being tuned (an effect the simulator does not model, by contract).
``EDGECLOUD_TUNE_LIVE_CLOUD=worker`` runs the test against the real cloud worker instead (a GPU
box, or a quiet one).

A busy shared machine can stop this process, or the edge agent's, for a second, delaying every
request in flight; no trace predicts that. A comparison that misses the 10% during which this
process's event loop was late, or a request sent while no delay was added took longer, than
``STALL_LIMIT_S`` is made again (record, recommend, measure), and so is a recording so stalled
that no setting meets the goal; one that misses without such a stall fails; if every attempt
stalled, the test is skipped and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

import pytest

from edgecloud_tools.fault_proxy import FaultProxy
from gateway.config import RoutingSettings, load_gateway_config
from gateway.tuning import Summary, cli
from tests.gateway.tuning.live import LiveRun, live_summary, play, running_gateway

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]

PATTERN = ((0, 3.0), (150, 3.0), (300, 3.0), (0, 3.0), (300, 3.0), (0, 3.0))
"""Fast; slower but under any sensible threshold; over it (twice); recovered each time."""
RATE = 20.0
"""Requests per second, open loop (360 per run: p99 is the 4th slowest)."""
WARM_UP = ((0, 1.0),)
WAN_DELAY_S = 0.04
GOAL = "p99<=300"
TOLERANCE = 0.10
STALL_LIMIT_S = 0.2
"""A run with a stall longer than this (``LiveRun.stall_s``) may be measured again."""
ATTEMPTS = 2


def tune(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edgecloud tune")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


@pytest.fixture
async def cloud_address(request, edge_process):
    if os.environ.get("EDGECLOUD_TUNE_LIVE_CLOUD") == "worker":
        yield request.getfixturevalue("shared_cloud").address
        return
    host, port = edge_process.address.rsplit(":", 1)
    wan = FaultProxy(host, int(port))
    await wan.start()
    wan.set_delay(WAN_DELAY_S)
    yield f"127.0.0.1:{wan.port}"
    await wan.stop()


async def _record(edge: str, cloud: str, proxy: FaultProxy, trace: Path) -> LiveRun:
    """Play the pattern under the default routing while ``tune record`` records the gateway."""
    async with running_gateway(edge, cloud, {}) as gateway:
        await play(f"127.0.0.1:{gateway.grpc_port}", proxy, WARM_UP, rate=RATE)
        recorder = asyncio.create_task(asyncio.to_thread(
            tune, "record", "--gateway-http", f"127.0.0.1:{gateway.http_port}",
            "--duration", str(sum(seconds for _, seconds in PATTERN) + 0.5), "--poll-s", "1", "--out", str(trace)))
        run = await play(f"127.0.0.1:{gateway.grpc_port}", proxy, PATTERN, rate=RATE)
        assert await recorder == 0
    return run


async def _measure(edge: str, cloud: str, proxy: FaultProxy, routing: RoutingSettings) -> tuple[LiveRun, Summary]:
    """Play the pattern under ``routing``; the figures the clients saw."""
    async with running_gateway(edge, cloud, routing.model_dump()) as gateway:
        await play(f"127.0.0.1:{gateway.grpc_port}", proxy, WARM_UP, rate=RATE)
        before = gateway.dataplane.policy.transitions
        run = await play(f"127.0.0.1:{gateway.grpc_port}", proxy, PATTERN, rate=RATE)
        return run, live_summary(run.outcomes, gateway.dataplane.policy.transitions - before)


async def test_recommended_settings_behave_live_as_simulated(edge_proxy, cloud_address, tmp_path):
    edge = f"127.0.0.1:{edge_proxy.port}"
    trace, snippet, results = tmp_path / "trace.json", tmp_path / "routing.yaml", tmp_path / "results.json"
    stalls = []
    for _ in range(ATTEMPTS):
        recording = await _record(edge, cloud_address, edge_proxy, trace)
        assert not [o for o in recording.outcomes if o.error]
        status = await asyncio.to_thread(
            tune, "recommend", "--trace", str(trace), "--goal", GOAL, "--max-hedge-rate", "0.1",
            "--yaml", str(snippet), "--plot", str(tmp_path / "tune.png"), "--json", str(results))
        if status != 0:  # a stall in the recording puts second-long RTTs in the trace: no setting helps
            assert recording.stall_s > STALL_LIMIT_S, "the goal should be reachable on this pattern"
            stalls.append(recording.stall_s)
            continue
        assert (tmp_path / "tune.png").stat().st_size > 10_000
        recommended = load_gateway_config(snippet).routing  # the snippet is a valid gateway config
        simulated = json.loads(results.read_text())["recommended"]["summary"]

        run, live = await _measure(edge, cloud_address, edge_proxy, recommended)
        assert not [o for o in run.outcomes if o.error]
        figures = (f"simulated: edge {simulated['edge_share']:.1%}, p99 {simulated['p99_ms']:.0f} ms, "
                   f"{simulated['transitions']} switches; live: edge {live.edge_share:.1%}, p99 {live.p99_ms:.0f} ms, "
                   f"{live.transitions} switches (stalls: recording {recording.stall_s:.2f} s, "
                   f"live {run.stall_s:.2f} s)")
        print(f"\n{snippet.read_text()}{figures}")
        close = (abs(simulated["p99_ms"] - live.p99_ms) <= TOLERANCE * live.p99_ms
                 and abs(simulated["edge_share"] - live.edge_share) <= TOLERANCE * live.edge_share)
        if close:
            return
        stalled = max(recording.stall_s, run.stall_s)
        assert stalled > STALL_LIMIT_S, f"simulation and live run differ by more than {TOLERANCE:.0%}: {figures}"
        stalls.append(stalled)  # a stall of the machine, not a routing difference: measure again
    pytest.skip(f"this machine stalled this process for {', '.join(f'{s:.2f}' for s in stalls)} s in each "
                f"attempt: too busy to compare latencies within {TOLERANCE:.0%}")
