"""Every input the fuzzers ever broke something with, replayed: ``tests/fuzz/regressions/*.bin``.

A file is one ``fuzz_targets.one_input`` input (first byte: the target; see ``fuzz_targets``). Each
replay must raise nothing, take under a second, and allocate under ``PEAK_BOUND`` at peak (the
decoders' allocations are traced: numpy reports its buffers to ``tracemalloc``). Inputs of bugs
that are reported but not yet fixed are ``xfail(strict=True)`` here, so the fix is noticed.

Adding one: copy libFuzzer's ``crash-<sha1>`` to ``regressions/<what-it-broke>.bin``.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edgecloud import json_codec
from edgecloud.types import InferResponse, Tensor
from tests.fuzz.fuzz_targets import one_input

REGRESSIONS = Path(__file__).parent / "regressions"
PEAK_BOUND = 32 * 1024 * 1024
KNOWN: dict[str, str] = {}
"""Inputs found by ``atheris_harness.py`` whose bug is reported but not fixed yet (none now)."""


def _inputs():
    for path in sorted(REGRESSIONS.glob("*.bin")):
        reason = KNOWN.get(path.name)
        marks = [pytest.mark.xfail(strict=True, reason=reason, raises=AssertionError)] if reason else []
        yield pytest.param(path, id=path.stem, marks=marks)


def test_every_known_bug_has_its_input():
    assert set(KNOWN) <= {path.name for path in REGRESSIONS.glob("*.bin")}


@pytest.mark.parametrize("path", list(_inputs()))
def test_regression_input_replays_cleanly(path: Path):
    data = path.read_bytes()
    tracemalloc.start()
    try:
        started = time.thread_time()  # CPU time: a descheduled process is not a slow decoder
        one_input(data)
        elapsed = time.thread_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BOUND, f"{peak / 2**20:.0f} MiB allocated at peak"
    assert elapsed < 1.0, f"took {elapsed:.2f} s"


def _strict_json(text: bytes):
    def refuse(name: str):
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("datatype, values", [("FP32", [np.nan, 1.0]), ("FP64", [np.inf, -np.inf]),
                                              ("FP16", [np.nan, 0.5])])
def test_non_finite_outputs_reach_rest_clients_as_json_they_can_parse(datatype, values):
    """A model that answers NaN (an FP16 overflow, an empty row) must not produce a body that is not
    JSON: such outputs can travel in the binary section, as non-UTF-8 BYTES already do."""
    data = np.array(values, dtype={"FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}[datatype])
    body, length = json_codec.response_to_json(InferResponse("m", [Tensor("y", datatype, data.shape, data)]))
    _strict_json(body[:length] if length is not None else body)
    decoded = json_codec.response_from_json(body, length)
    np.testing.assert_array_equal(decoded.output("y").data, data)
