"""``gateway.embedded_edge.EmbeddedEdge``: the real agent in-process, its calls bounded in time,
validating with the gateway's limits."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.config import ModelSettings
from edgecloud.codec import bytes_array
from edgecloud.config import LimitsSettings
from edgecloud.errors import DeadlineExceeded, InvalidArgument
from edgecloud.types import InferRequest, Tensor
from gateway.config import GatewayConfig
from gateway.dataplane import GatewayDataplane
from gateway.embedded_edge import EmbeddedEdge


def _request(text: str) -> InferRequest:
    data = bytes_array([text])
    return InferRequest(model_name="all-MiniLM-L6-v2", inputs=[Tensor("text", "BYTES", data.shape, data)])


async def test_a_call_past_its_time_fails_with_deadline_exceeded_before_the_work_ahead_of_it_ends(model_dir):
    # One thread for the model's calls: 128 calls queued ahead take far longer than 5 ms on any machine.
    edge = EmbeddedEdge("edge", [ModelSettings(path=str(model_dir), intra_op_threads=1, lone_request_threads=1,
                                               concurrency=1)])
    await edge.start()
    try:
        answered = []

        async def backlog(index: int) -> None:
            await edge.infer(_request(f"a call queued ahead, number {index}"), None)
            answered.append(index)

        ahead = [asyncio.ensure_future(backlog(i)) for i in range(128)]
        await asyncio.sleep(0)  # all of them queued on the agent's threads
        with pytest.raises(DeadlineExceeded):
            await edge.infer(_request("the late one"), 0.005)
        assert len(answered) < len(ahead)  # it did not wait for the queue to drain
        await asyncio.gather(*ahead)
        response = await edge.infer(_request("and the next call"), 5.0)
        assert response.outputs[0].name == "embedding"
    finally:
        await edge.close()


async def test_calls_in_time_share_one_timer(model_dir):
    edge = EmbeddedEdge("edge", [ModelSettings(path=str(model_dir), intra_op_threads=1, lone_request_threads=1)])
    await edge.start()
    try:
        responses = await asyncio.gather(*(edge.infer(_request(f"text {i}"), 30.0) for i in range(32)))
        assert all(r.outputs[0].name == "embedding" for r in responses)
        assert edge._expiry.timers_armed == 1
    finally:
        await edge.close()


def _batch(count: int) -> InferRequest:
    data = bytes_array([f"text number {i}" for i in range(count)])
    return InferRequest(model_name="all-MiniLM-L6-v2", inputs=[Tensor("text", "BYTES", data.shape, data)])


async def test_the_agent_validates_with_the_limits_it_was_given_and_a_reload_changes_them(model_dir):
    settings = [ModelSettings(path=str(model_dir), intra_op_threads=1, lone_request_threads=1)]
    default = EmbeddedEdge("edge", settings)
    raised = EmbeddedEdge("edge", settings, LimitsSettings(max_batch_size=300))
    await default.start()
    await raised.start()
    try:
        with pytest.raises(InvalidArgument):  # the agent's default: 256
            await default.infer(_batch(280), 30.0)
        response = await raised.infer(_batch(280), 30.0)
        assert response.outputs[0].shape == (280, 384)
        raised.set_limits(LimitsSettings(max_batch_size=8).to_limits())
        with pytest.raises(InvalidArgument):
            await raised.infer(_batch(9), 30.0)
    finally:
        await default.close()
        await raised.close()


async def test_a_gateway_reload_hands_its_limits_to_the_embedded_edge(model_dir):
    config = GatewayConfig.model_validate({
        "edge": {"address": None, "embedded": {"models": [{"path": str(model_dir), "intra_op_threads": 1,
                                                            "lone_request_threads": 1}]}},
        "cloud": {"workers": []}, "limits": {"max_batch_size": 300}})
    dataplane = GatewayDataplane(config)
    await dataplane.start()
    try:
        response = await dataplane.infer(_batch(280))
        assert response.parameters["served_by"] == "edge" and response.outputs[0].shape == (280, 384)
        await dataplane.apply_config(config.model_copy(update={"limits": LimitsSettings(max_batch_size=16)}))
        assert dataplane.edge.agent.dataplane.limits.max_batch_size == 16
    finally:
        await dataplane.stop()
