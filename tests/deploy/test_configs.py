"""Every shipped config passes ``edgecloud config check`` for its kind, and the scenario configs
say what their scenario needs (device: loopback only; LAN: edge on every interface; cloud: GPU
FP16, several workers with outlier detection)."""

from __future__ import annotations

import pytest

from edgecloud_tools.cli import CONFIG_KINDS, main
from tests.deploy.conftest import DEPLOY, MODELS, REPO_ROOT, config_kind, load_shipped, shipped_configs

CONFIGS = DEPLOY / "configs"
SHIPPED = shipped_configs()


def _id(path):
    return str(path.relative_to(DEPLOY))


def test_kinds_cover_the_cli():
    assert set(MODELS) == set(CONFIG_KINDS)


def test_the_original_three_are_still_shipped():
    assert {p.relative_to(CONFIGS).as_posix() for p in SHIPPED if p.parent == CONFIGS} >= {
        "edge.yaml", "cloud.yaml", "gateway.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=_id)
def test_shipped_config_is_valid(path, capsys):
    kind = config_kind(path)
    assert main(["config", "check", str(path), "--kind", kind]) == 0, capsys.readouterr().err
    assert "valid" in capsys.readouterr().out


def test_config_check_explains_errors(tmp_path, capsys):
    bad = tmp_path / "gateway.yaml"
    bad.write_text("routing:\n  threshold_ms: -1\n  statistic: p42\ncloud:\n  workers: []\nedge:\n  address: null\n")
    assert main(["config", "check", str(bad), "--kind", "gateway"]) == 2
    err = capsys.readouterr().err
    assert "routing.threshold_ms" in err and "routing.statistic" in err


def test_device_is_an_edge_agent_and_a_gateway_on_loopback():
    edge = load_shipped(CONFIGS / "device" / "edge.yaml")
    gateway = load_shipped(CONFIGS / "device" / "gateway.yaml")
    assert edge.server.host == "127.0.0.1", "a device's agent is reached through its gateway only"
    assert gateway.edge.address == f"127.0.0.1:{edge.server.port}"
    assert gateway.server.host == "127.0.0.1"
    assert gateway.cloud.workers, "the cloud is the device's fallback"
    assert gateway.cloud.tls is not None, "the device reaches the cloud over the WAN: TLS"
    assert gateway.cache.enabled and not gateway.cache.redis.configured, "a device has no Redis: the LRU"


def test_device_embedded_runs_the_same_model_in_process():
    gateway = load_shipped(CONFIGS / "device-embedded" / "gateway.yaml")
    edge = load_shipped(CONFIGS / "device" / "edge.yaml")
    assert gateway.edge.embedded is not None
    embedded = list(gateway.edge.embedded.models)
    assert [m.path for m in embedded] == [m.path for m in edge.models]


def test_lan_edge_box_listens_on_every_interface_and_the_gateway_points_at_it():
    edge = load_shipped(CONFIGS / "lan" / "edge.yaml")
    gateway = load_shipped(CONFIGS / "lan" / "gateway.yaml")
    assert edge.server.host == "0.0.0.0"
    host, _, port = gateway.edge.address.rpartition(":")
    assert host not in ("127.0.0.1", "localhost") and int(port) == edge.server.port
    assert gateway.cloud.workers


K8S_CONFIGS = DEPLOY / "k8s" / "configs"


@pytest.mark.parametrize("path", [CONFIGS / "cloud" / "cloud.yaml", K8S_CONFIGS / "cloud.yaml"], ids=_id)
def test_cloud_worker_runs_fp16_on_a_gpu(path):
    config = load_shipped(path)
    assert config.runtime.device.startswith("cuda"), "a GPU deployment must not fall back to the CPU silently"
    assert config.runtime.dtype == "fp16"
    assert config.server.host == "0.0.0.0" and config.server.metrics_port is not None
    assert config.batching.enabled


@pytest.mark.parametrize("path", [CONFIGS / "cloud" / "gateway.yaml", K8S_CONFIGS / "gateway.yaml"], ids=_id)
def test_cloud_gateway_balances_several_workers_with_outlier_detection(path):
    config = load_shipped(path)
    listed = config.cloud.workers
    assert len(set(listed)) == len(listed)
    assert len(listed) >= 2 or config.cloud.discovery is not None, "several workers, listed or discovered"
    assert "outlier_detection" in config.cloud.model_fields_set, "state the ejection policy, do not inherit it"
    detection = config.cloud.outlier_detection
    # Envoy's rule: at least one host may always be ejected; the rest must stay in rotation (with
    # discovery: at the HPA's minimum of two workers).
    count = len(listed) if config.cloud.discovery is None else 2
    assert max(1, count * detection.max_ejection_percent // 100) < count
    assert config.cache.enabled and config.cache.redis.configured, "gateway replicas share one Redis"


def test_no_config_names_a_path_inside_this_checkout():
    for path in SHIPPED:
        assert str(REPO_ROOT) not in path.read_text(encoding="utf-8"), path


def test_deploy_readme_names_every_file():
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.name != "README.md" and "__pycache__" not in p.parts]
    missing = [p.relative_to(DEPLOY).as_posix() for p in files if f"`{p.relative_to(DEPLOY).as_posix()}`" not in readme]
    assert not missing, f"deploy/README.md does not say what these are for: {missing}"
