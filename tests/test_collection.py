"""The whole-suite run collects every test file under tests/ (a folder named ``build`` once hid a
whole package of tests from pytest's default collection, silently)."""

from __future__ import annotations

from types import SimpleNamespace

from tests.conftest import REPO_ROOT, uncollected_test_files


def _config(args, keyword="", markexpr=""):
    option = SimpleNamespace(keyword=keyword, markexpr=markexpr)
    return SimpleNamespace(args=args, option=option, getoption=lambda name, default=None: default)


def _item(relative: str):
    return SimpleNamespace(path=REPO_ROOT / relative)


def test_a_whole_suite_run_that_misses_files_names_them():
    config = _config([str(REPO_ROOT / "tests")])
    missing = uncollected_test_files(config, [_item("tests/test_collection.py")])
    assert "tests/edge_agent/build/test_staging.py" in missing
    assert "tests/test_collection.py" not in missing


def test_partial_runs_are_not_judged():
    assert uncollected_test_files(_config([str(REPO_ROOT / "tests" / "edgecloud")]), []) == []
    assert uncollected_test_files(_config([str(REPO_ROOT / "tests")], keyword="generation"), []) == []
    assert uncollected_test_files(_config([str(REPO_ROOT / "tests")], markexpr="not slow"), []) == []
