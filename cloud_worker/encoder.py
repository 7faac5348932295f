"""The reference encoder as one TorchScript call: BERT layers, mean pooling and L2 normalisation.

Contract: ``script_encoder(model)`` returns a ``torch.jit.ScriptModule`` that computes, from
``input_ids``, ``attention_mask`` and ``token_type_ids`` ([N, S] int64 on the model's device), the
same mean-pooled, L2-normalised embeddings ([N, hidden] FP32) as the ``transformers`` ``BertModel``
followed by ``mean_pool_normalize``: the same weights (shared, not copied), the same
operators in the same order, in the model's dtype and on its device. It returns ``None`` for a
model it does not describe exactly (not a BERT encoder with absolute positions and exact GELU),
so the caller keeps the eager model. Why: the eager model runs Python between its ~100 operators
and must take the GIL back after each, which on a busy server queues the compute thread behind
the event loop; a script module runs all of them in C++ with the GIL released once.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)


def mean_pool_normalize(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over unmasked tokens, then L2 normalisation; computed in FP32 whatever ``hidden`` is
    (the sentence-transformers pooling, for the eager model and inside the scripted one)."""
    hidden = hidden.float()
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2.0, dim=1, eps=1e-12)


class _Layer(nn.Module):
    def __init__(self, layer: nn.Module, heads: int, eps: float):
        super().__init__()
        attention = layer.attention
        self.query = attention.self.query
        self.key = attention.self.key
        self.value = attention.self.value
        self.attention_dense = attention.output.dense
        self.attention_norm = attention.output.LayerNorm
        self.intermediate = layer.intermediate.dense
        self.output = layer.output.dense
        self.output_norm = layer.output.LayerNorm
        self.heads = heads
        self.head_size = self.query.out_features // heads
        self.scaling = 1.0 / math.sqrt(self.head_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length = hidden.shape[0], hidden.shape[1]
        q = self.query(hidden).view(batch, length, self.heads, self.head_size).transpose(1, 2)
        k = self.key(hidden).view(batch, length, self.heads, self.head_size).transpose(1, 2)
        v = self.value(hidden).view(batch, length, self.heads, self.head_size).transpose(1, 2)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        context = context.transpose(1, 2).reshape(batch, length, self.heads * self.head_size)
        hidden = self.attention_norm(self.attention_dense(context) + hidden)
        return self.output_norm(self.output(F.gelu(self.intermediate(hidden))) + hidden)


class PooledBertEncoder(nn.Module):
    """BERT embeddings and layers (inference only), then the sentence-transformers pooling."""

    def __init__(self, model: nn.Module):
        super().__init__()
        config = model.config
        embeddings = model.embeddings
        self.word_embeddings = embeddings.word_embeddings
        self.position_embeddings = embeddings.position_embeddings
        self.token_type_embeddings = embeddings.token_type_embeddings
        self.embedding_norm = embeddings.LayerNorm
        self.layers = nn.ModuleList(
            [_Layer(layer, config.num_attention_heads, config.layer_norm_eps) for layer in model.encoder.layer])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = torch.arange(length, dtype=torch.long, device=input_ids.device).unsqueeze(0)
        hidden = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        hidden = self.embedding_norm(hidden + self.position_embeddings(positions))
        keys = attention_mask.to(torch.bool)[:, None, None, :]  # [N, 1, 1, S]: True = attend
        for layer in self.layers:
            hidden = layer(hidden, keys)
        return mean_pool_normalize(hidden, attention_mask)


def supports(model: nn.Module) -> str | None:
    """Why ``model`` cannot be scripted as a ``PooledBertEncoder``, or None when it can."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "bert":
        return "not a BERT model"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "a decoder"
    if getattr(config, "hidden_act", None) != "gelu":
        return f"hidden_act {getattr(config, 'hidden_act', None)!r} (only exact 'gelu')"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {config.position_embedding_type!r}"
    if model.training:
        return "in training mode"
    return None


def script_encoder(model: nn.Module) -> torch.jit.ScriptModule | None:
    reason = supports(model)
    if reason is not None:
        log.info("keeping the eager encoder: %s", reason)
        return None
    return torch.jit.script(PooledBertEncoder(model).eval())


__all__ = ["PooledBertEncoder", "mean_pool_normalize", "script_encoder", "supports"]
