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
    """Mean over unmasked tokens, then L2 normalisation (sentence-transformers' recipe), as float32.

    The masked sum is one matmul and the rest works in place: 17 us instead of 29 for one sentence
    of 16 tokens, 61 instead of 260 for 32 of 40 (the broadcast product it replaces allocated the
    whole [N, L, H] again). No change in the edge server's throughput was measurable (A/B at c=64:
    0.99x): its model's compute dominates; batches and the build's evaluation gain."""
    mask = attention_mask.astype(np.float32)
    pooled = np.matmul(mask[:, None, :], last_hidden.astype(np.float32, copy=False))[:, 0, :]
    pooled /= np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
    norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))
    pooled /= np.maximum(norms, 1e-12)[:, None]
    return pooled
