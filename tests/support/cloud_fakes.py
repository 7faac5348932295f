"""Test doubles for the cloud worker, importable without torch (the gateway's tests can use them).

Contract:
- ``FakeEmbeddingRuntime`` honours the reference contract (``text`` BYTES [-1] -> ``embedding``
  FP32 [-1, dim], unit rows) with a deterministic vector per text, records every batch it runs
  (``batches``: the texts of each call), and can be held: with ``gated=True`` each call waits until
  ``release()`` (``running`` is set while a call is held), so tests order events without sleeping.
- ``KeepLoaded(runtime)`` shares one loaded runtime among several workers: ``load``/``close`` do
  nothing after the first load. ``Gated(runtime)`` holds any runtime the same way (``hold``,
  ``release``, ``running``, ``batches``).
- ``text_request`` / ``embedding_of`` build and read Open Inference Protocol messages.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

import numpy as np

from edgecloud.codec import serialize_bytes
from edgecloud.reference_model import EMBEDDING_DIM, INPUT_NAME, MODEL_NAME, MODEL_VERSION, OUTPUT_NAME
from edgecloud.tokenization import decode_utf8
from edgecloud.types import InferRequest, ModelMetadata, Tensor, TensorSpec
from protos import inference_pb2 as pb


def fake_embedding(text: str, dim: int = EMBEDDING_DIM) -> np.ndarray:
    """A unit vector determined by ``text`` alone."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


class FakeEmbeddingRuntime:
    batchable = True

    def __init__(self, *, name: str = MODEL_NAME, version: str = MODEL_VERSION, dim: int = EMBEDDING_DIM,
                 variant: str = "fake", gated: bool = False, fail_on: str | None = None):
        self.metadata = ModelMetadata(name, (version,), "fake", (TensorSpec(INPUT_NAME, "BYTES", (-1,)),),
                                      (TensorSpec(OUTPUT_NAME, "FP32", (-1, dim)),))
        self.variant = variant
        self.dim = dim
        self.fail_on = fail_on
        """A batch containing this text raises ``RuntimeError`` (a model that breaks on one input)."""
        self.batches: list[list[str]] = []
        self.running = threading.Event()
        self._gate = threading.Event()
        if not gated:
            self._gate.set()
        self.loaded = False

    def release(self) -> None:
        """Let held and future calls run."""
        self._gate.set()

    def hold(self) -> None:
        """Make the next calls wait for ``release``."""
        self._gate.clear()

    def prepare(self, request: InferRequest) -> tuple[list[str], int]:
        texts = decode_utf8(request.input(INPUT_NAME).data.reshape(-1).tolist(), f"inputs[{INPUT_NAME}]")
        return texts, len(texts)

    def load(self) -> None:
        self.loaded = True

    def close(self) -> None:
        self.loaded = False

    def run(self, items: list[list[str]]) -> list[list[Tensor]]:
        texts = [text for item in items for text in item]
        self.batches.append(texts)
        self.running.set()
        try:
            if not self._gate.wait(30):
                raise TimeoutError("FakeEmbeddingRuntime was held for 30 s; did the test forget release()?")
        finally:
            self.running.clear()
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"fake model fails on {self.fail_on!r}")
        out = []
        for item in items:
            data = np.stack([fake_embedding(text, self.dim) for text in item]) if item else np.empty((0, self.dim),
                                                                                                     np.float32)
            out.append([Tensor(OUTPUT_NAME, "FP32", data.shape, data)])
        return out


class KeepLoaded:
    """Delegates to ``runtime``; loads it once and never closes it (share one among workers)."""

    def __init__(self, runtime):
        self._runtime = runtime
        self._lock = threading.Lock()
        self._loaded = False

    def __getattr__(self, name: str):
        return getattr(self._runtime, name)

    def load(self) -> None:
        with self._lock:
            if not self._loaded:
                self._runtime.load()
                self._loaded = True

    def close(self) -> None:
        pass

    def prepare(self, request):
        return self._runtime.prepare(request)

    def run(self, items):
        return self._runtime.run(items)


class Gated(KeepLoaded):
    """``KeepLoaded`` plus a gate: while held, ``run`` waits for ``release()``; batches are recorded."""

    def __init__(self, runtime):
        super().__init__(runtime)
        self.batches: list[list] = []
        self.running = threading.Event()
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def run(self, items):
        self.batches.append(list(items))
        self.running.set()
        try:
            if not self._gate.wait(30):
                raise TimeoutError("Gated runtime was held for 30 s; did the test forget release()?")
        finally:
            self.running.clear()
        return self._runtime.run(items)


def text_request(texts: Sequence[bytes | str], *, model: str = MODEL_NAME, version: str = "", shape=None,
                 request_id: str = "") -> pb.ModelInferRequest:
    """A ``text`` request with the texts sent raw (``shape`` overrides the declared shape)."""
    items = [t.encode("utf-8") if isinstance(t, str) else t for t in texts]
    msg = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    msg.inputs.add(name=INPUT_NAME, datatype="BYTES", shape=list(shape) if shape is not None else [len(items)])
    msg.raw_input_contents.append(serialize_bytes(items))
    return msg


def embedding_of(response: pb.ModelInferResponse) -> np.ndarray:
    for index, tensor in enumerate(response.outputs):
        if tensor.name == OUTPUT_NAME:
            return np.frombuffer(response.raw_output_contents[index], dtype="<f4").reshape(tuple(tensor.shape))
    raise KeyError(OUTPUT_NAME)


__all__ = ["FakeEmbeddingRuntime", "Gated", "KeepLoaded", "embedding_of", "fake_embedding", "text_request"]
