"""The generation benchmark's quick mode: edge and both cloud workers start in their own processes,
stream real generations over gRPC, and the JSON has every figure, each positive. (Its speed targets
are judged by the full benchmark on a quiet machine, not here.)"""

from __future__ import annotations

import math

import pytest

from tests.support.bench_runner import run_bench


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quick_generation_bench_reports_every_figure(generative_model_dir, tmp_path):
    result = run_bench("generate", "--quick", "--model-dir", str(generative_model_dir),
                       results_dir=tmp_path, result_name="generate", timeout=170)
    assert result["benchmark"] == "generate"
    assert {"python", "cpu_count", "when"} <= set(result["machine"])
    assert result["command"].startswith("python -m bench.generate") and "--quick" in result["command"]
    assert result["settings"]["quick"] is True

    rows = {row["server"]: row for row in result["edge_vs_cloud"]}
    assert set(rows) == {"edge", "cloud"}
    for server, row in rows.items():
        assert row["errors"] == 0 and row["n"] == result["settings"]["requests"], row
        for key in ("prompt_tokens", "completion_tokens", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms",
                    "itl_p99_ms", "decode_tok_s_p50", "decode_tok_s_min"):
            assert _positive(row[key]), (server, key, row)
        assert row["ttft_p50_ms"] <= row["ttft_p99_ms"] and row["itl_p50_ms"] <= row["itl_p99_ms"]

    memory = result["memory"]
    assert all(_positive(memory[key]) for key in ("edge_rss_mib", "edge_model_mib", "fp32_checkpoint_mib"))
    assert 0 < memory["edge_model_share_of_fp32"] < 1

    levels = {(row["mode"].split(" (")[0], row["concurrency"]): row for row in result["batching"]}
    concurrency = result["settings"]["concurrency"]
    assert set(levels) == {(mode, c) for mode in ("batching", "one at a time") for c in concurrency}
    for key, row in levels.items():
        assert _positive(row["tokens_per_s"]) and _positive(row["window_s"]), (key, row)
        assert _positive(row["ttft_p50_ms"]) and _positive(row["ttft_p99_ms"]) and row["ttft_n"] >= 1, (key, row)
        assert row["completed"] >= 1, (key, row)

    speedups = result["ratios"]["batching_vs_one_at_a_time_tokens_per_s"]
    assert set(speedups) == {f"c{c}" for c in concurrency} and all(_positive(v) for v in speedups.values())
    assert len(result["targets"]) == 5
    for target in result["targets"]:
        assert target["status"] in ("met", "MISS") and _positive(target["value"]), target
