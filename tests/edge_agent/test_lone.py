"""A second session for requests that arrive alone: when it is made and kept (on fakes and a fake
clock), which call gets it, and the real one's settings and answers."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_agent import lone as lone_module
from edge_agent.lone import AUTO_MAX_BYTES, MARGIN, QUIET_S, LoneRequests, faster_alone
from edge_agent.onnx_session import SessionSettings
from edge_agent.threads import resolve_lone


@pytest.mark.parametrize("task, asked, intra, expected", [
    ("sentence-embedding", 0, 1, (4, True)),      # automatic: every core, measured
    ("sentence-embedding", 1, 1, (1, False)),     # off
    ("sentence-embedding", 3, 1, (3, False)),     # set: always, not measured
    ("sentence-embedding", 0, 4, (1, False)),     # the shared session already has every core
    ("sentence-embedding", 2, 2, (1, False)),
    ("text-generation", 0, 4, (1, False)),        # generation has its own session
    ("image-classification", 0, 2, (4, True)),
])
def test_resolve_lone(task, asked, intra, expected):
    assert resolve_lone(task, asked, intra, cores=4) == expected


def test_one_core_gets_no_lone_session():
    assert resolve_lone("sentence-embedding", 0, 1, cores=1) == (1, False)


def test_faster_alone_needs_the_margin_on_the_medians():
    assert faster_alone([2.0, 2.0, 9.0], [1.0, 1.0, 0.1])
    assert not faster_alone([2.0] * 3, [2.0 / MARGIN * 1.01] * 3)
    assert faster_alone([2.0] * 3, [2.0 / MARGIN] * 3)
    assert not faster_alone([], [1.0])


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def made(monkeypatch):
    """Sessions ``attach`` creates (fakes), with the settings it asked for."""
    created: list[SessionSettings] = []

    def create(file, settings):
        created.append(settings)
        return f"lone-{len(created)}"

    monkeypatch.setattr(lone_module, "create_session", create)
    return created


def _attach(tmp_path, lone: LoneRequests, clock: FakeClock, seconds: dict[str, float], size: int = 1000,
            intra: int = 1):
    file = tmp_path / "model.onnx"
    file.write_bytes(b"x" * size)

    def probe(session):
        clock.now += seconds["shared" if session == "shared" else "lone"]

    lone.attach(file, SessionSettings(intra_op_threads=intra), "shared", probe)


def test_automatic_keeps_a_lone_session_measured_faster_with_its_threads_spinning_only_while_it_runs(tmp_path, made):
    clock = FakeClock()
    lone = LoneRequests(2, True, "m", clock=clock)
    _attach(tmp_path, lone, clock, {"shared": 0.002, "lone": 0.0012})
    assert lone._session == "lone-1" and lone.decision.startswith("2 threads (1.20 ms alone")
    (settings,) = made
    assert settings.intra_op_threads == 2 and settings.allow_spinning and settings.force_spinning_stop


def test_automatic_drops_one_not_faster_by_the_margin(tmp_path, made):
    clock = FakeClock()
    lone = LoneRequests(2, True, "m", clock=clock)
    _attach(tmp_path, lone, clock, {"shared": 0.002, "lone": 0.0019})
    assert lone._session is None and lone.decision.startswith("off (1.90 ms alone")


def test_a_set_thread_count_is_kept_without_the_margin(tmp_path, made):
    clock = FakeClock()
    lone = LoneRequests(2, False, "m", clock=clock)
    _attach(tmp_path, lone, clock, {"shared": 0.002, "lone": 0.003})
    assert lone._session == "lone-1"


def test_no_automatic_lone_session_for_a_large_file_or_a_model_without_a_probe(tmp_path, made):
    clock = FakeClock()
    large = LoneRequests(2, True, "m", clock=clock)
    _attach(tmp_path, large, clock, {"shared": 0.002, "lone": 0.001}, size=AUTO_MAX_BYTES + 1)
    assert large._session is None and "MiB" in large.decision
    unprobed = LoneRequests(2, True, "m")
    (tmp_path / "raw.onnx").write_bytes(b"x")
    unprobed.attach(tmp_path / "raw.onnx", SessionSettings(intra_op_threads=1), "shared", None)
    assert unprobed._session is None and not made


def test_no_lone_session_when_it_would_have_no_more_threads(tmp_path, made):
    lone = LoneRequests(2, False, "m")
    _attach(tmp_path, lone, FakeClock(), {"shared": 0.002, "lone": 0.001}, intra=2)
    assert lone._session is None and lone.decision == "off" and not made


def test_only_a_call_with_nothing_else_running_gets_the_lone_session():
    clock = FakeClock()
    lone = LoneRequests(2, False, "m", clock=clock)
    lone._session = "lone"
    assert lone.session() is None  # outside a call
    inside_first, second_got, release = threading.Event(), [], threading.Event()

    def first():
        with lone.call():
            second_got.append(lone.session())
            inside_first.set()
            release.wait(5)

    worker = threading.Thread(target=first)
    worker.start()
    inside_first.wait(5)
    with lone.call():  # the first call still runs: this one takes the shared session
        second_got.append(lone.session())
    release.set()
    worker.join()
    assert second_got == ["lone", None]
    with lone.call():  # alone again, but the model was busy a moment ago: the shared session
        assert lone.session() is None
    clock.now += QUIET_S
    with lone.call():  # quiet for long enough
        assert lone.session() == "lone"
    assert lone.session() is None and lone._calls == 0


def test_a_long_overlap_counts_as_busy_until_it_ends():
    clock = FakeClock()
    lone = LoneRequests(2, False, "m", clock=clock)
    lone._session = "lone"
    first, second = lone.call(), lone.call()
    first.__enter__()
    second.__enter__()  # busy from now...
    clock.now += 10 * QUIET_S
    second.__exit__(None, None, None)  # ...until here
    first.__exit__(None, None, None)
    with lone.call():
        assert lone.session() is None
    clock.now += QUIET_S
    with lone.call():
        assert lone.session() == "lone"


def test_the_real_lone_session_answers_as_the_shared_one(model_dir):
    from edge_agent.agent import EdgeAgent

    with EdgeAgent.from_model_dir(model_dir, lone_request_threads=2) as agent:
        (model,) = agent.models
        session = model.lone._session
        assert session is not None and model.settings.intra_op_threads == 1
        options = session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.get_session_config_entry("session.force_spinning_stop") == "1"
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        texts = ["the lone session and the shared one give the same embedding"]
        alone = agent.embed(texts)  # nothing else runs: the lone session
        shared = model.embed_texts(texts)  # outside a call: the shared session
        assert float(np.dot(alone[0], shared[0])) > 0.9999
    assert model.lone._session is None  # dropped on unload
