"""The systemd units parse, run as the dedicated user declared for sysusers, stop gracefully
(SIGTERM, and a stop timeout above the config's drain), and carry the hardening they promise."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, load_shipped

SYSTEMD = DEPLOY / "systemd"
UNITS = {"edgecloud-edge.service": "edge", "edgecloud-gateway.service": "gateway"}
# The configs each unit is documented to run with (installed as /etc/edgecloud/<kind>.yaml).
UNIT_CONFIGS = {
    "edgecloud-edge.service": [DEPLOY / "configs" / "device" / "edge.yaml", DEPLOY / "configs" / "lan" / "edge.yaml"],
    "edgecloud-gateway.service": [DEPLOY / "configs" / "device" / "gateway.yaml",
                                  DEPLOY / "configs" / "device-embedded" / "gateway.yaml"],
}
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
}


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((SYSTEMD / name).read_text(encoding="utf-8"), source=name)
    return parser


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "min": 60}
    for suffix, factor in units.items():
        if value.endswith(suffix) and value[: -len(suffix)].replace(".", "").isdigit():
            return float(value[: -len(suffix)]) * factor
    return float(value)


def test_every_unit_is_checked():
    assert {p.name for p in SYSTEMD.glob("*.service")} == set(UNITS)


@pytest.mark.parametrize("name", UNITS)
def test_unit_parses_with_the_sections_systemd_needs(name):
    unit = _unit(name)
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("name", UNITS)
def test_service_runs_the_cli_as_a_dedicated_user(name):
    service = _unit(name)["Service"]
    assert service["Type"] == "exec"
    assert service["Restart"] == "on-failure"
    assert service["User"] == "edgecloud" and service["User"] != "root"
    argv = shlex.split(service["ExecStart"])
    assert Path(argv[0]).name == "edgecloud" and Path(argv[0]).is_absolute()
    assert argv[1:4] == ["serve", UNITS[name], "--config"]
    assert argv[4] == f"/etc/edgecloud/{UNITS[name]}.yaml"
    sysusers = (SYSTEMD / "edgecloud.sysusers.conf").read_text(encoding="utf-8").splitlines()
    declared = [shlex.split(line) for line in sysusers if line.strip() and not line.startswith("#")]
    assert ["u", service["User"]] in [entry[:2] for entry in declared], "the user is created by systemd-sysusers"


@pytest.mark.parametrize("name", UNITS)
def test_stop_is_graceful_and_outlasts_the_drain(name):
    service = _unit(name)["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed", "SIGTERM to the server only; SIGKILL to the rest after the timeout"
    for config in UNIT_CONFIGS[name]:
        assert _seconds(service["TimeoutStopSec"]) > load_shipped(config).server.grace_s, config


@pytest.mark.parametrize("name", UNITS)
def test_hardening(name):
    service = _unit(name)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, f"{name}: {key}={value}"
    families = set(service["RestrictAddressFamilies"].split())
    assert families <= {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service["SystemCallFilter"].startswith("@system-service")


@pytest.mark.parametrize("name", UNITS)
def test_model_and_config_are_read_only(name):
    service = _unit(name)["Service"]
    read_only = [Path(p.lstrip("-")) for p in service["ReadOnlyPaths"].split()]
    assert Path("/etc/edgecloud") in read_only
    models = []
    for config in UNIT_CONFIGS[name]:
        loaded = load_shipped(config)
        if UNITS[name] == "edge":
            models += [m.path for m in loaded.models]
        elif loaded.edge.embedded is not None:
            models += [Path(m.path) for m in loaded.edge.embedded.models]
    assert models
    for model in models:
        assert model.is_absolute(), f"{model}: a service's model path must not depend on its working directory"
        assert any(model == p or p in model.parents for p in read_only), f"{model} is writable by the service"
