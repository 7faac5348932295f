"""The KServe cloud tier (deploy/k8s/kserve) parses and holds together: the InferenceService names a
ServingRuntime that supports its model format and protocol, the gRPC port is the one MLServer is
told to listen on, readiness asks the model itself, the runtime serves the reference model's name
and tensors, the component removes every object of the project's own cloud worker and swaps in a
gateway config that is valid, names the InferenceService and matches the gateway's container
ports, and the image installs the pins the integration tests run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from edgecloud.reference_model import EMBEDDING_DIM, INPUT_NAME, MODEL_NAME, OUTPUT_NAME
from tests.deploy.conftest import DEPLOY, REPO_ROOT, parse_text, yaml_documents

K8S = DEPLOY / "k8s"
KSERVE = K8S / "kserve"
RUNTIME_DIR = REPO_ROOT / "tests" / "outside_servers" / "mlserver_model"
NAMESPACE = "edgecloud"
OWN_WORKER_LABEL = ("app.kubernetes.io/name", "edgecloud-cloud")


@pytest.fixture(scope="module")
def component() -> dict:
    return yaml.safe_load((KSERVE / "kustomization.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def docs(component) -> list[dict]:
    return [doc for name in component["resources"] for doc in yaml_documents(KSERVE / name)]


@pytest.fixture(scope="module")
def base() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def base_docs(base) -> list[dict]:
    return [doc for name in base["resources"] for doc in yaml_documents(K8S / name)]


def _one(docs, kind) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def isvc(docs) -> dict:
    return _one(docs, "InferenceService")


@pytest.fixture(scope="module")
def runtime(docs) -> dict:
    return _one(docs, "ServingRuntime")


@pytest.fixture(scope="module")
def container(runtime) -> dict:
    (only,) = runtime["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def env(container) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


@pytest.fixture(scope="module")
def gateway_config(component):
    (generator,) = [g for g in component["configMapGenerator"] if g["name"] == "edgecloud-gateway-config"]
    (entry,) = generator["files"]
    key, _, source = entry.partition("=")
    assert key == "gateway.yaml"
    return parse_text((KSERVE / source).read_text(encoding="utf-8"), "gateway", f"kserve/{source}")


@pytest.fixture(scope="module")
def model_settings() -> dict:
    return json.loads((RUNTIME_DIR / "model-settings.json").read_text(encoding="utf-8"))


# --- the files --------------------------------------------------------------------------------------

def test_the_component_lists_every_manifest_and_its_files_exist(component):
    assert component["kind"] == "Component"
    listed = set(component["resources"])
    assert listed == {p.name for p in KSERVE.glob("*.yaml")} - {"kustomization.yaml"}
    for generator in component.get("configMapGenerator", []):
        for entry in generator["files"]:
            assert (KSERVE / entry.rpartition("=")[2]).is_file(), entry
    assert (KSERVE / "README.md").is_file()


def test_every_manifest_names_its_kind_and_namespace(docs):
    assert {doc["kind"] for doc in docs} == {"ServingRuntime", "InferenceService"}
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc)
        assert doc["apiVersion"].startswith("serving.kserve.io/")
        assert doc["metadata"].get("name") and doc["metadata"].get("namespace") == NAMESPACE


# --- InferenceService and ServingRuntime ------------------------------------------------------------

def test_the_inference_service_selects_this_runtime_over_grpc(isvc, runtime):
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["protocolVersion"] == "grpc-v2", "the gateway reaches cloud workers over gRPC only"
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["storageUri"]


def test_the_grpc_port_is_the_one_mlserver_listens_on(isvc, container, env):
    grpc_port = int(env["MLSERVER_GRPC_PORT"])
    assert container["ports"] == [{"name": "h2c", "containerPort": grpc_port, "protocol": "TCP"}], \
        "Knative carries gRPC on one port named h2c"
    assert isvc["spec"]["predictor"]["model"]["ports"] == container["ports"]
    assert len({env["MLSERVER_GRPC_PORT"], env["MLSERVER_HTTP_PORT"], env["MLSERVER_METRICS_PORT"]}) == 3
    assert env["MLSERVER_PARALLEL_WORKERS"] == "0"
    assert container["livenessProbe"]["tcpSocket"]["port"] == grpc_port


def test_readiness_asks_the_model_itself(container, env, model_settings):
    command = " ".join(container["readinessProbe"]["exec"]["command"])
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/v2/models/([^/']+)/ready)", command)
    assert url, command
    assert url.group(1) == env["MLSERVER_HTTP_PORT"]
    assert url.group(3) == model_settings["name"]


def test_predictors_are_cluster_local_and_never_scaled_to_zero(isvc):
    assert isvc["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    predictor = isvc["spec"]["predictor"]
    assert 2 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"


def test_the_runtime_container_has_resources_and_runs_locked_down(isvc, runtime, container):
    for resources in (container["resources"], isvc["spec"]["predictor"]["model"]["resources"]):
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and isinstance(context["runAsUser"], int)
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]], "the read-only root needs a writable /tmp"


# --- the runtime and its image ----------------------------------------------------------------------

def test_the_runtime_serves_the_reference_model_as_edgecloud_does(model_settings):
    assert model_settings["name"] == MODEL_NAME
    assert model_settings["inputs"] == [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}]
    assert model_settings["outputs"] == [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, EMBEDDING_DIM]}]
    module, _, cls = model_settings["implementation"].rpartition(".")
    source = (RUNTIME_DIR / f"{module}.py").read_text(encoding="utf-8")
    assert f"class {cls}(MLModel)" in source
    assert "import edgecloud" not in source and "from edgecloud" not in source, \
        "MLServer's environment has protobuf < 7: the runtime cannot import edgecloud"


def test_the_image_installs_the_tested_pins_and_starts_the_runtimes_repository(container, runtime):
    dockerfile = (KSERVE / "mlserver.Dockerfile").read_text(encoding="utf-8")
    assert "tests/outside_servers/requirements.txt" in dockerfile
    requirements = (REPO_ROOT / "tests" / "outside_servers" / "requirements.txt").read_text(encoding="utf-8")
    pins = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins), pins
    assert not any(line.split("==")[0].lower() in {"torch", "edgecloud"} for line in pins)
    for source in re.findall(r"tests/outside_servers/mlserver_model/\S+", dockerfile):
        assert (REPO_ROOT / source).is_file(), source
    repository = container["args"][-1]
    assert container["args"][:2] == ["mlserver", "start"]
    assert f"{repository}/{MODEL_NAME}/" in dockerfile
    assert "'/mnt/models'" in dockerfile, "the model's files come from the storage initializer"
    user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert user and int(user.group(1)) == container["securityContext"]["runAsUser"]


# --- the component over deploy/k8s ------------------------------------------------------------------

def test_the_component_removes_every_object_of_the_own_cloud_worker(component, base, base_docs):
    selectors = [p["target"].get("labelSelector") for p in component["patches"]]
    assert "=".join(OWN_WORKER_LABEL) in selectors
    for patch in component["patches"]:
        assert "$patch: delete" in patch["patch"]
    key, value = OWN_WORKER_LABEL
    own = [doc for doc in base_docs if doc["metadata"]["name"] == value]
    assert own, "the base has a cloud worker to replace"
    for doc in own:  # a delete by label catches them only if each carries it
        assert doc["metadata"].get("labels", {}).get(key) == value, f"{doc['kind']} {doc['metadata']['name']}"
    generated = {g["name"] for g in base.get("configMapGenerator", [])}
    removed_maps = {p["target"]["name"] for p in component["patches"] if p["target"].get("kind") == "ConfigMap"}
    assert removed_maps <= generated
    replaced = {g["name"] for g in component["configMapGenerator"] if g.get("behavior") == "replace"}
    assert replaced == {"edgecloud-gateway-config"} and replaced <= generated


def test_the_gateway_names_the_inference_service_as_its_one_worker(isvc, gateway_config):
    name, namespace = isvc["metadata"]["name"], isvc["metadata"]["namespace"]
    assert gateway_config.cloud.workers == [f"{name}-predictor.{namespace}.svc.cluster.local:80"]
    # One address stands for every predictor pod: ejecting it would drop the whole tier.
    assert gateway_config.cloud.outlier_detection.max_ejection_percent == 0
    assert gateway_config.edge.address is None


def test_the_swapped_gateway_config_fits_the_gateway_deployment(base_docs, gateway_config):
    (deployment,) = [d for d in base_docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "edgecloud-gateway"]
    (gateway,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["containerPort"] for p in gateway["ports"]}
    server = gateway_config.server
    assert {server.port, server.http_port, server.metrics_port} == ports
    assert server.host == "0.0.0.0"
    match = re.fullmatch(r"redis://([^:/]+):(\d+)(/\d+)?", gateway_config.cache.redis.url or "")
    assert gateway_config.cache.enabled and match
    services = {d["metadata"]["name"]: d for d in base_docs if d["kind"] == "Service"}
    assert int(match.group(2)) in {p["port"] for p in services[match.group(1)]["spec"]["ports"]}


def test_kustomize_builds_the_stack_with_the_component(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the static checks above stand in for the build")
    overlay = tmp_path / "overlay"  # outside deploy/k8s, as the README's; kustomize wants relative paths
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(K8S, overlay)], "components": [os.path.relpath(KSERVE, overlay)]}))
    built = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    objects = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in objects}
    assert ("InferenceService", "edgecloud-minilm") in names and ("ServingRuntime", "edgecloud-mlserver") in names
    assert not [n for n in names if n[1].startswith("edgecloud-cloud")], names
    assert all(doc["metadata"].get("namespace") == NAMESPACE for doc in objects if doc["kind"] != "Namespace")
    (config_map,) = [d for d in objects if d["kind"] == "ConfigMap"]
    assert config_map["data"]["gateway.yaml"] == (KSERVE / "configs" / "gateway.yaml").read_text(encoding="utf-8")
    (deployment,) = [d for d in objects if d["kind"] == "Deployment" and d["metadata"]["name"] == "edgecloud-gateway"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert config_map["metadata"]["name"] in [(v.get("configMap") or {}).get("name") for v in volumes]
