"""The three ways the build and the benchmark run the encoder: torch FP32, and an ONNX file
in onnxruntime (FP32 or INT8). All share one tokenizer and the runtime's pooling.

Contract: a runner's ``forward(batch)`` takes ``TextTokenizer.encode`` output and returns
``last_hidden_state`` as a float32 numpy array [N, L, 384]; ``embed(texts, batch_size)`` returns
mean-pooled, L2-normalised float32 embeddings [N, 384] in input order. Batch size 1 (the
default) means no padding, so results do not depend on which sentences share a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecloud.reference_model import MAX_SEQUENCE_LENGTH, ONNX_OUTPUT, tokenizer_file
from edgecloud.tokenization import TextTokenizer, mean_pool_normalize


def default_tokenizer(path: Path | None = None) -> TextTokenizer:
    return TextTokenizer.from_file(path or tokenizer_file(), max_length=MAX_SEQUENCE_LENGTH)


class _Runner:
    name: str
    tokenizer: TextTokenizer

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, texts: Sequence[str], batch_size: int = 1) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer.encode(texts[start:start + batch_size])
            out.append(mean_pool_normalize(self.forward(batch), batch["attention_mask"]))
        return np.concatenate(out, axis=0)


class TorchRunner(_Runner):
    """The reference: the packaged FP32 BertModel in torch, ``threads`` intra-op threads."""

    def __init__(self, tokenizer: TextTokenizer | None = None, threads: int | None = None,
                 encoder=None, name: str = "torch-fp32"):
        import torch

        from edgecloud.reference_model import load_torch_encoder

        self._torch = torch
        self.name = name
        self.tokenizer = tokenizer or default_tokenizer()
        self.threads = threads
        self.model = encoder if encoder is not None else load_torch_encoder()

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                out = self.model(**{k: torch.from_numpy(v) for k, v in batch.items()})
            return out.last_hidden_state.numpy()
        finally:
            if self.threads:
                torch.set_num_threads(previous)


def ort_session(path: Path, threads: int = 1):
    """A CPU onnxruntime session with ``threads`` intra-op threads and default optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtRunner(_Runner):
    """An ONNX file with the edge I/O contract, in onnxruntime on the CPU."""

    def __init__(self, path: Path, tokenizer: TextTokenizer | None = None, threads: int = 1,
                 name: str | None = None):
        self.name = name or Path(path).name
        self.tokenizer = tokenizer or default_tokenizer()
        self.session = ort_session(path, threads)
        self._inputs = [i.name for i in self.session.get_inputs()]

    def forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: batch[name] for name in self._inputs}
        return self.session.run([ONNX_OUTPUT], feed)[0]
