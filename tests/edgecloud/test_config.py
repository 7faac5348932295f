"""Config loading: YAML + env overrides, errors that name the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecloud.config import ConfigError, env_overrides
from edge_agent.config import load_edge_config


def test_defaults_without_a_file():
    config = load_edge_config(None, environ={})
    assert config.server.port == 8101 and config.models[0].variant is None


def test_yaml_and_env_override(tmp_path: Path):
    path = tmp_path / "edge.yaml"
    path.write_text("server:\n  port: 9000\nmodels:\n  - path: /m\n    intra_op_threads: 2\n")
    config = load_edge_config(path, environ={"EDGECLOUD_EDGE_SERVER__PORT": "9100", "OTHER": "x"})
    assert config.server.port == 9100
    assert str(config.models[0].path) == "/m" and config.models[0].intra_op_threads == 2


@pytest.mark.parametrize(
    "text, path",
    [
        ("server:\n  port: 70000\n", "server.port"),
        ("server:\n  prot: 1\n", "server.prot"),
        ("models:\n  - path: /m\n    concurrency: -1\n", "models.0.concurrency"),
        ("models: []\n", "models"),
        ("- just\n- a list\n", "(root)"),
    ],
)
def test_errors_name_the_field_path(tmp_path: Path, text, path):
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_edge_config(file, environ={})
    assert f"  {path}:" in str(info.value), str(info.value)


def test_unreadable_and_invalid_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_edge_config(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_edge_config(bad, environ={})


def test_env_overrides_parse_yaml_scalars():
    assert env_overrides("P_", {"P_A__B": "3", "P_C": "true", "Q_D": "1"}) == {"a": {"b": 3}, "c": True}
