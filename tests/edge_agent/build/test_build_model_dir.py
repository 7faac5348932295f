"""The built model directory: the contract the edge runtime loads, and the accuracy targets.

Uses ``models/all-MiniLM-L6-v2`` in the repository, building it first when it is missing
(a few minutes), exactly as ``edgecloud model build`` would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.build import build_model_dir
from edge_agent.build.corpus import calibration_corpus
from edge_agent.build.metrics import agreement
from edge_agent.build.pipeline import DEFAULT_OUT
from edge_agent.build.runners import OrtRunner, TorchRunner, default_tokenizer
from edge_agent.build.targets import Targets
from edgecloud.reference_model import EMBEDDING_DIM, MODEL_NAME, ONNX_INPUTS, ONNX_OUTPUT

REPO = Path(__file__).resolve().parents[3]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return build_model_dir(REPO / DEFAULT_OUT, progress=lambda line: None)


@pytest.fixture(scope="module")
def manifest(model_dir) -> dict:
    return json.loads((model_dir / "model.json").read_text())


def test_manifest_contract(model_dir, manifest):
    assert manifest["format"] == "edgecloud-model/1"
    assert manifest["name"] == MODEL_NAME and manifest["version"] == "1"
    assert manifest["task"] == "sentence-embedding"
    assert manifest["variants"] == {"int8": "model.int8.onnx", "fp32": "model.fp32.onnx"}
    assert manifest["default_variant"] == "int8"
    assert manifest["tokenizer"] == "tokenizer.json"
    assert manifest["max_sequence_length"] == 256
    assert (manifest["pooling"], manifest["normalize"]) == ("mean", True)
    assert manifest["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert manifest["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, EMBEDDING_DIM]}]
    q = manifest["quantization"]
    assert {"method", "per_channel", "excluded_nodes", "groups"} <= set(q)
    for name in ("model.fp32.onnx", "model.int8.onnx", "tokenizer.json", "report.json", "report.txt"):
        assert (model_dir / name).is_file(), name


@pytest.mark.parametrize("variant", ["model.fp32.onnx", "model.int8.onnx"])
def test_onnx_io_contract(model_dir, variant):
    import onnx

    model = onnx.load(str(model_dir / variant), load_external_data=False)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == list(ONNX_INPUTS)
    for tensor in inputs.values():
        assert tensor.elem_type == onnx.TensorProto.INT64
        dims = tensor.shape.dim
        assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims)
    (output,) = model.graph.output
    assert output.name == ONNX_OUTPUT
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = output.type.tensor_type.shape.dim
    assert len(dims) == 3 and dims[0].dim_param and dims[1].dim_param and dims[2].dim_value == EMBEDDING_DIM


def test_int8_file_is_at_most_35_percent_of_fp32(model_dir):
    ratio = (model_dir / "model.int8.onnx").stat().st_size / (model_dir / "model.fp32.onnx").stat().st_size
    assert ratio <= Targets().size_ratio


def test_loads_and_runs_with_plain_onnxruntime_without_torch_or_onnx(model_dir):
    script = f"""
import sys
for name in ("torch", "onnx", "transformers"):
    sys.modules[name] = None  # importing any of them now fails
import json, numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
d = {str(model_dir)!r}
m = json.load(open(d + "/model.json"))
tok = Tokenizer.from_file(d + "/" + m["tokenizer"])
tok.enable_padding()
enc = tok.encode_batch(["ok", "a slightly longer sentence to force padding"])
feed = {{k: np.array([getattr(e, a) for e in enc], dtype=np.int64) for k, a in
        (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids"))}}
for variant in m["variants"].values():
    s = ort.InferenceSession(d + "/" + variant, providers=["CPUExecutionProvider"])
    (out,) = s.run(None, feed)
    assert out.shape == (2, feed["input_ids"].shape[1], 384) and out.dtype == np.float32, out.shape
    assert np.isfinite(out).all()
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def embeddings(model_dir):
    texts = calibration_corpus(48)
    tokenizer = default_tokenizer(model_dir / "tokenizer.json")
    reference = TorchRunner(tokenizer, threads=1).embed(texts)
    int8 = OrtRunner(model_dir / "model.int8.onnx", tokenizer)
    fp32 = OrtRunner(model_dir / "model.fp32.onnx", tokenizer)
    return {"reference": reference, "int8": int8.embed(texts), "int8_batched": int8.embed(texts, batch_size=8),
            "fp32": fp32.embed(texts)}


def test_fp32_onnx_matches_torch(embeddings):
    m = agreement(embeddings["reference"], embeddings["fp32"])
    assert m["cosine_min"] > 0.99999


@pytest.mark.parametrize("variant", ["int8", "int8_batched"])
def test_int8_meets_accuracy_targets_against_torch(embeddings, variant):
    m = agreement(embeddings["reference"], embeddings[variant])
    targets = Targets()
    assert m["cosine_mean"] >= targets.cosine_mean, m
    assert m["cosine_min"] >= targets.cosine_min, m
    assert m["spearman"] >= targets.spearman, m


def test_int8_embeddings_are_not_trivially_equal_to_fp32(embeddings):
    # Guards the test above against a build that shipped the FP32 graph as "int8".
    assert not np.allclose(embeddings["int8"], embeddings["fp32"], atol=1e-5)


def test_report_records_trials_and_sensitivity(model_dir):
    report = json.loads((model_dir / "report.json").read_text())
    assert report["corpus"]["sentences"] >= 200
    assert len(report["sensitivity"]) == 25
    assert {e["family"] for e in report["sensitivity"]} == {"embeddings", "qkv", "attn_out", "ffn_up", "ffn_down"}
    assert len(report["trials"]) >= 5 and report["trials"][-1]["name"].startswith("final")
    assert {t["target"] for t in report["targets"]} == {
        "cosine_mean", "cosine_min", "spearman", "size_ratio", "speedup_vs_ort_fp32", "speedup_vs_torch"}
    assert {"torch-fp32", "ort-fp32", "ort-int8"} <= set(report["latency"]["rows"])
    assert "Sensitivity" in (model_dir / "report.txt").read_text()


def test_the_console_gets_a_short_summary_with_one_speed_up_figure(model_dir):
    """The ~90-line report stays in its file; the console shows what matters and where the rest is."""
    import json

    from edge_agent.build.report import render_summary, render_text

    report = json.loads((model_dir / "report.json").read_text())
    summary = render_summary(report, model_dir / "report.txt").splitlines()
    assert len(summary) <= 5 and summary[-1] == f"full report: {model_dir / 'report.txt'}"
    speedup = report["latency"]["ratios"]["int8_vs_ort_fp32_b1"]
    assert f"{speedup:.2f}x ORT FP32" in summary[1]
    target = next(t for t in report["targets"] if t["target"] == "speedup_vs_ort_fp32")
    assert target["value"] == speedup  # the one figure the report calls the INT8 speed-up
    assert "search speedup" in render_text(report)  # the trials' own timing is named apart
