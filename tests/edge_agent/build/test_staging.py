"""A model directory is replaced whole or not at all: success swaps it in, and an error, Ctrl-C or
SIGTERM in the middle of a build leaves the old one and no staging directory behind."""

from __future__ import annotations

import os
import signal

import pytest

from edge_agent.build.staging import staged


def _leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _old(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.json").write_text("old")
    return out


def test_a_finished_build_replaces_the_old_directory(tmp_path):
    out = _old(tmp_path)
    with staged(out) as staging:
        (staging / "model.json").write_text("new")
        assert (out / "model.json").read_text() == "old"  # nothing visible until the end
    assert (out / "model.json").read_text() == "new"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("stop", [RuntimeError("export failed"), KeyboardInterrupt()])
def test_a_failed_build_leaves_the_old_directory(tmp_path, stop):
    out = _old(tmp_path)
    with pytest.raises(type(stop)):
        with staged(out) as staging:
            (staging / "model.json").write_text("half")
            raise stop
    assert (out / "model.json").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_sigterm_mid_build_cleans_up_and_restores_the_handler(tmp_path):
    out = _old(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        with staged(out) as staging:
            (staging / "model.json").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert (out / "model.json").read_text() == "old"
    assert _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is before
