"""The trace file format: round trip, the raw endpoint answer, errors that name the field."""

from __future__ import annotations

import json

import pytest

from gateway.tuning.trace import FORMAT, Trace, TraceError, TraceSample


def sample(t, backend="edge", rtt_ms=10.0, probe=False, **extra):
    return {"t": t, "backend": backend, "rtt_ms": rtt_ms, "probe": probe, **extra}


def test_save_and_load_round_trip(tmp_path):
    trace = Trace.build([TraceSample(2.0, "cloud", 0.05, True), TraceSample(1.0, "edge", 0.01, False, censored=True)],
                        start=0.5, end=3.0, source="http://gw", recorded_threshold_ms=200)
    trace.save(tmp_path / "t.json")
    loaded = Trace.load(tmp_path / "t.json")
    assert loaded == trace
    assert [s.t for s in loaded.samples] == [1.0, 2.0]  # sorted
    payload = json.loads((tmp_path / "t.json").read_text())
    assert payload["format"] == FORMAT and payload["samples"][0]["censored"] is True
    assert "censored" not in payload["samples"][1]


def test_the_raw_endpoint_answer_is_a_trace():
    payload = {"now": 50.0, "threshold_ms": 180, "samples": [sample(40.0), sample(45.0, "cloud", 30.0, True)]}
    trace = Trace.from_payload(payload, source="curl")
    assert (trace.start, trace.end, trace.recorded_threshold_ms, trace.source) == (40.0, 50.0, 180.0, "curl")
    assert trace.samples[1] == TraceSample(45.0, "cloud", 0.03, True)
    assert trace.samples[1].started == pytest.approx(44.97)
    assert trace.duration_s == 10.0 and len(trace.of("edge")) == 1 and trace.of("cloud", probe=False) == []


@pytest.mark.parametrize(("raw", "message"), [
    ([], "(root): must be a JSON object"),
    ({"samples": {}}, "samples: must be a list"),
    ({"samples": []}, "samples: the trace is empty"),
    ({"samples": [sample(1.0), 5]}, "samples[1]: must be an object"),
    ({"samples": [{"t": 1.0, "backend": "edge"}]}, "samples[0].rtt_ms: missing"),
    ({"samples": [sample(1.0, backend="gpu")]}, "samples[0].backend: must be one of edge, cloud"),
    ({"samples": [sample(1.0, rtt_ms="fast")]}, "samples[0].rtt_ms: must be a finite number"),
    ({"samples": [sample(1.0, rtt_ms=-1)]}, "samples[0].rtt_ms: must be >= 0"),
    ({"samples": [sample(float("nan"))]}, "samples[0].t: must be a finite number"),
    ({"samples": [sample(1.0, probe="yes")]}, "samples[0].probe: must be true or false"),
    ({"samples": [sample(1.0, censored=1)]}, "samples[0].censored: must be true, false or absent"),
    ({"samples": [sample(1.0)], "threshold_ms": "x"}, "recorded_threshold_ms: must be a finite number"),
])
def test_bad_traces_name_the_field(raw, message):
    with pytest.raises(TraceError) as info:
        Trace.from_payload(raw)
    assert str(info.value).startswith(message)


def test_a_file_that_is_not_json(tmp_path):
    (tmp_path / "t.json").write_text("{nope")
    with pytest.raises(TraceError, match="not JSON"):
        Trace.load(tmp_path / "t.json")
