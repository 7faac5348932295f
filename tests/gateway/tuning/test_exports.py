"""Each tuning module says what it exports, and the package re-exports what users need."""

from __future__ import annotations

import importlib

import pytest

import gateway.tuning

MODULES = ["cli", "goal", "plot", "record", "report", "search", "simulator", "summary", "trace", "workload"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_honest(name):
    module = importlib.import_module(f"gateway.tuning.{name}")
    assert module.__all__ == sorted(module.__all__)
    assert all(hasattr(module, symbol) for symbol in module.__all__)


def test_the_package_exports():
    assert gateway.tuning.__all__ == sorted(gateway.tuning.__all__)
    assert all(hasattr(gateway.tuning, symbol) for symbol in gateway.tuning.__all__)
    assert {"simulate", "Trace", "Workload", "recommend", "record_trace"} <= set(gateway.tuning.__all__)


def test_importing_tuning_does_not_import_matplotlib():
    import subprocess
    import sys

    code = "import sys, gateway.tuning.cli; assert 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0
