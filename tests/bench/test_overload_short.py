"""The overload benchmark's short version: the edge agent at twice its capacity sheds the excess
with RESOURCE_EXHAUSTED and a retry hint, answers everything it accepted, and fails nothing else.
(Its latency targets are judged by the full benchmark on a quiet machine, not here.)"""

from __future__ import annotations

import pytest

from tests.support.bench_runner import run_bench


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_twice_capacity_sheds_the_excess_with_a_hint_and_loses_nothing_accepted(model_dir, tmp_path):
    # Four times the measured capacity: the excess is certain even if the capacity phase ran on a
    # quieter (or busier) machine than the overload phase.
    result = run_bench("overload", "--targets", "edge", "--limits", "2", "--phase-s", "2", "--factor", "4",
                       results_dir=tmp_path, result_name="overload", timeout=170)
    [run] = result["runs"]
    assert run["other_errors"] == 0 and run["unloaded_errors"] == 0 and run["capacity_errors"] == 0, run
    shed = round(run["shed_share"] * run["overload_requests"])
    assert shed > 0 and run["shed_with_retry_hint"] == shed
    assert run["accepted"]["n"] > 0 and run["offered_per_s"] > run["capacity_per_s"]
