"""What the deploy tests share: where deploy/ is, how a config's kind is named, and loading
configs and YAML documents the way the product and the tools do.

Conventions checked here (deploy/README.md states them):
- every YAML config under ``deploy/configs`` and ``deploy/k8s/configs`` is named for its kind:
  ``edge.yaml``, ``cloud.yaml`` or ``gateway.yaml``; folders name the scenario;
- the images' config lives under ``/etc/edgecloud``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cloud_worker import config as cloud_config
from edge_agent import config as edge_config
from edgecloud_tools.cli import CONFIG_KINDS
from edgecloud.config import load_config, parse_config
from gateway import config as gateway_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
CONFIG_DIRS = (DEPLOY / "configs", DEPLOY / "k8s" / "configs")
IMAGE_CONFIG_DIR = "/etc/edgecloud"
# kind -> (config model, env prefix), as ``edgecloud config check --kind`` uses them.
MODELS = {
    "edge": (edge_config.EdgeConfig, edge_config.ENV_PREFIX),
    "cloud": (cloud_config.CloudConfig, cloud_config.ENV_PREFIX),
    "gateway": (gateway_config.GatewayConfig, gateway_config.ENV_PREFIX),
}


def config_kind(path: Path) -> str:
    """The kind a config file declares by its name (``.../gateway.yaml`` -> ``gateway``)."""
    kind = path.stem
    if kind not in CONFIG_KINDS:
        raise AssertionError(f"{path.relative_to(REPO_ROOT)}: a config is named for its kind, one of {CONFIG_KINDS}")
    return kind


def shipped_configs() -> list[Path]:
    return sorted(p for d in CONFIG_DIRS for p in d.rglob("*.y*ml"))


def load_shipped(path: Path, kind: str | None = None):
    """Load a shipped config as the server would, ignoring this machine's environment."""
    model, prefix = MODELS[kind or config_kind(path)]
    return load_config(model, path, prefix, environ={})


def parse_text(text: str, kind: str, source: str):
    model, _prefix = MODELS[kind]
    return parse_config(model, yaml.safe_load(text), source)


def yaml_documents(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
