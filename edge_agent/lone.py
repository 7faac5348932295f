"""A second onnxruntime session for a request that arrives with nothing else in flight.

Why: the shared session runs one request per core on one thread each (``edge_agent.threads``),
which is what throughput wants and what keeps an idle device idle; but a request that arrives
alone then uses one core of several. A session of the same file with an operator thread per core,
its threads spinning only while it runs (``session.force_spinning_stop``: they stop the moment its
``Run`` returns), answers that request sooner and burns nothing between requests. Measured on a
2-core AMD EPYC (Zen 4), the reference INT8 model at batch 1: 2.00 ms on one thread, 1.93 ms on two
threads parked between operators (no spinning), 1.26 ms on two spinning threads. How much it gives
depends on the CPU, so by default it is measured where the model loads.

Contract for ``LoneRequests(threads, auto, name)``:
- ``attach(file, settings, shared, probe)`` (at load, after warm-up): with ``threads`` above the
  shared session's operator threads, creates the lone session (``threads`` spinning operator
  threads, stopped when each run returns). With ``auto``, it is kept only when the model file is at
  most ``AUTO_MAX_BYTES`` (a second session holds a second copy of the weights) and ``probe(session)``
  (one representative call) runs faster on it than on the shared session by ``MARGIN``, comparing
  the medians of ``TRIALS`` interleaved pairs (``faster_alone``); ``probe`` None: not kept. The
  decision is logged and kept in ``decision``.
- ``call()``: a context manager around one blocking model call; while it is open, ``session()`` on
  that thread answers the lone session when no other call of the model was running as it opened
  and none ran beside another within the last ``QUIET_S`` (the model was not busy), else None (use
  the shared session). Calls are counted whether or not they get it, so a call that starts while
  another runs never takes the lone session's threads. Why the quiet period: under load the
  runner's queue still empties now and then (the event loop and the clients share the cores), and
  a lone run's spinning threads then take the CPU the next requests need. Counted on 2 cores with
  closed-loop load: without it 4.5% of the calls at concurrency 64 (and 64% at 2) took the lone
  session, and throughput fell 5-8% in 3 of 4 rounds of a (noisy) ``bench.edge_server`` run; with
  it, 1 call in 3,720 at concurrency 64, and every call at concurrency 1.
- ``detach()`` drops the lone session (unload).
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from edge_agent.onnx_session import SessionSettings, create_session

__all__ = ["AUTO_MAX_BYTES", "LoneRequests", "MARGIN", "QUIET_S", "TRIALS", "faster_alone"]

log = logging.getLogger(__name__)

MARGIN = 1.10
"""The lone session is kept (``auto``) when the shared session's median is at least this multiple
of its own: a gain inside the noise of a load-time measurement is not worth a second session."""
QUIET_S = 0.1
"""A call gets the lone session only if no two calls of the model ran at once for this long."""
TRIALS = 15
"""Interleaved (shared, lone) probe pairs timed at load."""
AUTO_MAX_BYTES = 64 * 1024 * 1024
"""Model files above this get no automatic lone session (their weights would be held twice)."""


def faster_alone(shared_s: Sequence[float], lone_s: Sequence[float], margin: float = MARGIN) -> bool:
    """Whether the lone session's median time beats the shared one's by ``margin``."""
    return bool(shared_s) and bool(lone_s) and statistics.median(lone_s) * margin <= statistics.median(shared_s)


class LoneRequests:
    def __init__(self, threads: int, auto: bool, name: str = "model",
                 clock: Callable[[], float] = time.perf_counter):
        self.threads = threads
        self.auto = auto
        self.name = name
        self.decision = "off"
        """What ``attach`` decided, in words (logged; shown by the edge's startup log)."""
        self._clock = clock
        self._session = None
        self._lock = threading.Lock()
        self._calls = 0
        self._busy_at = float("-inf")
        """When two calls last ran at once."""
        self._local = threading.local()

    def attach(self, file: Path, settings: SessionSettings, shared, probe: Callable[[object], object] | None) -> None:
        self._session = None
        if self.threads <= max(1, settings.intra_op_threads):
            self.decision = "off"
            return
        if self.auto and (probe is None or file.stat().st_size > AUTO_MAX_BYTES):
            self.decision = "off (automatic: " + ("no probe for this model kind)" if probe is None else
                                                  f"file over {AUTO_MAX_BYTES >> 20} MiB)")
            log.info("model %s: lone requests on the shared session, %s", self.name, self.decision[4:])
            return
        lone = create_session(file, replace(settings, intra_op_threads=self.threads, allow_spinning=True,
                                            force_spinning_stop=True))
        if probe is None:
            self._session, self.decision = lone, f"{self.threads} threads (set)"
            return
        shared_s: list[float] = []
        lone_s: list[float] = []
        probe(lone)  # its first run allocates
        for _ in range(TRIALS):
            for session, times in ((shared, shared_s), (lone, lone_s)):
                start = self._clock()
                probe(session)
                times.append(self._clock() - start)
        timing = (f"{statistics.median(lone_s) * 1000:.2f} ms alone on {self.threads} threads vs "
                  f"{statistics.median(shared_s) * 1000:.2f} ms on the shared session")
        if not self.auto or faster_alone(shared_s, lone_s):
            self._session = lone
            self.decision = f"{self.threads} threads ({timing})"
        else:
            self.decision = f"off ({timing}: less than {MARGIN:.2f}x faster)"
        log.info("model %s: lone requests %s", self.name, self.decision)

    def detach(self) -> None:
        self._session = None

    @property
    def attached(self) -> bool:
        """Whether there is a lone session (when not, ``call()`` has nothing to decide)."""
        return self._session is not None

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        lone = self._session
        if lone is None:
            yield
            return
        now = self._clock()
        with self._lock:
            self._calls += 1
            if self._calls > 1:
                self._busy_at = now
            alone = self._calls == 1 and now - self._busy_at >= QUIET_S
        local = self._local
        if alone:
            local.session = lone
        try:
            yield
        finally:
            if alone:
                local.session = None
            with self._lock:
                if self._calls > 1:  # the overlap lasted until now
                    self._busy_at = self._clock()
                self._calls -= 1

    def session(self):
        """The lone session when this thread's open ``call()`` got it, else None."""
        return getattr(self._local, "session", None)
