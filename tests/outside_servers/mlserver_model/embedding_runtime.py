"""An MLServer custom runtime serving the reference embedding model (all-MiniLM-L6-v2, FP32)
with onnxruntime, so that an unmodified MLServer can stand in as an edgecloud cloud worker.

Contract: ``text`` (BYTES [N], UTF-8) -> ``embedding`` (FP32 [N, 384]), mean-pooled over the
attention mask and L2-normalised: the same model name, tensors and recipe as edgecloud's own cloud
worker (``cloud_worker.reference``), so a gateway can put either behind the same name. The model
directory is the one ``make model`` builds (``parameters.uri``): its ``model.json`` names the FP32
ONNX graph, the tokenizer and the maximum sequence length. Responses carry ``variant: fp32``.
Bad input raises MLServer's ``InferenceError`` (gRPC INVALID_ARGUMENT, HTTP 400) naming the field
as ``inputs[text]``. onnxruntime runs on a worker thread, never on MLServer's event loop.

Self-contained on purpose: MLServer pins protobuf < 7, so this file imports nothing from
edgecloud (whose generated stubs need protobuf >= 7); only numpy, onnxruntime and tokenizers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.errors import InferenceError, InvalidModelURI
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from tokenizers import Tokenizer

__all__ = ["OnnxEmbeddingRuntime", "mean_pool_normalize"]

INPUT_NAME = "text"
OUTPUT_NAME = "embedding"
VARIANT = "fp32"
_FIELD = f"inputs[{INPUT_NAME}]"


def mean_pool_normalize(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean over unmasked tokens, then L2 normalisation (sentence-transformers' recipe)."""
    mask = attention_mask[..., None].astype(np.float32)
    pooled = (hidden.astype(np.float32) * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


class OnnxEmbeddingRuntime(MLModel):
    """``parameters.extra`` may set ``intra_op_threads`` (default 1) and ``variant`` (the
    ``model.json`` variant to load, default ``fp32``)."""

    async def load(self) -> bool:
        params = self.settings.parameters
        if params is None or not params.uri:
            raise InvalidModelURI(self.name)  # parameters.uri names the built models/all-MiniLM-L6-v2
        extra = params.extra or {}
        root = Path(params.uri)
        manifest = json.loads((root / "model.json").read_text(encoding="utf-8"))
        variant = extra.get("variant", VARIANT)
        graph = root / manifest["variants"][variant]
        self._variant = variant
        self._max_length = int(manifest.get("max_sequence_length", 256))
        self._tokenizer = _tokenizer(root / manifest.get("tokenizer", "tokenizer.json"), self._max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(extra.get("intra_op_threads", 1))
        options.inter_op_num_threads = 1
        self._session = await asyncio.to_thread(
            ort.InferenceSession, str(graph), sess_options=options, providers=["CPUExecutionProvider"])
        self._graph_inputs = tuple(node.name for node in self._session.get_inputs())
        self._graph_output = self._session.get_outputs()[0].name
        await asyncio.to_thread(self._embed, ["warm up"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = _texts(payload)
        for output in payload.outputs or []:
            if output.name != OUTPUT_NAME:
                raise InferenceError(f"outputs[{output.name}]: the model has no such output")
        embeddings = await asyncio.to_thread(self._embed, texts)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            parameters=Parameters(variant=self._variant),
            outputs=[ResponseOutput(name=OUTPUT_NAME, datatype="FP32", shape=list(embeddings.shape),
                                    data=embeddings.reshape(-1).tolist())],
        )

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings [len(texts), D] FP32 (blocking: runs on a worker thread)."""
        encodings = self._tokenizer.encode_batch(texts)
        encoded = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feeds = {name: encoded[name] for name in self._graph_inputs}
        (hidden,) = self._session.run([self._graph_output], feeds)
        return mean_pool_normalize(hidden, encoded["attention_mask"])


def _tokenizer(path: Path, max_length: int) -> Tokenizer:
    """Truncated to ``max_length``, padded only to each batch's longest text."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(pad_id=padding.get("pad_id", 0), pad_type_id=padding.get("pad_type_id", 0),
                             pad_token=padding.get("pad_token", "[PAD]"), length=None)
    return tokenizer


def _texts(payload: InferenceRequest) -> list[str]:
    """The ``text`` input as str, checked: BYTES, rank 1, as many elements as its shape says."""
    found = [tensor for tensor in payload.inputs if tensor.name == INPUT_NAME]
    if len(found) != 1 or len(payload.inputs) != 1:
        raise InferenceError(f"{_FIELD}: the model takes exactly one input, {INPUT_NAME!r} (BYTES [N])")
    tensor = found[0]
    datatype = getattr(tensor.datatype, "value", tensor.datatype)
    if datatype != "BYTES":
        raise InferenceError(f"{_FIELD}: datatype {datatype}, expected BYTES")
    if len(tensor.shape) != 1:
        raise InferenceError(f"{_FIELD}: shape {list(tensor.shape)}, expected [N]")
    items = list(tensor.data)
    if len(items) != tensor.shape[0] or not items:
        raise InferenceError(f"{_FIELD}: shape {list(tensor.shape)} but {len(items)} elements")
    texts = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(bytes(item).decode("utf-8"))
        except (TypeError, UnicodeDecodeError):
            raise InferenceError(f"{_FIELD}: element {index} is not valid UTF-8") from None
    return texts
