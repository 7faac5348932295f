"""CloudConfig and model.json: defaults need no file; every error names its field path."""

from __future__ import annotations

import json

import pytest

from cloud_worker.config import CloudConfig, ProgramModelSpec, ReferenceModelSpec, load_cloud_config
from cloud_worker.manifest import load_manifest
from edgecloud.config import ConfigError


def paths(exc: ConfigError) -> list[str]:
    return [path for path, _ in exc.errors]


def test_defaults_need_no_file():
    config = load_cloud_config(None, environ={})
    assert config.batching.enabled and config.batching.max_batch_size == 32
    assert (config.batching.max_queue_delay_us, config.batching.busy_queue_delay_us) == (2000, 6000)
    assert config.runtime.device == "auto" and config.runtime.dtype == "auto" and config.runtime.instances == "auto"
    assert config.server.metrics_port is not None
    assert config.models == [ReferenceModelSpec()]


def test_yaml_and_env_overrides(tmp_path):
    path = tmp_path / "cloud.yaml"
    path.write_text(
        "server: {port: 0, metrics_port: 0, grace_s: 2}\n"
        "runtime: {dtype: bf16, intra_op_threads: 2}\n"
        "batching: {max_batch_size: 16, preferred_batch_sizes: [16, 8, 8], max_queue_delay_us: 500,"
        " busy_queue_delay_us: null}\n"
        f"models:\n  - kind: reference\n  - kind: program\n    path: {tmp_path}\n"
    )
    config = load_cloud_config(path, environ={"EDGECLOUD_CLOUD_BATCHING__ENABLED": "false",
                                              "EDGECLOUD_CLOUD_SERVER__GRACE_S": "7",
                                              "EDGECLOUD_CLOUD_RUNTIME__INSTANCES": "2"})
    assert config.batching.enabled is False and config.server.grace_s == 7
    assert config.batching.preferred_batch_sizes == [8, 16] and config.batching.busy_queue_delay_us is None
    assert config.runtime.dtype == "bf16" and config.runtime.instances == 2
    assert isinstance(config.models[1], ProgramModelSpec) and config.models[1].path == tmp_path


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"batching": {"max_batch_size": 0}}, "batching.max_batch_size"),
        ({"batching": {"preferred_batch_sizes": [64]}}, "batching.preferred_batch_sizes"),
        ({"batching": {"max_queue_delay": 5}}, "batching.max_queue_delay"),
        ({"batching": {"max_queue_size": -1}}, "batching.max_queue_size"),
        ({"batching": {"busy_queue_delay_us": -1}}, "batching.busy_queue_delay_us"),
        ({"runtime": {"dtype": "fp8"}}, "runtime.dtype"),
        ({"runtime": {"device": "tpu"}}, "runtime.device"),
        ({"runtime": {"intra_op_threads": 0}}, "runtime.intra_op_threads"),
        ({"runtime": {"instances": 0}}, "runtime.instances"),
        ({"runtime": {"instances": 65}}, "runtime.instances"),
        ({"server": {"http_port": 70000}}, "server.http_port"),
        ({"models": [{"kind": "generative"}]}, "models.0.generative.path"),
        ({"models": [{"kind": "generative", "path": "m", "max_batch_size": 0}]}, "models.0.generative.max_batch_size"),
        ({"server": {"metrics_port": 70000}}, "server.metrics_port"),
        ({"limits": {"max_batch_size": 0}}, "limits.max_batch_size"),
        ({"models": []}, "models"),
        ({"models": [{"kind": "program"}]}, "models.0.program.path"),
        ({"models": [{"kind": "onnx"}]}, "models.0"),
        ({"models": [{"kind": "reference"}, {"kind": "reference"}]}, "models"),
    ],
)
def test_errors_name_the_field_path(tmp_path, data, field):
    path = tmp_path / "cloud.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    with pytest.raises(ConfigError) as info:
        load_cloud_config(path, environ={})
    assert field in paths(info.value), info.value
    assert field in str(info.value)


def test_a_bad_env_override_names_the_field():
    with pytest.raises(ConfigError) as info:
        load_cloud_config(None, environ={"EDGECLOUD_CLOUD_BATCHING__MAX_BATCH_SIZE": "lots"})
    assert paths(info.value) == ["batching.max_batch_size"]


def test_the_config_module_does_not_need_torch():
    import subprocess
    import sys

    code = "import sys, cloud_worker.config, cloud_worker.worker; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def write_manifest(directory, **fields):
    manifest = {"name": "m", "format": "torchscript",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}], **fields}
    (directory / "model.json").write_text(json.dumps(manifest))
    (directory / "model.pt").write_bytes(b"")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"format": "onnx"}, "format"),
        ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [-1]}]}, "inputs.0.datatype"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-2]}]}, "inputs.0.shape"),
        ({"outputs": []}, "outputs"),
        ({"file": "../elsewhere.pt"}, "file"),
        ({"file": "missing.pt"}, "file"),
        ({"max_batch_size": 8, "inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}]}, ""),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}] * 2}, ""),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_manifest_errors_name_the_field(tmp_path, fields, field):
    write_manifest(tmp_path, **fields)
    with pytest.raises(ConfigError) as info:
        load_manifest(tmp_path)
    assert field in paths(info.value)
    assert "model.json" in str(info.value)


def test_a_valid_manifest(tmp_path):
    write_manifest(tmp_path, max_batch_size=8)
    manifest = load_manifest(tmp_path)
    assert manifest.program_file == "model.pt" and manifest.max_batch_size == 8
    assert CloudConfig.model_validate({"models": [{"kind": "program", "path": str(tmp_path)}]})


def test_two_models_with_one_name_and_version_are_refused():
    from tests.support.cloud_fakes import FakeEmbeddingRuntime
    from cloud_worker.worker import CloudWorker

    with pytest.raises(ConfigError) as info:
        CloudWorker(CloudConfig(), runtimes=[FakeEmbeddingRuntime(), FakeEmbeddingRuntime()])
    assert paths(info.value) == ["models"]
