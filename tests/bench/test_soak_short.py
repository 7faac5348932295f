"""The soak's short version: the whole stack at concurrency 16 for a minute, a fault every 10 s
(edge slowed, cloud worker killed and restarted, cloud worker frozen, Redis killed and restarted,
Redis frozen, config reload) — zero lost requests. A 3 s cloud attempt bound (the benchmark's is
1 s): on a busy CI machine the surviving worker, holding all the traffic, must not reach it."""

from __future__ import annotations

import pytest

from tests.support.bench_runner import run_bench


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_short_soak_loses_no_request(model_dir, tmp_path):
    result = run_bench("soak", "--duration-s", "60", "--fault-every-s", "10", "--concurrency", "16",
                       "--cloud-attempt-timeout-ms", "3000",
                       "--name", "soak-ci", results_dir=tmp_path, result_name="soak-ci", timeout=400)
    assert result["errors"] == 0 and result["requests"] > 500
    injected = {fault["fault"] for fault in result["faults"]}
    assert {"edge_slow", "cloud_kill_restart", "cloud_freeze", "redis_kill_restart"} <= injected
    assert all(window["errors"] == 0 for window in result["windows"])
