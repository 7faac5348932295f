"""Prints the hostile corpus summary (``tests.hostile.summary``) at the end of the session; with
``EDGECLOUD_HOSTILE_SUMMARY=PATH`` it is also written there as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.hostile import summary


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = summary.render()
    if not lines:
        return
    terminalreporter.section("hostile-input corpus")
    for line in lines:
        terminalreporter.write_line(line)
    target = os.environ.get("EDGECLOUD_HOSTILE_SUMMARY")
    if target:
        Path(target).write_text(json.dumps(summary.as_dict(), indent=2, default=str))
        terminalreporter.write_line(f"(as JSON: {target})")
