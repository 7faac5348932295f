"""Offline tuning of the gateway's routing settings from a recorded latency trace (``edgecloud tune``).

One concern per module: ``trace`` (the recorded samples and their file format), ``record``
(polling a gateway's ``/v2/debug/latency-trace``), ``workload`` (arrivals and per-backend RTTs
derived from a trace), ``simulator`` (a discrete-event replay through the gateway's own
``RoutingPolicy`` and ``LatencyStats`` on a ``FakeClock``), ``summary`` (the figures a run is
judged by, for simulated and live runs alike), ``goal`` (constraints and ranking), ``search``
(candidate grid, evaluation, recommendation), ``report`` (table, YAML snippet, JSON), ``plot``
(the PNG; needs matplotlib) and ``cli`` (``add_arguments``/``run`` for ``edgecloud tune``).
"""

from gateway.tuning.goal import Constraint, Goal, GoalError
from gateway.tuning.record import RecordError, record_trace
from gateway.tuning.search import (
    CandidateGrid,
    Evaluation,
    GridError,
    Recommendation,
    default_grid,
    describe,
    evaluate,
    recommend,
)
from gateway.tuning.simulator import SimRequest, SimResult, simulate
from gateway.tuning.summary import Summary, quantile
from gateway.tuning.trace import Trace, TraceError, TraceSample
from gateway.tuning.workload import LatencySeries, Workload

__all__ = [
    "CandidateGrid",
    "Constraint",
    "Evaluation",
    "Goal",
    "GoalError",
    "GridError",
    "LatencySeries",
    "Recommendation",
    "RecordError",
    "SimRequest",
    "SimResult",
    "Summary",
    "Trace",
    "TraceError",
    "TraceSample",
    "Workload",
    "default_grid",
    "describe",
    "evaluate",
    "quantile",
    "recommend",
    "record_trace",
    "simulate",
]
