"""The unmodified tritonclient (its own venv, protobuf < 7) against a real edge agent server."""

from __future__ import annotations

import numpy as np
import pytest

from edgecloud.config import ServerSettings
from edge_agent.config import EdgeConfig, ModelSettings
from edge_agent.server import EdgeServer


@pytest.fixture
async def edge_port(model_dir):
    server = EdgeServer(EdgeConfig(server=ServerSettings(port=0, grace_s=1),
                                   models=[ModelSettings(path=model_dir, intra_op_threads=1)]))
    port = await server.start()
    yield port
    await server.stop(0.5)


async def test_tritonclient_grpc_health_metadata_infer(edge_port, tritonclient_check, edge_agent_session):
    import asyncio

    texts = ["tritonclient talks to edgecloud", "ok"]
    seen = await asyncio.to_thread(
        tritonclient_check, "grpc", f"127.0.0.1:{edge_port}", "all-MiniLM-L6-v2",
        *[arg for t in texts for arg in ("--text", t)], "--bad-model", "no-such-model",
    )
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["server_name"] == "edgecloud-edge"
    meta = seen["model_metadata"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    assert seen["response_id"] == "triton-check-1"
    assert seen["embedding_shape"] == [2, 384] and seen["embedding_dtype"] == "float32"
    # The same numbers as the in-process agent computes for the same batch.
    np.testing.assert_allclose(np.array(seen["embedding"]), edge_agent_session.embed(texts), atol=1e-5)
    assert seen["bad_model"]["status"] == "StatusCode.NOT_FOUND"
    assert "model_name" in seen["bad_model"]["message"]
    assert seen["after_error_shape"] == [2, 384]
