"""The image model build: the metrics it reports, the groups its search works on, and the built
directory (what make model produced): a manifest the edge can load, labels, a report whose
figures hold, and an INT8 graph that still tracks torch FP32 on crops the build never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_agent.build.image import classification_agreement, node_groups, ort_runner, predict, torch_runner
from edge_agent.build.image_corpus import augmented
from edge_agent.model_dir import load_model_dir


def test_classification_agreement_counts_top1_confident_rows_top5_and_kl():
    reference = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8]])
    candidate = np.array([[0.6, 0.3, 0.1], [0.3, 0.45, 0.25], [0.2, 0.2, 0.6]])
    m = classification_agreement(reference, candidate)
    assert m["top1_agreement"] == pytest.approx(2 / 3)
    assert (m["confident_images"], m["confident_disagreements"], m["top1_agreement_confident"]) == (2, 0, 1.0)
    assert m["top5_overlap"] == pytest.approx(3 / 5) and m["mean_kl"] > 0  # 3 classes: all 3 shared, of 5
    assert classification_agreement(reference, reference)["mean_kl"] == pytest.approx(0, abs=1e-6)


def test_the_built_directory_serves_and_reports(image_model_dir):
    spec = load_model_dir(image_model_dir)
    assert spec.task == "image-classification" and set(spec.variants) == {"int8", "fp32"}
    assert spec.default_variant == "int8"
    assert len(json.loads((image_model_dir / "labels.json").read_text())) == 1000
    report = json.loads((image_model_dir / "report.json").read_text())
    assert report["sizes"]["ratio"] == pytest.approx(
        (image_model_dir / "model.int8.onnx").stat().st_size / (image_model_dir / "model.fp32.onnx").stat().st_size)
    assert set(report["latency"]) == {"batch1", "batch8"}
    assert {"torch fp32", "onnx fp32", "onnx int8"} <= set(report["latency"]["batch1"])
    assert report["accuracy"]["onnx fp32"]["top1_agreement"] == 1.0
    groups = node_groups(image_model_dir / "model.fp32.onnx")
    assert list(groups)[:2] == ["conv_stem", "blocks.0"] and "fc" in groups and len(groups) == 19
    assert set(report["fp32_groups"]) <= set(groups)


def test_the_int8_graph_tracks_torch_on_crops_the_build_never_saw(image_model_dir):
    from edgecloud.image_model import load_torch_classifier

    images = augmented(48, seed=424242)
    reference = predict(torch_runner(load_torch_classifier()), images)
    int8 = predict(ort_runner(image_model_dir / "model.int8.onnx"), images)
    m = classification_agreement(reference, int8)
    assert m["confident_images"] >= 5
    assert m["top1_agreement_confident"] >= 0.9 and m["top1_agreement"] >= 0.7 and m["mean_kl"] < 0.2
