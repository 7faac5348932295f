"""Config hot reload: file change and SIGHUP apply a valid config without dropping in-flight
requests; a bad one is refused and the old config stays."""

from __future__ import annotations

import asyncio
import signal
import time

import grpc
import pytest
import yaml

from edgecloud_tools.stack import free_port, gateway_config, launch, wait_ready
from gateway.config import load_gateway_config
from gateway.server import GatewayServer
from bench.load import text_request
from tests.gateway.conftest import run_load
from protos import inference_pb2_grpc as pb_grpc


def write(path, config):
    path.write_text(yaml.safe_dump(config))


async def test_file_change_reloads_and_bad_config_keeps_the_old(tmp_path, edge_process, shared_cloud, caplog):
    path = tmp_path / "gateway.yaml"
    config = gateway_config(0, edge_process.address, [shared_cloud.address], routing={"threshold_ms": 200})
    config["reload_poll_ms"] = 50
    write(path, config)
    server = GatewayServer(load_gateway_config(path), path)
    await server.start()
    try:
        address = f"127.0.0.1:{server.grpc_port}"

        async def change_config(t0):
            await asyncio.sleep(0.5)
            config["routing"]["threshold_ms"] = 350
            write(path, config)
            for _ in range(100):
                await asyncio.sleep(0.05)
                if server.dataplane.config.routing.threshold_ms == 350:
                    break
            path.write_text("routing:\n  threshold_ms: -5\n")
            await server.reload()
            await asyncio.sleep(0.5)

        # The load lasts until the scenario ends, however late a busy machine runs it.
        outcomes = await run_load(address, duration_s=None, concurrency=4, on_tick=change_config)
        assert outcomes and not [o for o in outcomes if o.error]
        assert server.dataplane.config.routing.threshold_ms == 350  # the bad file was refused
        assert server.dataplane.policy.settings.threshold_ms == 350
        assert "routing.threshold_ms" in caplog.text and "keeping the running config" in caplog.text
        assert server.dataplane.metrics.reloads.labels("refused")._value.get() >= 1
    finally:
        await server.stop(0.5)


async def test_reload_changes_cloud_workers(tmp_path, edge_process, shared_cloud):
    path = tmp_path / "gateway.yaml"
    config = gateway_config(0, None, ["127.0.0.1:9"])
    write(path, config)
    server = GatewayServer(load_gateway_config(path), path)
    await server.start()
    try:
        config["cloud"]["workers"] = [shared_cloud.address]
        write(path, config)
        assert await server.reload() is None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(["new pool"]),
                                                                                  timeout=10)
        assert response.parameters["served_by"].string_param == "cloud"
    finally:
        await server.stop(0.5)


@pytest.mark.slow
def test_gateway_process_sighup_reload_and_sigterm_drain(tmp_path, edge_process, shared_cloud):
    port = free_port()
    config = gateway_config(port, edge_process.address, [shared_cloud.address], routing={"threshold_ms": 200})
    gateway = launch("gateway", config, tmp_path)
    try:
        wait_ready(gateway, 30)
        config["routing"]["threshold_ms"] = 275
        gateway.config_path.write_text(yaml.safe_dump(config))
        gateway.send(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "threshold 275 ms" not in gateway.log_tail(20000):
            assert time.monotonic() < deadline, gateway.log_tail()
            time.sleep(0.1)

        async def load_then_sigterm():
            async def stop_soon(t0):
                await asyncio.sleep(2.0)
                gateway.send(signal.SIGTERM)
                marks["term"] = time.monotonic() - t0  # judged from when it really happened
                await asyncio.sleep(0.5)
            return await run_load(gateway.address, duration_s=None, concurrency=4, on_tick=stop_soon)

        marks = {}
        outcomes = asyncio.run(load_then_sigterm())
        assert gateway.proc.wait(timeout=15) == 0
        # A second's margin: a request stamped just before SIGTERM may reach the gateway after it
        # (a busy machine), and then is refused as it should be.
        started_before_stop = [o for o in outcomes if o.started < marks["term"] - 1.0]
        assert started_before_stop and not [o for o in started_before_stop if o.error]
    finally:
        gateway.stop()
