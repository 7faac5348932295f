"""deploy/docker-compose.yml parses and wires the stack: each service runs the image built from
its Dockerfile with a config that is valid for its kind and reachable through the mounted folder,
the gateway's config names the other services by their compose names and config ports, every
dependency is awaited healthy, and the cloud worker reserves a GPU."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO_ROOT, load_shipped

COMPOSE = DEPLOY / "docker-compose.yml"
APP_SERVICES = ("edge", "cloud", "gateway")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _entrypoint_kind(service: dict) -> str:
    dockerfile = (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve()
    text = dockerfile.read_text(encoding="utf-8")
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    assert entrypoint[:2] == ["edgecloud", "serve"]
    return entrypoint[2]


def _host_path(service: dict, container_path: str) -> Path:
    """The file on this machine that the container sees at ``container_path`` through a volume."""
    target = PurePosixPath(container_path)
    for volume in service.get("volumes", []):
        source, destination, *mode = volume.split(":")
        if target == PurePosixPath(destination) or PurePosixPath(destination) in target.parents:
            assert mode == ["ro"], f"{volume}: the service must not be able to change its config"
            return (COMPOSE.parent / source / target.relative_to(destination)).resolve()
    raise AssertionError(f"{container_path} is not mounted")


def _config(service: dict):
    command = service["command"]
    return load_shipped(_host_path(service, command[command.index("--config") + 1]), _entrypoint_kind(service))


def _published(service: dict) -> set[int]:
    return {int(str(p).split(":")[-1].split("/")[0]) for p in service.get("ports", [])}


def test_parses_with_the_whole_stack(compose):
    assert set(compose["services"]) == {"redis", *APP_SERVICES}


def test_services_build_their_own_dockerfile(compose):
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == REPO_ROOT
        assert _entrypoint_kind(service) == name
        assert service["image"].startswith(f"edgecloud-{name}:")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_config_is_mounted_and_valid_for_its_kind(compose, name):
    service = compose["services"][name]
    config = _config(service)
    assert config.server.host == "0.0.0.0", "other containers reach it on the compose network"
    server = config.server
    wanted = {server.port} | {getattr(server, f) for f in ("http_port", "metrics_port") if getattr(server, f, None)}
    assert _published(service) == wanted


@pytest.mark.parametrize("name", APP_SERVICES)
def test_health_check_and_stop_grace(compose, name):
    service = compose["services"][name]
    config = _config(service)
    assert service["healthcheck"]["test"][-1] == f"127.0.0.1:{config.server.port}"
    assert service["healthcheck"]["test"][:3] == ["CMD", "python", "/usr/local/bin/edgecloud-healthcheck"]
    grace = int(service["stop_grace_period"].removesuffix("s"))
    assert grace > config.server.grace_s, "compose must not SIGKILL before the drain ends"


def test_gateway_waits_for_every_backend_to_be_healthy(compose):
    depends = compose["services"]["gateway"]["depends_on"]
    assert set(depends) == {"redis", "edge", "cloud"}
    for name, condition in depends.items():
        assert condition == {"condition": "service_healthy"}, name
        assert compose["services"][name].get("healthcheck", {}).get("test"), f"{name} needs a healthcheck"


def test_gateway_config_names_the_services_and_their_ports(compose):
    services = compose["services"]
    gateway = _config(services["gateway"])
    edge, cloud = _config(services["edge"]), _config(services["cloud"])
    assert gateway.edge.address == f"edge:{edge.server.port}"
    assert gateway.cloud.workers == [f"cloud:{cloud.server.port}"]
    assert gateway.cache.enabled
    assert re.fullmatch(r"redis://redis:6379(/\d+)?", gateway.cache.redis.url)
    redis_command = services["redis"]["command"]
    assert "--port" not in redis_command, "Redis keeps its default port, 6379"


def test_cloud_reserves_a_gpu(compose):
    devices = compose["services"]["cloud"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_redis_is_a_bounded_cache_without_persistence(compose):
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--save") + 1] == "" and command[command.index("--appendonly") + 1] == "no"
    assert "--maxmemory" in command and "allkeys-lru" in command
    assert not compose["services"]["redis"].get("volumes"), "nothing to keep"
