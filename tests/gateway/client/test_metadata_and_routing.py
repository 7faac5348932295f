"""What the client sends and reads beyond tensors: API key and metadata on the wire, and the
where-served parameters a routing server sets on its responses."""

from __future__ import annotations

import numpy as np

from gateway.client import AsyncClient, Client


def test_api_key_and_metadata_reach_the_server(scripted):
    server = scripted()
    with Client(server.address, api_key="s3cret", metadata=[("x-tenant", "acme")]) as client:
        client.server_live()
    seen = server.servicer.metadata[0]
    assert seen["authorization"] == "Bearer s3cret" and seen["x-tenant"] == "acme"
    assert seen["user-agent"].startswith("edgecloud-client/")


async def test_where_served_is_read_from_a_routing_server(scripted):
    server = scripted(parameters={"served_by": "cloud", "route_reason": "edge_rtt_p95_over_threshold",
                                  "variant": "fp32"})
    async with AsyncClient(server.address) as client:
        result = await client.infer("m", {"x": np.array([[1.5, 2.5]], np.float32)}, parameters={"no_cache": True})
    assert (result.served_by, result.route_reason, result.variant) == ("cloud", "edge_rtt_p95_over_threshold", "fp32")
    assert result.parameters["echo_parameters"] == 1  # the request parameter arrived
    assert result.model_version == "7"
    np.testing.assert_array_equal(result.as_numpy("x_out"), [[1.5, 2.5]])


def test_a_cache_answer_with_bytes_outputs(scripted):
    # The scripted server echoes `text` as `text_out`; a gateway's cache answer says so like this.
    server = scripted(parameters={"served_by": "cache", "route_reason": "cache_hit"})
    with Client(server.address) as client:
        result = client.infer("m", {"text": ["a", "b"]})
    assert result.served_by == "cache" and result.route_reason == "cache_hit" and result.variant is None
    assert list(result.as_numpy("text_out")) == [b"a", b"b"]
