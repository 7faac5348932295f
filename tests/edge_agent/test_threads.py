"""Thread and concurrency defaults derived from the cores, and what the edge builds from them."""

from __future__ import annotations

import pytest

from edge_agent.threads import MAX_AUTO_CONCURRENCY, resolve, usable_cores


@pytest.mark.parametrize("cores, expected", [(1, (1, 1)), (2, (2, 1)), (4, (4, 1)), (8, (8, 1)), (16, (8, 2)),
                                             (64, (8, 8))])
def test_short_requests_get_one_request_per_core_with_the_cores_shared_out(cores, expected):
    assert resolve("sentence-embedding", cores=cores) == expected
    assert resolve("image-classification", cores=cores) == expected
    assert resolve("raw", cores=cores) == expected


def test_a_generative_model_runs_one_generation_on_every_core():
    assert resolve("text-generation", cores=4) == (1, 4)
    assert resolve("text-generation", 2, cores=4) == (2, 4)


def test_what_is_set_explicitly_is_kept():
    assert resolve("sentence-embedding", 3, 5, cores=2) == (3, 5)
    assert resolve("sentence-embedding", 1, cores=4) == (1, 4)
    assert resolve("sentence-embedding", 0, 2, cores=4) == (4, 2)
    assert MAX_AUTO_CONCURRENCY == 8


def test_usable_cores_is_this_process_affinity():
    import os

    assert usable_cores() == len(os.sched_getaffinity(0))


def test_the_edge_agent_builds_its_models_with_the_derived_defaults(model_dir):
    """Out of the box: one request per core, one intra-op thread each, no spinning; the same for
    an agent embedded in-process as for the server (both read ``ModelSettings``)."""
    from edge_agent.agent import EdgeAgent

    agent = EdgeAgent.from_model_dir(model_dir)
    (model,) = agent.models
    concurrency, threads = resolve("sentence-embedding")
    assert model._runner.workers == concurrency == min(usable_cores(), MAX_AUTO_CONCURRENCY)
    assert model.settings.intra_op_threads == threads and not model.settings.allow_spinning
    pinned = EdgeAgent.from_model_dir(model_dir, threads=3, concurrency=1)
    assert pinned.models[0]._runner.workers == 1 and pinned.models[0].settings.intra_op_threads == 3


def test_sessions_do_not_spin_unless_asked(model_dir):
    from edge_agent.model_dir import load_model_dir
    from edge_agent.onnx_session import SessionSettings, create_session

    file = load_model_dir(model_dir, None).onnx_file()
    for allow, expected in ((False, "0"), (True, "1")):
        options = create_session(file, SessionSettings(intra_op_threads=2, allow_spinning=allow)).get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == expected
        assert options.get_session_config_entry("session.inter_op.allow_spinning") == expected
