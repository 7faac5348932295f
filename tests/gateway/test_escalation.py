"""Confidence escalation: the bar's pure logic, and the dispatcher's every path on fake backends in
virtual time (unsure edge answers go to the cloud; a running hedge is reused; a late or failing
cloud leaves the edge's answer, marked and not cached; a slow edge still falls back)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecloud.classification import classify
from edgecloud.errors import Unavailable
from edgecloud.types import InferRequest, InferResponse, RequestedOutput, Tensor
from gateway.dispatch import ESCALATION_PARAMETER
from gateway.escalation import ConfidenceBar, top_two, widen
from gateway.routing import Reason, RouteState
from tests.gateway.fakes import FakeBackend, make_dispatcher
from tests.support.virtual_clock import VirtualClock

BAR = ConfidenceBar("probabilities", min_confidence=0.5, min_margin=0.0, reserve_s=0.01)


def probabilities(top1: float, top2: float | None = None, classes: int = 10) -> np.ndarray:
    top2 = (1 - top1) / 2 if top2 is None else top2
    rest = (1 - top1 - top2) / (classes - 2)
    row = np.full(classes, rest, np.float32)
    row[3], row[7] = top1, top2
    return row.reshape(1, classes)


def answer(top1: float, top2: float | None = None, name: str = "x") -> InferResponse:
    data = probabilities(top1, top2)
    return InferResponse("m", [Tensor("probabilities", "FP32", data.shape, data)], parameters={"answered_by": name})


class Classifier(FakeBackend):
    """A fake backend answering a probability vector with top-1 ``top1`` (and the classification
    extension when asked)."""

    def __init__(self, name: str, role: str, clock: VirtualClock, top1: float, **kwargs):
        super().__init__(name, role, clock, **kwargs)
        self.top1 = top1
        self.requests: list[InferRequest] = []

    async def infer(self, request: InferRequest, timeout_s: float | None) -> InferResponse:
        self.calls += 1
        self.requests.append(request)
        await self._serve(timeout_s)
        response = answer(self.top1, name=self.name)
        for requested in request.outputs:
            count = requested.parameters.get("classification")
            if count:
                response.outputs[0] = classify(response.outputs[0], count)
        return response


def classifier_request(outputs=()) -> InferRequest:
    data = np.ones(1, np.float32)
    return InferRequest("m", [Tensor("x", "FP32", (1,), data)], id="r", outputs=list(outputs))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def setup(clock, edge_top1=0.3, cloud_top1=0.9, edge_latency=0.010, cloud_latency=0.050, bar=BAR, **kwargs):
    e = Classifier("edge", "edge", clock, edge_top1, latency_s=edge_latency)
    w = Classifier("cloud@w0", "cloud", clock, cloud_top1, latency_s=cloud_latency, **kwargs)
    return e, w, make_dispatcher(clock, e, [w], bars={"m": bar}, hedge_after_s=0.2)


async def dispatch(clock, d, request=None, deadline_s=10.0, require_cloud=False):
    start = clock.now()
    served = await clock.run(d.dispatch(request or classifier_request(), start + deadline_s,
                                        require_cloud=require_cloud))
    return served, clock.now() - start


def count(d, outcome) -> float:
    return d.metrics.escalations.labels(outcome)._value.get()


# --- the bar --------------------------------------------------------------------------------------


def test_top_two_from_probabilities_and_from_classification_strings():
    raw = answer(0.6, 0.3)
    assert top_two(raw, "probabilities") == pytest.approx(np.array([[0.6, 0.3]]))
    classified = InferResponse("m", [classify(raw.outputs[0], 2)])
    assert top_two(classified, "probabilities") == pytest.approx(np.array([[0.6, 0.3]]), abs=1e-5)
    one = InferResponse("m", [classify(raw.outputs[0], 1)])
    assert top_two(one, "probabilities") == pytest.approx(np.array([[0.6, 0.4]]), abs=1e-5)  # rest at most 0.4
    assert top_two(raw, "other") is None


def test_unsure_by_confidence_or_by_margin_and_any_row_counts():
    assert BAR.unsure(answer(0.49)) and not BAR.unsure(answer(0.51))
    margin = ConfidenceBar(min_confidence=0.0, min_margin=0.2)
    assert margin.unsure(answer(0.5, 0.35)) and not margin.unsure(answer(0.5, 0.25))
    rows = np.concatenate([probabilities(0.9), probabilities(0.2)])
    assert BAR.unsure(InferResponse("m", [Tensor("probabilities", "FP32", rows.shape, rows)]))
    assert not BAR.unsure(InferResponse("m", []))  # nothing to judge


def test_widen_asks_for_what_the_bar_needs_and_restores_what_the_client_asked():
    plain = classifier_request()
    assert widen(plain, BAR) == (plain, None)
    top1 = classifier_request([RequestedOutput("probabilities", {"classification": 1})])
    upstream, restore = widen(top1, BAR)
    assert upstream.outputs[0].parameters["classification"] == 2 and top1.outputs[0].parameters["classification"] == 1
    restored = restore(InferResponse("m", [classify(answer(0.6).outputs[0], 2)]))
    assert restored.outputs[0].shape == (1, 1) and restored.outputs[0].data[0, 0].startswith(b"0.6")
    other = classifier_request([RequestedOutput("logits", {})])
    upstream, restore = widen(other, BAR)
    assert [o.name for o in upstream.outputs] == ["logits", "probabilities"] and upstream.wire is None
    restored = restore(InferResponse("m", [Tensor("logits", "FP32", (1,), np.ones(1, np.float32)),
                                           answer(0.6).outputs[0]]))
    assert [t.name for t in restored.outputs] == ["logits"]


# --- the dispatcher -------------------------------------------------------------------------------


async def test_a_confident_edge_answer_is_returned(clock):
    e, w, d = setup(clock, edge_top1=0.8)
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason, served.cacheable) == ("edge", Reason.EDGE_FAST, True)
    assert w.calls == 0 and took == pytest.approx(0.010)


async def test_an_unsure_edge_answer_is_escalated_to_the_cloud(clock):
    e, w, d = setup(clock)
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("cloud", Reason.LOW_CONFIDENCE)
    assert served.response.parameters["answered_by"] == "cloud@w0" and served.cacheable
    assert took == pytest.approx(0.060) and count(d, "escalated") == 1
    assert d.monitor.stats("edge").count == 1  # the edge's RTT still feeds routing


async def test_a_running_hedge_answers_the_escalation(clock):
    e, w, d = setup(clock, edge_latency=0.3, cloud_latency=0.5)
    served, took = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("cloud", Reason.LOW_CONFIDENCE)
    assert w.calls == 1 and took == pytest.approx(0.7)  # the hedge started at 0.2, answered at 0.7
    assert count(d, "hedge") == 1


async def test_a_late_cloud_leaves_the_edge_answer_marked_and_uncached(clock):
    e, w, d = setup(clock, cloud_latency=5.0)
    served, took = await dispatch(clock, d, deadline_s=1.0)
    assert (served.served_by, served.reason, served.cacheable) == ("edge", Reason.LOW_CONFIDENCE_KEPT, False)
    assert served.response.parameters[ESCALATION_PARAMETER] == "kept: deadline_exceeded"
    assert took == pytest.approx(1.0 - BAR.reserve_s) and count(d, "kept") == 1
    await clock.advance(0)
    assert w.outstanding == 0


async def test_a_failing_cloud_leaves_the_edge_answer(clock):
    e, w, d = setup(clock, error=Unavailable("worker down"))
    served, _ = await dispatch(clock, d)
    assert (served.served_by, served.reason) == ("edge", Reason.LOW_CONFIDENCE_KEPT)
    assert served.response.parameters[ESCALATION_PARAMETER] == "kept: unavailable"


async def test_a_slow_edge_still_falls_back_and_the_cloud_answer_is_final(clock):
    e, w, d = setup(clock, cloud_top1=0.2)
    for _ in range(5):
        d.monitor.record("edge", 0.5)
        d.policy.observe_edge(0.5)
    assert d.policy.state is RouteState.CLOUD_FALLBACK
    served, _ = await dispatch(clock, d)
    assert served.served_by == "cloud" and served.reason != Reason.LOW_CONFIDENCE and e.calls == 0


async def test_the_client_gets_the_classes_it_asked_for(clock):
    e, w, d = setup(clock)
    asked = classifier_request([RequestedOutput("probabilities", {"classification": 1})])
    served, _ = await dispatch(clock, d, asked)
    assert served.reason == Reason.LOW_CONFIDENCE
    assert e.requests[0].outputs[0].parameters["classification"] == 2  # enough to judge the margin
    assert served.response.outputs[0].shape == (1, 1) and served.response.outputs[0].data[0, 0].startswith(b"0.9")


async def test_a_cloud_quality_request_is_not_judged(clock):
    e, w, d = setup(clock, cloud_top1=0.2)
    served, _ = await dispatch(clock, d, require_cloud=True)
    assert (served.served_by, served.reason) == ("cloud", Reason.QUALITY_CLOUD) and count(d, "escalated") == 0
