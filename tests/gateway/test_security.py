"""API keys -> tenants on both fronts, TLS and mutual TLS to upstreams and for clients, and
overload shedding — against real servers."""

from __future__ import annotations

import asyncio
import hashlib
import time

import aiohttp
import grpc
import pytest

from edgecloud.config import ServerSettings, ServerTlsSettings
from edge_agent.config import EdgeConfig, ModelSettings
from edge_agent.server import EdgeServer
from gateway.config import GatewayConfig
from gateway.server import GatewayServer
from protos import inference_pb2 as pb
from protos import inference_pb2_grpc as pb_grpc
from bench.load import text_request
from tests.support.certs import make_certs
from tests.support.waiting import wait_until

KEY_A = "tenant-a-secret-key-0001"
KEY_B = "tenant-b-secret-key-0002"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


async def _gateway(config: dict) -> GatewayServer:
    """Routing thresholds no busy machine reaches unless the test sets its own: these tests are
    about security, and expect the edge to serve."""
    config.setdefault("routing", {}).setdefault("threshold_ms", 60_000)
    server = GatewayServer(GatewayConfig.model_validate(config))
    await server.start()
    return server


async def test_api_keys_gate_both_fronts_and_name_the_tenant(edge_proxy, shared_cloud):
    gateway = await _gateway({
        "server": {"port": 0, "metrics_port": None, "http_port": 0},
        "edge": {"address": f"127.0.0.1:{edge_proxy.port}"}, "cloud": {"workers": [shared_cloud.address]},
        "auth": {"enabled": True, "keys": [{"key": KEY_A, "tenant": "a"},
                                           {"sha256": hashlib.sha256(KEY_B.encode()).hexdigest(), "tenant": "b"}]},
    })
    seen_tenants = []
    original = gateway.dataplane.dispatcher.dispatch

    async def spy(request, deadline, **kwargs):
        seen_tenants.append(request.tenant)
        return await original(request, deadline, **kwargs)

    gateway.dataplane.dispatcher.dispatch = spy
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerLive(pb.ServerLiveRequest())).live  # health stays open
            assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
            for metadata in ((), (("authorization", "Bearer wrong-key-wrong-key"),), (("authorization", "Basic x"),)):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ModelInfer(text_request(["no key"]), metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "wrong-key" not in info.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelMetadata(pb.ModelMetadataRequest(name="all-MiniLM-L6-v2"))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.ModelInfer(text_request(["key a"]), metadata=(("authorization", f"Bearer {KEY_A}"),))
            await stub.ModelInfer(text_request(["key b"]), metadata=(("x-api-key", KEY_B),))
        base = f"http://127.0.0.1:{gateway.http_port}"
        body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["rest"]}]}
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v2/health/ready") as response:
                assert response.status == 200
            async with session.post(f"{base}/v2/models/all-MiniLM-L6-v2/infer", json=body) as response:
                assert response.status == 401
            async with session.get(f"{base}/v2/models/all-MiniLM-L6-v2") as response:
                assert response.status == 401
            async with session.post(f"{base}/v2/models/all-MiniLM-L6-v2/infer", json=body,
                                    headers={"Authorization": f"Bearer {KEY_B}"}) as response:
                assert response.status == 200
        assert seen_tenants == ["a", "b", "b"]
    finally:
        await gateway.stop(0.5)


async def test_a_reload_that_turns_keys_on_or_off_applies_to_the_next_grpc_call(edge_proxy, shared_cloud):
    base = {"server": {"port": 0, "metrics_port": None}, "edge": {"address": f"127.0.0.1:{edge_proxy.port}"},
            "cloud": {"workers": [shared_cloud.address]}, "routing": {"threshold_ms": 60_000}}
    keyed = {**base, "auth": {"enabled": True, "keys": [{"key": KEY_A, "tenant": "a"}]}}
    gateway = await _gateway(dict(base))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(text_request(["open"]))
            await gateway.dataplane.apply_config(GatewayConfig.model_validate(keyed))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ModelInfer(text_request(["no key now"]))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stub.ModelInfer(text_request(["key a"]), metadata=(("authorization", f"Bearer {KEY_A}"),))
            await gateway.dataplane.apply_config(GatewayConfig.model_validate(base))
            await stub.ModelInfer(text_request(["open again"]))
    finally:
        await gateway.stop(0.5)


async def test_mutual_tls_from_sdk_to_gateway_to_edge(model_dir, shared_cloud, certs):
    from gateway.client import AsyncClient, TlsOptions

    d = certs.directory
    edge = EdgeServer(EdgeConfig(
        server=ServerSettings(port=0, tls=ServerTlsSettings(cert_file=d / "server_chain.pem",
                                                            key_file=d / "server_key.pem",
                                                            client_ca_file=d / "ca.pem")),
        models=[ModelSettings(path=model_dir, intra_op_threads=1)]))
    edge_port = await edge.start()
    tls_client = {"ca_file": str(d / "ca.pem"), "cert_file": str(d / "client_chain.pem"),
                  "key_file": str(d / "client_key.pem"), "server_name": "localhost"}
    gateway = await _gateway({
        "server": {"port": 0, "metrics_port": None, "tls": {"cert_file": str(d / "server_chain.pem"), "key_file": str(d / "server_key.pem"),
                                      "client_ca_file": str(d / "ca.pem")}},
        "edge": {"address": f"127.0.0.1:{edge_port}", "tls": tls_client},
        "cloud": {"workers": [shared_cloud.address]},
    })
    try:
        # A plaintext client cannot reach the mutual-TLS edge agent.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{edge_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(["x"]), timeout=3)
        tls = TlsOptions(root_certificates=certs.ca, client_certificate_chain=certs.client_chain,
                         client_private_key=certs.client_key, server_name_override="localhost")
        async with AsyncClient(f"127.0.0.1:{gateway.grpc_port}", tls=tls) as client:
            result = await client.embed(["over mutual TLS end to end"])
        assert result.embeddings.shape == (1, 384) and result.served_by == "edge"
        no_cert = TlsOptions(root_certificates=certs.ca, server_name_override="localhost")
        async with AsyncClient(f"127.0.0.1:{gateway.grpc_port}", tls=no_cert, timeout_s=3) as client:
            with pytest.raises(Exception):
                await client.embed(["a client without a certificate is refused"])
    finally:
        await gateway.stop(0.5)
        await edge.stop(0.5)


async def test_overload_is_shed_fast_and_accepted_work_completes(edge_proxy, shared_cloud):
    gateway = await _gateway({
        "server": {"port": 0, "metrics_port": None, "max_concurrent_requests": 4, "overload_retry_after_ms": 250},
        "edge": {"address": f"127.0.0.1:{edge_proxy.port}"},
        # slow keepalive pings: the held edge connection is not closed however long the box takes
        "cloud": {"workers": [shared_cloud.address], "keepalive_time_ms": 600_000},
        "routing": {"hedging": False, "threshold_ms": 10_000, "probe_interval_ms": 600_000},
    })
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(text_request(["metadata cached"]), timeout=10)

            async def one(i):
                start = time.monotonic()
                try:
                    await stub.ModelInfer(text_request([f"overload {i}"]), timeout=60)
                    return "ok", time.monotonic() - start, None
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), time.monotonic() - start, dict(exc.trailing_metadata() or ())

            # The edge is held until 12 have been answered: shed at once, not after queueing behind it.
            edge_proxy.stall()
            try:
                calls = [asyncio.ensure_future(one(i)) for i in range(16)]
                await wait_until(lambda: sum(c.done() for c in calls) == 12, timeout=45)
                assert gateway.dataplane.admission.peak == 4 and not any(c.result()[0] == "ok" for c in calls if c.done())
            finally:
                edge_proxy.unstall()
            results = await asyncio.gather(*calls)
        accepted = [r for r in results if r[0] == "ok"]
        shed = [r for r in results if r[0] == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert len(accepted) == 4 and len(shed) == 12
        assert all(r[2].get("retry-after") == "0.250" for r in shed)
        assert gateway.dataplane.admission.peak == 4
    finally:
        edge_proxy.restore()
        await gateway.stop(0.5)


async def test_mutual_tls_from_gateway_to_cloud_worker(certs):
    from cloud_worker.config import CloudConfig
    from cloud_worker.worker import CloudWorker

    d = certs.directory
    worker = CloudWorker(CloudConfig.model_validate({
        "server": {"port": 0, "metrics_port": None,
                   "tls": {"cert_file": str(d / "server_chain.pem"), "key_file": str(d / "server_key.pem"),
                           "client_ca_file": str(d / "ca.pem")}},
        "runtime": {"intra_op_threads": 1},
    }))
    port = await worker.start()
    tls = {"ca_file": str(d / "ca.pem"), "server_name": "localhost"}
    plain_cert = await _gateway({"server": {"port": 0, "metrics_port": None}, "edge": {"address": None},
                                 "cloud": {"workers": [f"127.0.0.1:{port}"], "tls": tls}})
    gateway = await _gateway({"server": {"port": 0, "metrics_port": None}, "edge": {"address": None},
                              "cloud": {"workers": [f"127.0.0.1:{port}"],
                                        "tls": {**tls, "cert_file": str(d / "client_chain.pem"),
                                                "key_file": str(d / "client_key.pem")}}})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(["mtls"]), timeout=10)
        assert response.parameters["served_by"].string_param == "cloud"
        # Without a client certificate the worker refuses the gateway: no backend can serve.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{plain_cert.grpc_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(text_request(["no cert"]), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await gateway.stop(0.5)
        await plain_cert.stop(0.5)
        await worker.stop(0.5)
