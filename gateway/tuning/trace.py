"""A recorded latency trace: every backend RTT sample a gateway took, on the gateway's clock.

Contract: ``Trace`` holds ``TraceSample``s sorted by completion time ``t`` (seconds on the
gateway's monotonic clock) between ``start`` and ``end``. ``Trace.from_payload`` reads both the
saved file format (``FORMAT``) and the raw ``GET /v2/debug/latency-trace`` answer, so a ``curl``
of the endpoint is a valid trace too; malformed input raises ``TraceError`` naming the field path
(``samples[3].rtt_ms: ...``). ``Trace.save``/``Trace.load`` round-trip exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "FORMAT", "Trace", "TraceError", "TraceSample"]

FORMAT = "edgecloud-latency-trace/1"
BACKENDS = ("edge", "cloud")


KINDS = ("rtt", "ttft")
"""What a trace's samples measure (see ``Trace.kind``)."""


class TraceError(ValueError):
    """A trace that cannot be used; the message names the offending field."""


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TraceError(f"{path}: must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class TraceSample:
    """One RTT the gateway recorded when an attempt (or a probe) ended."""

    t: float
    """Completion time, seconds on the gateway's clock."""
    backend: str
    """``edge`` or ``cloud`` (every cloud worker is ``cloud``)."""
    rtt_s: float
    """Round trip in seconds; for an edge attempt that lost a hedge, the time it had run (censored)."""
    probe: bool
    """An active probe rather than a real request."""
    censored: bool | None = None
    """True when the gateway marked this a lower bound (a cancelled attempt); None when it did not say."""

    @property
    def started(self) -> float:
        """When the attempt began (``t - rtt_s``)."""
        return self.t - self.rtt_s

    @classmethod
    def from_json(cls, raw: Any, path: str = "sample") -> TraceSample:
        """A sample from its JSON object (``rtt_ms`` in milliseconds); ``TraceError`` names ``path``."""
        if not isinstance(raw, Mapping):
            raise TraceError(f"{path}: must be an object with t, backend, rtt_ms, probe")
        for key in ("t", "backend", "rtt_ms"):
            if key not in raw:
                raise TraceError(f"{path}.{key}: missing")
        backend = raw["backend"]
        if backend not in BACKENDS:
            raise TraceError(f"{path}.backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
        rtt_ms = _number(raw["rtt_ms"], f"{path}.rtt_ms")
        if rtt_ms < 0:
            raise TraceError(f"{path}.rtt_ms: must be >= 0, got {rtt_ms}")
        probe = raw.get("probe", False)
        censored = raw.get("censored")
        if not isinstance(probe, bool):
            raise TraceError(f"{path}.probe: must be true or false, got {probe!r}")
        if censored is not None and not isinstance(censored, bool):
            raise TraceError(f"{path}.censored: must be true, false or absent, got {censored!r}")
        return cls(_number(raw["t"], f"{path}.t"), backend, rtt_ms / 1000.0, probe, censored)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.t, "backend": self.backend, "rtt_ms": self.rtt_s * 1000.0,
                               "probe": self.probe}
        if self.censored is not None:
            out["censored"] = self.censored
        return out


@dataclass(frozen=True)
class Trace:
    """Samples sorted by ``t``, the span they were recorded over, and where they came from."""

    samples: tuple[TraceSample, ...]
    start: float
    """Start of the recording (gateway clock); at or before the first sample."""
    end: float
    """End of the recording (gateway clock); at or after the last sample."""
    source: str = ""
    """Where the trace was recorded (the gateway's HTTP address), informational."""
    recorded_threshold_ms: float | None = None
    """The gateway's ``threshold_ms`` while recording, informational."""
    kind: str = "rtt"
    """``rtt``: round trips of requests (and probes); ``ttft``: streams' time to first token (and
    TTFT probes). Both are judged against the same ``threshold_ms``."""

    @classmethod
    def build(cls, samples: Iterable[TraceSample], *, start: float | None = None, end: float | None = None,
              source: str = "", recorded_threshold_ms: float | None = None, kind: str = "rtt") -> Trace:
        """A trace of ``samples`` (any order); the span defaults to the first and last sample."""
        ordered = tuple(sorted(samples, key=lambda s: s.t))
        if not ordered and (start is None or end is None):
            raise TraceError("samples: the trace is empty")
        first = ordered[0].t if ordered else start
        last = ordered[-1].t if ordered else end
        start = first if start is None else min(start, first)
        end = last if end is None else max(end, last)
        if kind not in KINDS:
            raise TraceError(f"kind: must be one of {', '.join(KINDS)}")
        return cls(ordered, float(start), float(end), source, recorded_threshold_ms, kind)

    @property
    def duration_s(self) -> float:
        return self.end - self.start

    def of(self, backend: str, *, probe: bool | None = None) -> list[TraceSample]:
        """Samples of ``backend`` (only probes, only passive samples, or both when ``probe`` is None)."""
        return [s for s in self.samples if s.backend == backend and (probe is None or s.probe == probe)]

    # serialization ----------------------------------------------------------------------------

    @classmethod
    def from_payload(cls, payload: Any, source: str = "") -> Trace:
        """A trace from the saved format or from one raw debug-endpoint answer."""
        if not isinstance(payload, Mapping):
            raise TraceError("(root): must be a JSON object")
        raw_samples = payload.get("samples")
        if not isinstance(raw_samples, list):
            raise TraceError("samples: must be a list")
        samples = [TraceSample.from_json(raw, f"samples[{i}]") for i, raw in enumerate(raw_samples)]
        threshold = payload.get("recorded_threshold_ms", payload.get("threshold_ms"))
        if threshold is not None:
            threshold = _number(threshold, "recorded_threshold_ms")
        start = payload.get("start")
        end = payload.get("end", payload.get("now"))
        return cls.build(samples, start=None if start is None else _number(start, "start"),
                         end=None if end is None else _number(end, "end"),
                         source=str(payload.get("source", source)), recorded_threshold_ms=threshold,
                         kind=str(payload.get("kind", "rtt")))

    def to_payload(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "source": self.source,
                "recorded_threshold_ms": self.recorded_threshold_ms,
                "start": self.start, "end": self.end, "samples": [s.to_json() for s in self.samples]}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_payload(), separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        try:
            payload = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise TraceError(f"{path}: not JSON ({exc})") from exc
        return cls.from_payload(payload, source=str(path))
