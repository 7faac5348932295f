"""Running a benchmark module as a user would: its own process, its JSON in the test's tmp dir."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str, results_dir: Path, result_name: str, timeout: float) -> dict:
    """``python -m bench.<module> <args> --results-dir <results_dir>``; it must exit 0; its JSON."""
    proc = subprocess.run([sys.executable, "-m", f"bench.{module}", *args, "--results-dir", str(results_dir)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((results_dir / f"{result_name}.json").read_text())
