"""The server-overhead benchmark's short version: the minimal backend, the edge server and the
embedded gateway each start with their model answered from memory, answer every request, and
report their CPU per request beside the floor's. (The figures are judged by the full run.)"""

from __future__ import annotations

import pytest

from tests.support.bench_runner import run_bench


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_every_server_answers_and_is_measured_against_the_floor(model_dir, tmp_path):
    result = run_bench("overhead", "--reps", "1", "--duration", "0.5", "--concurrency", "4",
                       "--model-dir", str(model_dir), results_dir=tmp_path, result_name="overhead", timeout=140)
    rows = {row["server"]: row for row in result["rows"]}
    assert set(rows) == {"minimal backend", "edge server", "embedded gateway"}
    assert all(row["errors"] == 0 and row["req_s"] > 0 and row["cpu_us_per_req"] > 0 for row in rows.values())
    assert rows["minimal backend"]["x_floor_cpu"] == 1.0
