"""The Kubernetes manifests parse and carry what the deployment relies on: GPU requests and gRPC
probes on the cloud workers, HPAs on the gateway and the workers, probes and resources on every
container, Services whose ports reach container ports, configs that are valid for their kind and
wired to the containers that read them, the workers as a Deployment behind a headless Service
whose name the gateway's discovery resolves, and the custom-metrics overlay scaling on metric
families the worker and the gateway really export."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, IMAGE_CONFIG_DIR, config_kind, parse_text, yaml_documents

K8S = DEPLOY / "k8s"
CUSTOM_METRICS = K8S / "custom-metrics"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@pytest.fixture(scope="module")
def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def docs(kustomization) -> list[dict]:
    return [doc for name in kustomization["resources"] for doc in yaml_documents(K8S / name)]


@pytest.fixture(scope="module")
def generated_configs(kustomization) -> dict[str, dict[str, str]]:
    """ConfigMap name -> {key: file text}, as configMapGenerator builds them."""
    maps: dict[str, dict[str, str]] = {}
    for generator in kustomization.get("configMapGenerator", []):
        data = maps.setdefault(generator["name"], {})
        for entry in generator.get("files", []):
            key, _, source = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
            data[key] = (K8S / source).read_text(encoding="utf-8")
    return maps


@pytest.fixture(scope="module")
def config_maps(docs, generated_configs) -> dict[str, dict[str, str]]:
    maps = dict(generated_configs)
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            maps[doc["metadata"]["name"]] = doc.get("data", {})
    return maps


def _by_kind(docs, kind):
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs, kind, name):
    found = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _workloads(docs):
    return [doc for doc in docs if doc["kind"] in WORKLOAD_KINDS]


def _pod(workload) -> dict:
    return workload["spec"]["template"]["spec"]


def _containers(workload) -> list[dict]:
    return _pod(workload)["containers"]


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _mounted_config(workload, config_maps) -> tuple[str, str]:
    """(kind, text) of the config the workload's container reads via ``--config``."""
    container = _containers(workload)[0]
    args = container.get("args", [])
    path = args[args.index("--config") + 1]
    directory, _, key = path.rpartition("/")
    volumes = {v["name"]: v for v in _pod(workload).get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"] == directory:
            assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
            map_name = volumes[mount["name"]]["configMap"]["name"]
            return config_kind(Path(key)), config_maps[map_name][key]
    raise AssertionError(f"{workload['metadata']['name']}: nothing mounted at {directory}")


def _config(workload, config_maps):
    kind, text = _mounted_config(workload, config_maps)
    return parse_text(text, kind, workload["metadata"]["name"])


# --- the kustomization ----------------------------------------------------------------------------

def test_kustomization_lists_every_manifest(kustomization):
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    for generator in kustomization.get("configMapGenerator", []):
        for entry in generator.get("files", []):
            assert (K8S / entry.rpartition("=")[2]).is_file(), entry


def test_every_manifest_parses_and_names_its_kind(docs):
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"].get("name")


def test_the_expected_objects_are_there(docs):
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in docs}
    assert {
        ("Namespace", "edgecloud"),
        ("Deployment", "edgecloud-gateway"), ("Service", "edgecloud-gateway"),
        ("HorizontalPodAutoscaler", "edgecloud-gateway"), ("PodDisruptionBudget", "edgecloud-gateway"),
        ("Deployment", "edgecloud-cloud"), ("Service", "edgecloud-cloud"),
        ("HorizontalPodAutoscaler", "edgecloud-cloud"), ("PodDisruptionBudget", "edgecloud-cloud"),
        ("Deployment", "edgecloud-redis"), ("Service", "edgecloud-redis"),
    } <= kinds


def test_config_maps_hold_valid_configs_of_their_kind(config_maps):
    assert config_maps
    for name, data in config_maps.items():
        for key, text in data.items():
            parse_text(text, config_kind(Path(key)), f"ConfigMap {name}/{key}")


# --- every workload -------------------------------------------------------------------------------

def test_every_container_has_requests_and_probes(docs):
    for workload in _workloads(docs):
        for container in _containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            requests = container.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), f"{where}: resource requests"
            assert "memory" in container["resources"].get("limits", {}), f"{where}: a memory limit"
            assert container.get("readinessProbe"), f"{where}: readinessProbe"
            assert container.get("livenessProbe"), f"{where}: livenessProbe"


def test_probes_target_declared_ports(docs):
    for workload in _workloads(docs):
        for container in _containers(workload):
            ports = {p["containerPort"] for p in container.get("ports", [])}
            names = {p["name"] for p in container.get("ports", []) if "name" in p}
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(probe_name)
                if not probe:
                    continue
                for handler in ("grpc", "httpGet", "tcpSocket"):
                    if handler in probe:
                        port = probe[handler]["port"]
                        if handler == "grpc":
                            assert isinstance(port, int), "gRPC probes take a port number, not a name"
                        assert port in ports | names, f"{workload['metadata']['name']} {probe_name}: port {port}"


def test_pods_run_as_non_root_with_a_read_only_root(docs):
    for workload in _workloads(docs):
        assert _pod(workload)["securityContext"]["runAsNonRoot"] is True
        for container in _containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]


def test_termination_grace_outlasts_the_server_drain(docs, config_maps):
    for workload in _workloads(docs):
        if "--config" not in _containers(workload)[0].get("args", []):
            continue
        grace = _config(workload, config_maps).server.grace_s
        pre_stop = 0
        command = _containers(workload)[0].get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        if command[:1] == ["sleep"]:
            pre_stop = float(command[1])
        period = _pod(workload)["terminationGracePeriodSeconds"]
        assert period > pre_stop + grace, f"{workload['metadata']['name']}: {period} <= {pre_stop} + {grace}"


def test_config_ports_are_the_container_ports(docs, config_maps):
    for workload in _workloads(docs):
        if "--config" not in _containers(workload)[0].get("args", []):
            continue
        server = _config(workload, config_maps).server
        ports = {p["containerPort"] for p in _containers(workload)[0]["ports"]}
        wanted = {server.port} | {getattr(server, name) for name in ("http_port", "metrics_port")
                                  if getattr(server, name, None) is not None}
        assert wanted == ports, workload["metadata"]["name"]
        assert server.host == "0.0.0.0", "a pod must listen on its pod IP"
        assert _containers(workload)[0]["args"][1].startswith(IMAGE_CONFIG_DIR + "/")


def test_prometheus_annotations_point_at_the_metrics_port(docs, config_maps):
    for name in ("edgecloud-gateway", "edgecloud-cloud"):
        workload = next(w for w in _workloads(docs) if w["metadata"]["name"] == name)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        server = _config(workload, config_maps).server
        metrics_port = getattr(server, "metrics_port", None) or server.http_port
        assert int(annotations["prometheus.io/port"]) == metrics_port


# --- Services -------------------------------------------------------------------------------------

def test_services_select_one_workload_and_reach_its_ports(docs):
    for service in _by_kind(docs, "Service"):
        selector = service["spec"]["selector"]
        targets = [w for w in _workloads(docs) if _selects(selector, w["spec"]["template"]["metadata"]["labels"])]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} workloads"
        container_ports = {p["name"]: p["containerPort"] for c in _containers(targets[0]) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            number = container_ports.get(target, target)
            assert number in container_ports.values(), f"{service['metadata']['name']}: targetPort {target}"
            assert port["port"] == number, "clients use the same port number as the config names"


def test_workload_selectors_match_their_pods(docs):
    for workload in _workloads(docs):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert _selects(selector, workload["spec"]["template"]["metadata"]["labels"])


def test_disruption_budgets_cover_the_serving_workloads(docs):
    budgets = _by_kind(docs, "PodDisruptionBudget")
    for name in ("edgecloud-gateway", "edgecloud-cloud"):
        workload = next(w for w in _workloads(docs) if w["metadata"]["name"] == name)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(_selects(b["spec"]["selector"]["matchLabels"], labels) for b in budgets), name


# --- cloud workers --------------------------------------------------------------------------------

def test_cloud_workers_request_a_gpu_and_probe_grpc_health(docs, config_maps):
    workers = _one(docs, "Deployment", "edgecloud-cloud")
    container = _containers(workers)[0]
    resources = container["resources"]
    assert int(resources["requests"]["nvidia.com/gpu"]) >= 1
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"], \
        "extended resources need requests == limits"
    port = _config(workers, config_maps).server.port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    assert {"name": "grpc", "containerPort": port} in container["ports"]


def _cloud_service(docs) -> dict:
    """The one Service selecting the cloud worker pods."""
    workers = _one(docs, "Deployment", "edgecloud-cloud")
    labels = workers["spec"]["template"]["metadata"]["labels"]
    services = [s for s in _by_kind(docs, "Service") if _selects(s["spec"]["selector"], labels)]
    assert len(services) == 1, [s["metadata"]["name"] for s in services]
    return services[0]


def test_cloud_service_is_headless_and_selects_the_worker_pods(docs):
    service = _cloud_service(docs)
    assert service["spec"]["clusterIP"] == "None", "the gateway balances per pod: no virtual IP in between"
    assert service["spec"].get("publishNotReadyAddresses", False) is False, "only ready pods are workers"
    workers = _one(docs, "Deployment", "edgecloud-cloud")
    assert _selects(workers["spec"]["selector"]["matchLabels"], workers["spec"]["template"]["metadata"]["labels"])


def test_gateway_discovers_the_workers_through_the_headless_service(docs, config_maps, kustomization):
    workers = _one(docs, "Deployment", "edgecloud-cloud")
    gateway = _config(_one(docs, "Deployment", "edgecloud-gateway"), config_maps)
    service = _cloud_service(docs)
    name, namespace = service["metadata"]["name"], kustomization["namespace"]
    discovery = gateway.cloud.discovery
    assert discovery is not None, "the workers are found through DNS, not listed"
    host, port = discovery.host_port
    assert host.rstrip(".") in {name, f"{name}.{namespace}", f"{name}.{namespace}.svc",
                                f"{name}.{namespace}.svc.cluster.local"}, host
    assert port == _config(workers, config_maps).server.port
    assert port in {p["port"] for p in service["spec"]["ports"]}
    assert gateway.cloud.workers == [], "no static worker beside the discovered ones"
    assert discovery.empty_grace_ms is not None and discovery.empty_grace_ms >= discovery.refresh_ms, \
        "one empty DNS answer must not empty the pool"


def test_workers_keep_serving_until_the_gateways_have_drained_them(docs, config_maps):
    workers = _one(docs, "Deployment", "edgecloud-cloud")
    gateway = _config(_one(docs, "Deployment", "edgecloud-gateway"), config_maps)
    command = _containers(workers)[0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    dns_ttl_s = 5  # CoreDNS' kubernetes plugin default
    assert float(command[1]) >= gateway.cloud.discovery.refresh_ms / 1000.0 + dns_ttl_s


def _hpa_for(docs, kind: str, name: str) -> dict:
    hpas = [h for h in _by_kind(docs, "HorizontalPodAutoscaler")
            if (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]) == (kind, name)]
    assert len(hpas) == 1, f"one HPA must own {kind} {name}, found {len(hpas)}"
    return hpas[0]


def test_cloud_workers_are_scaled_by_a_cpu_hpa(docs):
    workers = _one(docs, "Deployment", "edgecloud-cloud")
    hpa = _hpa_for(docs, "Deployment", "edgecloud-cloud")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["apiVersion"] == "apps/v1"
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in workers["spec"], "the HPA owns the replica count"
    assert all("cpu" in c["resources"]["requests"] for c in _containers(workers)), "utilisation needs a request"
    rolling = workers["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxSurge"] == 0, "an update must not need a spare GPU"


# --- the custom-metrics Component -------------------------------------------------------------------

def _merge(base, patch):
    """A strategic-merge patch as kustomize applies it to these objects (lists without a merge
    key, such as an HPA's metrics, are replaced)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in patch.items()}}
    return patch


@pytest.fixture(scope="module")
def overlay_docs(docs) -> list[dict]:
    """deploy/k8s with the custom-metrics Component applied."""
    component = yaml.safe_load((CUSTOM_METRICS / "kustomization.yaml").read_text(encoding="utf-8"))
    assert component["kind"] == "Component" and not component.get("resources"), \
        "patches over deploy/k8s only (an overlay inside its base is a kustomize cycle)"
    built = [dict(doc) for doc in docs]
    for patch_ref in component["patches"]:
        for patch in yaml_documents(CUSTOM_METRICS / patch_ref["path"]):
            index = next(i for i, doc in enumerate(built)
                         if (doc["kind"], doc["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"]))
            built[index] = _merge(built[index], patch)
    return built


@pytest.fixture(scope="module")
def adapter_rules() -> dict[str, str]:
    """Custom metric name -> the series it is computed from, per the prometheus-adapter rules."""
    (config_map,) = yaml_documents(CUSTOM_METRICS / "prometheus-adapter.yaml")
    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    served = {}
    for rule in rules:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"].strip("'\"")).group(0)
        assert {"namespace", "pod"} == {k for k in rule["resources"]["overrides"]}, "per-pod metrics"
        name = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), series)
        served[name] = series
    return served


def _exported_series() -> set[str]:
    """The series names the cloud worker's and the gateway's metrics produce."""
    from cloud_worker.metrics import WorkerMetrics
    from gateway.metrics import GatewayMetrics

    names = set()
    for registry in (WorkerMetrics().registry, GatewayMetrics().registry):
        for family in registry.collect():
            suffixes = {"counter": ("_total",), "histogram": ("_sum", "_count", "_bucket")}.get(family.type, ("",))
            names.update(family.name + suffix for suffix in suffixes)
    return names


def test_adapter_rules_read_series_the_processes_export(adapter_rules):
    exported = _exported_series()
    assert adapter_rules
    for name, series in adapter_rules.items():
        assert series in exported, f"rule {name} reads {series}, which nothing exports"


def test_custom_metric_hpas_use_served_metrics_and_target_the_workloads(overlay_docs, adapter_rules):
    cloud = _hpa_for(overlay_docs, "Deployment", "edgecloud-cloud")
    pods = [m["pods"]["metric"]["name"] for m in cloud["spec"]["metrics"] if m["type"] == "Pods"]
    assert {"edgecloud_cloud_queued_requests", "edgecloud_cloud_running_requests"} <= set(pods), pods
    gateway = _hpa_for(overlay_docs, "Deployment", "edgecloud-gateway")
    kinds = {m["type"] for m in gateway["spec"]["metrics"]}
    assert kinds == {"Resource", "Pods"}, "the gateway keeps CPU beside its in-flight requests"
    for hpa in (cloud, gateway):
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in adapter_rules, metric
                assert metric["pods"]["target"]["type"] == "AverageValue"
        assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["scaleTargetRef"]["apiVersion"] == "apps/v1"
    # Everything else is deploy/k8s unchanged.
    assert len(overlay_docs) == len({(d["kind"], d["metadata"]["name"]) for d in overlay_docs})


# --- gateway --------------------------------------------------------------------------------------

def test_gateway_is_scaled_by_a_cpu_hpa(docs):
    deployment = _one(docs, "Deployment", "edgecloud-gateway")
    hpa = _one(docs, "HorizontalPodAutoscaler", "edgecloud-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "edgecloud-gateway")
    cpu = [m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert all("cpu" in c["resources"]["requests"] for c in _containers(deployment)), "utilisation needs a request"


def test_gateway_readiness_is_the_http_ready_endpoint_and_liveness_grpc(docs, config_maps):
    deployment = _one(docs, "Deployment", "edgecloud-gateway")
    container = _containers(deployment)[0]
    server = _config(deployment, config_maps).server
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[container["readinessProbe"]["httpGet"]["port"]] == server.http_port
    assert container["livenessProbe"]["grpc"]["port"] == server.port


def test_gateway_cache_is_the_redis_service(docs, config_maps):
    gateway = _config(_one(docs, "Deployment", "edgecloud-gateway"), config_maps)
    match = re.fullmatch(r"redis://([^:/]+):(\d+)(/\d+)?", gateway.cache.redis.url or "")
    assert gateway.cache.enabled and match, gateway.cache.redis.url
    service = _one(docs, "Service", match.group(1))
    assert int(match.group(2)) in {p["port"] for p in service["spec"]["ports"]}


def test_redis_keeps_nothing_on_disk(docs):
    redis = _one(docs, "Deployment", "edgecloud-redis")
    args = _containers(redis)[0]["args"]
    assert args[args.index("--save") + 1] == "" and args[args.index("--appendonly") + 1] == "no"
    assert "--maxmemory" in args, "a cache must be bounded"
    assert not any("persistentVolumeClaim" in v for v in _pod(redis).get("volumes", []))


def test_images_match_the_compose_images(docs):
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    built = {service["image"] for service in compose["services"].values() if "build" in service}
    for workload in _workloads(docs):
        image = _containers(workload)[0]["image"]
        if image.startswith("edgecloud-"):
            assert image in built, image
