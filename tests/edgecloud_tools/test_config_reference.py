"""docs/config.md is the generated reference, and every config field is documented."""

from __future__ import annotations

from pathlib import Path

from edgecloud_tools.config_reference import reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_reference_is_fresh():
    assert DOC.read_text() == reference_markdown() + "\n", "run: edgecloud config reference > docs/config.md"


def test_every_field_is_documented():
    rows = [line for line in reference_markdown().splitlines() if line.startswith("| `")]
    assert len(rows) > 80
    undocumented = [row.split("|")[1].strip() for row in rows if row.rstrip("|").rstrip().endswith("|")]
    assert undocumented == []
