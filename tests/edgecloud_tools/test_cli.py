"""The ``edgecloud`` command: ``--version``, and ``config check`` inferring the kind of a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecloud import __version__
from edgecloud_tools.cli import infer_kind, main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SHIPPED = sorted(p for p in DEPLOY.rglob("*.yaml") if p.parent.name in {"configs", "cloud", "compose", "device",
                                                                        "device-embedded", "lan"}
                 and p.stem in {"edge", "cloud", "gateway"})


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"edgecloud {__version__}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_shipped_config_checks_without_saying_its_kind(path, capsys):
    assert main(["config", "check", str(path)]) == 0
    assert f"valid {path.stem} configuration (kind inferred" in capsys.readouterr().out


def test_the_kind_is_inferred_from_sections_then_from_the_name(tmp_path):
    by_sections = tmp_path / "anything.yaml"
    by_sections.write_text("routing: {threshold_ms: 250}\n")
    assert infer_kind(str(by_sections)) == "gateway"
    (tmp_path / "edge-box.yaml").write_text("server: {port: 9101}\n")
    assert infer_kind(str(tmp_path / "edge-box.yaml")) == "edge"
    (tmp_path / "plain.yaml").write_text("server: {port: 1}\n")
    assert infer_kind(str(tmp_path / "plain.yaml")) is None


def test_a_wrong_kind_says_which_kind_the_file_looks_like(tmp_path, capsys):
    edge = tmp_path / "x.yaml"
    edge.write_text("models: [{path: models/all-MiniLM-L6-v2}]\n")
    assert main(["config", "check", str(edge), "--kind", "gateway"]) == 2
    err = capsys.readouterr().err
    assert "looks like an edge config, not a gateway one" in err
    (tmp_path / "plain.yaml").write_text("server: {port: 1}\n")
    assert main(["config", "check", str(tmp_path / "plain.yaml")]) == 2
    assert "say --kind" in capsys.readouterr().err
