"""The model directory contract: file names and ``model.json``.

Contract: ``write_manifest(out_dir, quantization)`` writes ``model.json`` (indent 2) naming the
files below; the edge runtime loads exactly this layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgecloud.reference_model import (
    EMBEDDING_DIM,
    INPUT_NAME,
    MAX_SEQUENCE_LENGTH,
    MODEL_NAME,
    MODEL_VERSION,
    OUTPUT_NAME,
)

FORMAT = "edgecloud-model/1"
MANIFEST = "model.json"
FP32_FILE = "model.fp32.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
REPORT_JSON = "report.json"
REPORT_TXT = "report.txt"


def manifest(quantization: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "task": "sentence-embedding",
        "variants": {"int8": INT8_FILE, "fp32": FP32_FILE},
        "default_variant": "int8",
        "tokenizer": TOKENIZER_FILE,
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
        "pooling": "mean",
        "normalize": True,
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, EMBEDDING_DIM]}],
        "quantization": quantization,
    }


def write_manifest(out_dir: Path, quantization: dict[str, Any]) -> Path:
    path = out_dir / MANIFEST
    path.write_text(json.dumps(manifest(quantization), indent=2) + "\n")
    return path
