"""The reference sentence-embedding runtime: all-MiniLM-L6-v2 in ``transformers``.

Contract: ``text`` (BYTES [N]) -> ``embedding`` (FP32 [N, 384]), mean-pooled over the attention
mask and L2-normalised (the sentence-transformers recipe), computed on the configured device and
precision from the packaged weights (``edgecloud.reference_model``; nothing downloads). A batch is
tokenized once, padded per sub-batch only to that sub-batch's longest text (``bucketing``), and the
embeddings come back in input order, always as FP32 on the host. With ``runtime.encoder``
``torchscript`` (the default) each sub-batch is one call of the scripted encoder (``encoder``), which
computes the same numbers as the eager model without taking the GIL between operators.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from cloud_worker.bucketing import plan_chunks
from cloud_worker.config import ReferenceModelSpec, RuntimeSettings
from cloud_worker.device import configure_threads, resolve_device, resolve_dtype
from cloud_worker.encoder import mean_pool_normalize, script_encoder
from cloud_worker.threads import thread_plan
from edgecloud.errors import FailedPrecondition
from edgecloud.reference_model import EMBEDDING_DIM, INPUT_NAME, OUTPUT_NAME, load_torch_encoder, tokenizer_file
from edgecloud.tokenization import TextTokenizer, decode_utf8
from edgecloud.types import InferRequest, ModelMetadata, Tensor, TensorSpec

log = logging.getLogger(__name__)

PLATFORM = "pytorch_transformers"
_FIELD = f"inputs[{INPUT_NAME}]"
_WARM_UP_TEXTS = ("warm up", "warm up the cloud worker with a somewhat longer sentence than the first")


class ReferenceRuntime:
    """The packaged reference encoder; ``max_rows`` bounds one model call (bigger batches are cut)."""

    batchable = True

    def __init__(self, spec: ReferenceModelSpec | None = None, settings: RuntimeSettings | None = None,
                 max_rows: int = 32):
        spec = spec or ReferenceModelSpec()
        self.settings = settings or RuntimeSettings()
        self.max_rows = max_rows
        self.device = resolve_device(self.settings.device)
        self.threads = thread_plan(self.settings.instances, self.settings.intra_op_threads, self.device.type)
        self.instances = self.threads.instances
        self.dtype, self.variant = resolve_dtype(self.settings.dtype, self.device)
        self.metadata = ModelMetadata(
            name=spec.name,
            versions=(spec.version,),
            platform=PLATFORM,
            inputs=(TensorSpec(INPUT_NAME, "BYTES", (-1,)),),
            outputs=(TensorSpec(OUTPUT_NAME, "FP32", (-1, EMBEDDING_DIM)),),
        )
        self._model = None
        self._scripted: torch.jit.ScriptModule | None = None
        self._tokenizer: TextTokenizer | None = None

    @property
    def tokenizer(self) -> TextTokenizer:
        if self._tokenizer is None:
            raise FailedPrecondition(f"model {self.metadata.name!r} is not loaded")
        return self._tokenizer

    # lifecycle (model thread) ----------------------------------------------------------------

    def load(self) -> None:
        if self.device.type == "cpu":
            configure_threads(self.threads, self.settings.inter_op_threads)
        self._tokenizer = TextTokenizer.from_file(tokenizer_file(), self.settings.max_sequence_length)
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a server's log is no terminal
        self._model = load_torch_encoder(str(self.device), self.dtype)
        if self.settings.encoder == "torchscript":
            self._scripted = script_encoder(self._model)
        log.info("loaded %s on %s as %s (%s)", self.metadata.name, self.device, self.variant,
                 "torchscript" if self._scripted is not None else "eager")
        if self.settings.warmup:
            for rows in sorted({1, min(8, self.max_rows), self.max_rows}):
                self.embed([_WARM_UP_TEXTS[i % 2] for i in range(rows)])

    @property
    def scripted(self) -> bool:
        """Whether batches run through the scripted encoder (else the eager model)."""
        return self._scripted is not None

    def close(self) -> None:
        self._scripted = None
        self._model = None
        self._tokenizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # per request (event loop) ----------------------------------------------------------------

    def prepare(self, request: InferRequest) -> tuple[list[str], int]:
        texts = decode_utf8(request.input(INPUT_NAME).data.reshape(-1).tolist(), _FIELD)
        return texts, len(texts)

    # per batch (model thread) ----------------------------------------------------------------

    def run(self, items: list[list[str]]) -> list[list[Tensor]]:
        texts = items[0] if len(items) == 1 else [text for item in items for text in item]
        embeddings = self.embed(texts)
        outputs: list[list[Tensor]] = []
        start = 0
        for item in items:
            part = embeddings[start : start + len(item)]
            start += len(item)
            outputs.append([Tensor(OUTPUT_NAME, "FP32", part.shape, part)])
        return outputs

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings [len(texts), 384] FP32, in input order (blocking)."""
        if self._model is None or self._tokenizer is None:
            raise FailedPrecondition(f"model {self.metadata.name!r} is not loaded")
        encoded = self._tokenizer.encode(texts)
        ids, mask, types = encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]
        lengths = mask.sum(axis=1)
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        chunks = plan_chunks(lengths, self.max_rows, bucketed=self.settings.length_bucketing)
        with torch.inference_mode():
            for index in chunks:
                longest = int(lengths[index].max())
                out[index] = self._forward(ids[index, :longest], mask[index, :longest], types[index, :longest])
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        device = self.device
        ids_t, mask_t, types_t = (torch.from_numpy(a).to(device) for a in (ids, mask, types))
        if self._scripted is not None:
            return self._scripted(ids_t, mask_t, types_t).cpu().numpy()
        hidden = self._model(input_ids=ids_t, attention_mask=mask_t, token_type_ids=types_t).last_hidden_state
        return mean_pool_normalize(hidden, mask_t).cpu().numpy()


__all__ = ["PLATFORM", "ReferenceRuntime", "mean_pool_normalize"]
