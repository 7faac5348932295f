"""Text -> token id batches with the ``tokenizers`` library, padded only to the batch's longest.

Contract: ``TextTokenizer.encode(texts)`` returns int64 ``input_ids``, ``attention_mask`` and
``token_type_ids`` of shape [N, L] where L is the longest (truncated) sequence in the batch, never
a fixed pad length (the shipped tokenizer.json pads to 128, which costs ~8x on short inputs).
``decode_utf8`` turns BYTES elements into str, raising ``InvalidArgument`` naming the element.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgecloud.errors import InvalidArgument


def decode_utf8(items: Sequence[bytes], field: str) -> list[str]:
    texts = []
    for index, item in enumerate(items):
        try:
            texts.append(item.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"element {index} is not valid UTF-8 (byte {exc.start})", field=field) from None
    return texts


class TextTokenizer:
    def __init__(self, tokenizer, max_length: int):
        self.max_length = max_length
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | Path, max_length: int = 256) -> TextTokenizer:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.enable_truncation(max_length=max_length)
        padding = tokenizer.padding or {}
        tokenizer.enable_padding(
            pad_id=padding.get("pad_id", 0),
            pad_type_id=padding.get("pad_type_id", 0),
            pad_token=padding.get("pad_token", "[PAD]"),
            length=None,
        )
        return cls(tokenizer, max_length)

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text after truncation (for length bucketing)."""
        return [sum(e.attention_mask) for e in self._tokenizer.encode_batch(list(texts))]


def mean_pool_normalize(last_hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean over unmasked tokens, then L2 normalisation (sentence-transformers' recipe)."""
    mask = attention_mask[..., None].astype(last_hidden.dtype)
    summed = (last_hidden * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
